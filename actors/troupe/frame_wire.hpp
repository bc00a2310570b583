// A frame's fields as the Cap'n Proto schemas carry them: wire::Frame between a node and its
// workers, wire::LinkFrame between nodes. Both name them alike, so one way writes and reads
// them for either; payloads travel apart, as each protocol says.
#pragma once

#include <troupe/frame.hpp>

#include <memory>

namespace troupe {

template <class Builder>
void write_frame_fields(Builder b, const frame& f) {
  b.setStream(f.stream);
  b.setSeq(f.seq);
  b.setPart(f.part);
  b.setGeneration(f.generation);
  b.setTimestampNs(f.timestamp_ns);
  b.setType(f.type);
  if (f.meta && !f.meta->empty()) {
    auto m = b.initMeta(static_cast<unsigned>(f.meta->size()));
    for (unsigned i = 0; i < f.meta->size(); ++i) {
      m[i].setKey((*f.meta)[i].first);
      m[i].setValue((*f.meta)[i].second);
    }
  }
}

/// The frame the fields describe, without its payload.
template <class Reader>
frame read_frame_fields(Reader r) {
  frame f;
  f.stream = r.getStream();
  f.seq = r.getSeq();
  f.part = r.getPart();
  f.generation = r.getGeneration();
  f.timestamp_ns = r.getTimestampNs();
  f.type = r.getType().cStr();
  if (r.getMeta().size() > 0) {
    auto m = std::make_shared<metadata>();
    for (auto kv : r.getMeta()) m->emplace_back(kv.getKey().cStr(), kv.getValue().cStr());
    f.meta = std::move(m);
  }
  return f;
}

}  // namespace troupe
