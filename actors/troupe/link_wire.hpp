// The data link's framing as it crosses the wire (schema/link.capnp): the prefix of every
// message, checked before anything is allocated for it, and a batch of frames decoded
// against the payload section it came with. No sockets here: the plane reads, this judges.
#pragma once

#include <troupe/frame.hpp>

#include <link.capnp.h>

#include <capnp/message.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace troupe::link_wire {

constexpr uint32_t magic = 0x4c505254;  // "TRPL"
constexpr uint64_t max_header_bytes = uint64_t{16} << 20;
constexpr uint64_t max_payload_bytes = uint64_t{1} << 30;
constexpr size_t max_batch_frames = 4096;
// Before its hello is taken, a connection may send one small message without payload.
constexpr uint64_t max_hello_bytes = 4096;

/// magic | header words | payload bytes, then the flat header, then the payload section.
struct prefix {
  uint32_t magic;
  uint32_t header_words;
  uint64_t payload_bytes;
};
static_assert(sizeof(prefix) == 16);

/// Why a message with this prefix is refused (hello: the first of its connection, before
/// its token is checked); nothing if its header and payload may be read.
std::optional<std::string> check_prefix(const prefix& p, bool hello);

/// The frames of a batch, each with its id, their payloads views of `payload` (the message's
/// payload section of payload_bytes) go to out, and nothing is returned; or why the batch is
/// malformed (then out is unchanged).
std::optional<std::string> decode_frames(capnp::List<wire::LinkFrame>::Reader batch,
                                         const std::shared_ptr<buffer>& payload, uint64_t payload_bytes,
                                         std::vector<std::pair<uint64_t, frame>>& out);

/// Bounds for reading a header of `words` words: a crafted one cannot make the reader walk
/// far past its size.
capnp::ReaderOptions reader_options(size_t words);

}  // namespace troupe::link_wire
