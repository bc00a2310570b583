// What the node and an isolated worker share: the fds a worker is given, how frame
// headers are written and read, and how messages cross the socket.
#pragma once

#include <troupe/frame.hpp>
#include <troupe/frame_wire.hpp>

#include <worker.capnp.h>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <optional>
#include <string>

namespace troupe::worker_protocol {

// A worker finds its socket and its two regions at these descriptors.
constexpr int socket_fd = 3, input_region_fd = 4, output_region_fd = 5;
constexpr uint8_t input_region = 0, output_region = 1;
// The input region starts with a control block; payloads follow it.
constexpr size_t control_bytes = 64;
// Payloads in a region start at multiples of this.
constexpr size_t payload_alignment = 64;
inline size_t aligned(size_t at) { return (at + payload_alignment - 1) & ~(payload_alignment - 1); }

/// What the worker tells the node through the control block while it serves a process
/// request: the index of the input it works on, and how many results it committed to the
/// results area. Both survive the worker: after a crash the node still reads them.
struct control {
  std::atomic_ref<uint32_t> progress;
  std::atomic_ref<uint32_t> committed;
  explicit control(uint8_t* input_region)
      : progress(*reinterpret_cast<uint32_t*>(input_region)),
        committed(*reinterpret_cast<uint32_t*>(input_region + sizeof(uint32_t))) {}
};

/// The output region starts with the results area: one flat Result message per input
/// served, one after the other. Output payloads follow it.
inline size_t results_bytes(size_t region_bytes) { return (region_bytes / 16) & ~size_t{63}; }

// Exit statuses of a worker that ran out of memory: past the manifest's limit, or without one.
constexpr int exit_memory_limit = 86, exit_out_of_memory = 87;

inline void write_header(wire::Frame::Builder b, const frame& f, uint8_t region, uint64_t offset) {
  write_frame_fields(b, f);
  auto p = b.initPayload();
  p.setRegion(region);
  p.setOffset(offset);
  p.setSize(f.payload.size());
}

/// The frame a header describes, without its payload.
inline frame read_header(wire::Frame::Reader r) { return read_frame_fields(r); }

/// Where an output's payload lies, as a worker named it: a view of the input it came from
/// (in_input: `at` bytes into that input) or bytes of the output region (`at` from its start).
struct payload_place {
  bool in_input = false;
  uint64_t at = 0, size = 0;
};

/// Checks a payload a worker named (region, offset, size) against what it may name: the input
/// it worked on (in_size bytes at in_offset of the input region; none when has_input is false)
/// or the output region of region_bytes. Nothing, with the place in out; or why not: a worker
/// is not trusted to stay within bounds.
inline std::optional<std::string> locate_payload(uint8_t region, uint64_t offset, uint64_t size, bool has_input,
                                                 uint64_t in_offset, uint64_t in_size, uint64_t region_bytes,
                                                 payload_place& out) {
  if (region == input_region) {
    if (!has_input || offset < in_offset || offset - in_offset > in_size || size > in_size - (offset - in_offset))
      return "worker named bytes outside its input";
    out = {true, offset - in_offset, size};
    return std::nullopt;
  }
  if (region != output_region) return "worker named region " + std::to_string(region);
  if (offset > region_bytes || size > region_bytes - offset) return "worker named bytes outside its output region";
  out = {false, offset, size};
  return std::nullopt;
}

/// Writes a whole message; false if the peer is gone (never raises SIGPIPE).
inline bool send_message(int fd, capnp::MessageBuilder& msg) {
  auto words = capnp::messageToFlatArray(msg);
  auto bytes = words.asBytes();
  size_t done = 0;
  while (done < bytes.size()) {
    auto n = ::send(fd, bytes.begin() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

/// Reader options for messages from the other side: bounded, so a broken peer cannot make
/// the reader allocate without limit.
inline capnp::ReaderOptions reader_options() {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = 64 * 1024 * 1024 / 8;
  return o;
}

/// Reader options for a message of `words` words: what the reader walks stays in proportion
/// to what the worker wrote, so that a list of millions of empty outputs in a few bytes is
/// refused rather than read (each element counts as a word walked).
inline capnp::ReaderOptions reader_options(size_t words) {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = words * 2 + 64;
  return o;
}

/// Why a result cannot hold `outputs` outputs in `words` words; nothing if it can. Each output a worker
/// writes is a Frame struct of several words; a longer list is bytes or bits read as structs
/// (8 or 64 to a word), which would turn a few bytes of the results area into millions of
/// frames for the node to allocate.
inline std::optional<std::string> check_output_count(size_t outputs, size_t words) {
  if (outputs <= words) return std::nullopt;
  return "worker claimed " + std::to_string(outputs) + " outputs in a result of " + std::to_string(words) + " words";
}

/// The words of the flat message at the start of area (its segment table says), within area;
/// throws kj::Exception if the table is malformed.
inline size_t message_words(kj::ArrayPtr<const capnp::word> area) {
  capnp::FlatArrayMessageReader sized(area, reader_options());
  return static_cast<size_t>(sized.getEnd() - area.begin());
}

}  // namespace troupe::worker_protocol
