// What an isolated worker leaves for the node: the results area at the start of its output
// region (flat Result messages, one after the other, as many as it says it committed) and the
// payloads each output names. The worker runs a plugin and is not trusted: any input must give
// outputs whose payloads lie within the input or the output region, or a refusal with a
// reason, never a crash, a leak or a read out of bounds.
#include <troupe/worker_protocol.hpp>

#include <capnp/serialize.h>

#include <cstring>

using namespace troupe;
namespace wp = troupe::worker_protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 9) return 0;
  const unsigned committed = data[0] & 0x0f;
  uint32_t in_size = 0, in_offset = 0;
  std::memcpy(&in_size, data + 1, 4);
  std::memcpy(&in_offset, data + 5, 4);
  const bool has_input = (data[0] & 0x10) != 0;
  const uint64_t region_bytes = uint64_t{1} << 20;
  data += 9, size -= 9;
  auto words = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
  std::memcpy(words.begin(), data, words.size() * sizeof(capnp::word));
  kj::ArrayPtr<const capnp::word> area = words;
  for (unsigned k = 0; k < committed; ++k) {
    try {
      const size_t words = wp::message_words(area);
      if (words > area.size()) __builtin_trap();  // a message beyond the area
      capnp::FlatArrayMessageReader reader(area, wp::reader_options(words));
      auto res = reader.getRoot<wire::Result>();
      (void)res.getError().size();
      auto outputs = res.getOutputs();
      if (wp::check_output_count(outputs.size(), words)) return 0;  // the node fails the call
      if (outputs.size() > area.size()) __builtin_trap();           // more frames than the worker wrote words
      for (auto o : outputs) {
        frame f = wp::read_header(o);
        auto p = o.getPayload();
        wp::payload_place at;
        auto why = wp::locate_payload(p.getRegion(), p.getOffset(), p.getSize(), has_input, in_offset, in_size,
                                      region_bytes, at);
        if (why) break;  // the node fails the call
        const uint64_t bound = at.in_input ? in_size : region_bytes;
        if (at.at > bound || at.size > bound - at.at) __builtin_trap();  // a view out of bounds
      }
      area = kj::arrayPtr(reader.getEnd(), area.end());
    } catch (const kj::Exception&) {
      return 0;  // malformed: the node fails the call and restarts the worker
    }
  }
  return 0;
}
