// Frames and their payloads.
//
// A payload is an immutable, reference-counted byte buffer: handing a frame to the next
// stage copies the handle, never the bytes. A frame may view a slice of a buffer it shares
// with other frames (a pass-through output views its input's buffer).
#pragma once

#include <caf/detail/stringification_inspector.hpp>
#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
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

/// The bytes a frame carries: a range of a shared buffer. That the range lies inside the
/// buffer holds by construction; an empty slice may have no buffer. Copying shares the
/// buffer.
class payload_slice {
 public:
  payload_slice() = default;
  /// The whole of b (null: an empty slice).
  explicit payload_slice(std::shared_ptr<const troupe::buffer> b) : size_(b ? b->size() : 0), buffer_(std::move(b)) {}
  /// size bytes from offset of b; throws std::out_of_range unless they lie inside it.
  payload_slice(std::shared_ptr<const troupe::buffer> b, size_t offset, size_t size);
  /// The n bytes at p, if they lie inside b (b may be null); nothing otherwise. b is shared
  /// only when they do (a plugin's output is looked for in several buffers, per frame).
  static std::optional<payload_slice> within(const std::shared_ptr<const troupe::buffer>& b, const uint8_t* p,
                                             size_t n);

  const uint8_t* data() const { return buffer_ ? buffer_->data() + offset_ : nullptr; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  /// The buffer the bytes lie in (may be null when empty).
  const std::shared_ptr<const troupe::buffer>& buffer() const { return buffer_; }
  /// Where the bytes start in the buffer.
  size_t offset() const { return offset_; }
  /// size bytes from offset of this slice, sharing its buffer; throws std::out_of_range
  /// unless they lie inside it.
  payload_slice sub(size_t offset, size_t size) const;

 private:
  size_t offset_ = 0;
  size_t size_ = 0;
  std::shared_ptr<const troupe::buffer> buffer_;
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
  metadata_ptr meta;  // may be null: no metadata
  payload_slice payload;

  /// Value of a metadata key, or nullptr.
  const std::string* find_meta(const std::string& key) const {
    if (!meta) return nullptr;
    for (auto& [k, v] : *meta)
      if (k == key) return &v;
    return nullptr;
  }
};

/// A payload's bytes, for CAF's inspectors: serialised whole and read back into a buffer of
/// its own; printed (to_string) as its size only.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, payload_slice& x) {
  if constexpr (std::is_same_v<Inspector, caf::detail::stringification_inspector>) {
    return f(caf::meta::type_name("payload"), x.size());
  } else {
    std::vector<uint8_t> bytes;
    if constexpr (Inspector::reads_state)
      if (!x.empty()) bytes.assign(x.data(), x.data() + x.size());
    auto load = caf::meta::load_callback([&]() -> caf::error {
      std::shared_ptr<buffer> b;
      if (!bytes.empty()) {
        b = buffer::allocate(bytes.size());
        std::memcpy(b->data(), bytes.data(), bytes.size());
      }
      x = payload_slice(std::move(b));
      return caf::none;
    });
    return f(caf::meta::type_name("payload"), bytes, load);
  }
}

/// A frame's fields, its metadata pairs and its payload (see above).
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, frame& x) {
  metadata meta;
  if constexpr (Inspector::reads_state)
    if (x.meta) meta = *x.meta;
  auto load = caf::meta::load_callback([&]() -> caf::error {
    x.meta = meta.empty() ? nullptr : std::make_shared<const metadata>(std::move(meta));
    return caf::none;
  });
  return f(caf::meta::type_name("frame"), x.stream, x.seq, x.part, x.generation, x.timestamp_ns, x.type, meta, load,
           x.payload);
}

}  // namespace troupe
