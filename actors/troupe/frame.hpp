// Frames and their payloads.
//
// A payload is an immutable, reference-counted byte buffer: handing a frame to the next
// stage copies the handle, never the bytes. A frame may view a slice of a buffer it shares
// with other frames (a pass-through output views its input's buffer).
#pragma once

#include <caf/allowed_unsafe_message_type.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace troupe {

/// Bytes written once by their producer, then only read. Not copyable. Usually owned; a
/// view of memory someone else keeps alive (a shared-memory region) is possible too.
class buffer {
 public:
  /// Uninitialised storage of size bytes.
  static std::shared_ptr<buffer> allocate(size_t size);
  /// size bytes at p, which stay valid as long as keeper (may be null: the caller's promise).
  static std::shared_ptr<buffer> view(uint8_t* p, size_t size, std::shared_ptr<const void> keeper);
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  /// Whether [p, p+n) lies inside this buffer.
  bool contains(const uint8_t* p, size_t n) const {
    return p >= data_ && n <= size_ && p - data_ <= static_cast<ptrdiff_t>(size_ - n);
  }

  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  explicit buffer(size_t size);
  buffer(uint8_t* p, size_t size, std::shared_ptr<const void> keeper);

 private:
  std::unique_ptr<uint8_t[]> owned_;
  std::shared_ptr<const void> keeper_;
  uint8_t* data_;
  size_t size_;
};

/// A small, immutable metadata map; frames share it.
using metadata = std::vector<std::pair<std::string, std::string>>;
using metadata_ptr = std::shared_ptr<const metadata>;

/// One unit of data moving through a pipeline. Copying a frame shares its payload and
/// metadata: it allocates nothing.
struct frame {
  uint64_t stream = 0;
  uint64_t seq = 0;
  uint32_t part = 0;        // index among the outputs of the input that yielded it
  uint64_t generation = 0;  // of the instance that emitted it
  int64_t timestamp_ns = 0;
  std::string type;
  metadata_ptr meta;                      // may be null: no metadata
  std::shared_ptr<const buffer> payload;  // may be null for an empty payload
  const uint8_t* data = nullptr;          // view into payload
  size_t size = 0;
  uint64_t route_tag = 0;  // the ingress's note on a frame it routes (remote.cpp); nothing else reads it

  /// Value of a metadata key, or nullptr.
  const std::string* find_meta(const std::string& key) const {
    if (!meta) return nullptr;
    for (auto& [k, v] : *meta)
      if (k == key) return &v;
    return nullptr;
  }
};

}  // namespace troupe

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::frame)
