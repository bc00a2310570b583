#include <troupe/link_wire.hpp>

#include <troupe/frame_wire.hpp>

namespace troupe::link_wire {

std::optional<std::string> check_prefix(const prefix& p, bool hello) {
  if (p.magic != magic) return "not a data link message (bad magic)";
  const uint64_t header_bytes = uint64_t{p.header_words} * 8;
  if (p.header_words == 0 || header_bytes > max_header_bytes)
    return "message header of " + std::to_string(header_bytes) + " bytes (at most " + std::to_string(max_header_bytes) +
           ")";
  if (hello && (header_bytes > max_hello_bytes || p.payload_bytes > 0))
    return "a hello of " + std::to_string(header_bytes + p.payload_bytes) + " bytes (at most " +
           std::to_string(max_hello_bytes) + " before the token is checked)";
  if (p.payload_bytes > max_payload_bytes)
    return "message payload of " + std::to_string(p.payload_bytes) + " bytes (at most " +
           std::to_string(max_payload_bytes) + ")";
  return std::nullopt;
}

std::optional<std::string> decode_frames(capnp::List<wire::LinkFrame>::Reader batch,
                                         const std::shared_ptr<buffer>& payload, uint64_t payload_bytes,
                                         std::vector<std::pair<uint64_t, frame>>& out) {
  if (batch.size() > max_batch_frames)
    return "a batch of " + std::to_string(batch.size()) + " frames (at most " + std::to_string(max_batch_frames) + ")";
  std::vector<std::pair<uint64_t, frame>> frames;
  frames.reserve(batch.size());
  uint64_t at = 0;
  for (auto lf : batch) {
    auto size = lf.getSize();
    if (size > payload_bytes - at) return "frame payloads overrun the message's payload section";
    auto f = read_frame_fields(lf);
    if (size > 0) {
      f.payload = payload_slice(payload, at, size);
    }
    at += size;
    frames.emplace_back(lf.getId(), std::move(f));
  }
  if (at != payload_bytes) return "the message's payload section is longer than its frames";
  out = std::move(frames);
  return std::nullopt;
}

capnp::ReaderOptions reader_options(size_t words) {
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = words * 4 + 1024;
  return opts;
}

}  // namespace troupe::link_wire
