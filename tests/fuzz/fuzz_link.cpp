// The data link's messages as a node reads them off a connection: a prefix checked before
// anything is allocated (the first as a hello), a flat header, a payload section, then the
// message decoded (a batch of frames against its payloads). Any input must be refused with a
// reason or taken, never a crash, a leak or a read past what arrived.
#include <troupe/link_wire.hpp>

#include <capnp/serialize.h>

#include <cstring>

using namespace troupe;

namespace {

void take(capnp::FlatArrayMessageReader& r, const std::shared_ptr<buffer>& payload, uint64_t payload_bytes) {
  auto msg = r.getRoot<wire::LinkMessage>();
  switch (msg.which()) {
    case wire::LinkMessage::HELLO: (void)msg.getHello().getToken().size(); break;
    case wire::LinkMessage::FRAMES: {
      std::vector<std::pair<uint64_t, frame>> frames;
      auto why = link_wire::decode_frames(msg.getFrames().getBatch(), payload, payload_bytes, frames);
      uint64_t sum = 0;
      for (auto& [id, f] : frames) {
        const auto* d = f.payload.data();
        const auto n = f.payload.size();
        if (n > 0 && (f.payload.buffer() != payload || d < payload->data() || d + n > payload->data() + payload_bytes))
          __builtin_trap();  // a view outside the payload section
        sum += n;
      }
      if (!why && sum != payload_bytes) __builtin_trap();  // taken, yet bytes unaccounted for
      break;
    }
    case wire::LinkMessage::ACKS:
      for (auto a : msg.getAcks().getAcked()) (void)a;
      (void)msg.getAcks().getReason().size();
      break;
    default: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bool hello = true;
  while (size >= sizeof(link_wire::prefix)) {
    link_wire::prefix p;
    std::memcpy(&p, data, sizeof p);
    data += sizeof p, size -= sizeof p;
    if (link_wire::check_prefix(p, hello)) return 0;  // the connection closes
    hello = false;
    const size_t header_bytes = size_t{p.header_words} * 8;
    if (size < header_bytes || size - header_bytes < p.payload_bytes) return 0;  // it ended inside
    auto header = kj::heapArray<capnp::word>(p.header_words);
    std::memcpy(header.begin(), data, header_bytes);
    data += header_bytes, size -= header_bytes;
    auto payload = buffer::allocate(p.payload_bytes);
    if (p.payload_bytes > 0) std::memcpy(payload->data(), data, p.payload_bytes);
    data += p.payload_bytes, size -= p.payload_bytes;
    try {
      capnp::FlatArrayMessageReader r(header, link_wire::reader_options(header.size()));
      take(r, payload, p.payload_bytes);
    } catch (const kj::Exception&) {
      return 0;  // malformed: the connection closes
    }
  }
  return 0;
}
