// An event (actors/troupe/events.hpp) on the admin interface (schema/node.capnp Event), and back.
// Its kind travels as text: kinds a newer node knows pass through an older one as they came.
#pragma once

#include <node.capnp.h>

#include <troupe/events.hpp>

#include <string>

namespace troupe::cluster {

struct wire_event {
  event e;
  std::string kind;  // as sent
};

inline void write_event(wire::Event::Builder b, const event& e, const std::string& kind) {
  b.setSeq(e.seq);
  b.setTimeMs(e.time_ms);
  b.setKind(kind);
  b.setNode(e.node);
  b.setPipeline(e.pipeline);
  b.setStage(e.stage);
  b.setReplica(e.replica);
  b.setGeneration(e.generation);
  b.setState(e.state);
  b.setFailure(e.failure);
  b.setDetail(e.detail);
}

inline wire_event read_event(wire::Event::Reader x) {
  wire_event w;
  w.e.seq = x.getSeq();
  w.e.time_ms = x.getTimeMs();
  w.e.node = x.getNode();
  w.e.pipeline = x.getPipeline();
  w.e.stage = x.getStage();
  w.e.replica = x.getReplica();
  w.e.generation = x.getGeneration();
  w.e.state = x.getState();
  w.e.failure = x.getFailure();
  w.e.detail = x.getDetail();
  w.kind = x.getKind();
  return w;
}

}  // namespace troupe::cluster
