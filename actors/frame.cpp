#include <troupe/frame.hpp>

#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace troupe {
namespace {

// Large payloads are recycled. A fresh block costs a page fault per 4 KiB page the first time
// it is written, and for video frames (1.4 MB of yuv420p at 720p, 6 MB of RGB at 1080p) that
// cost as much as decoding them. A block of 64 KiB or more goes back to a free list of its size
// (rounded up to whole pages) when the last frame that shares it is gone, up to 64 MiB held in
// all; beyond that it is freed. The AddressSanitizer build does not recycle, so that a payload
// used after it was released is still found.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool recycle = false;
#else
constexpr bool recycle = true;
#endif
constexpr size_t recycled_min = 64 * 1024;
constexpr size_t held_max = 64 * 1024 * 1024;
constexpr size_t page = 4096;

class block_pool {
 public:
  uint8_t* take(size_t capacity) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(capacity);
      if (it != free_.end() && !it->second.empty()) {
        uint8_t* p = it->second.back();
        it->second.pop_back();
        held_ -= capacity;
        return p;
      }
    }
    return new uint8_t[capacity];
  }
  void give(uint8_t* p, size_t capacity) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (held_ + capacity <= held_max) {
        free_[capacity].push_back(p);
        held_ += capacity;
        return;
      }
    }
    delete[] p;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<uint8_t*>> free_;
  size_t held_ = 0;
};

// Never destroyed: payloads may be released while the process exits.
block_pool& pool() {
  static auto* p = new block_pool;
  return *p;
}

}  // namespace

buffer::buffer(size_t size)
    : owned_(std::make_unique_for_overwrite<uint8_t[]>(size)), data_(owned_.get()), size_(size) {}

buffer::buffer(uint8_t* p, size_t size, std::shared_ptr<const void> keeper)
    : keeper_(std::move(keeper)), data_(p), size_(size) {}

std::shared_ptr<buffer> buffer::allocate(size_t size) {
  if (!recycle || size < recycled_min) return std::make_shared<buffer>(size);
  const size_t capacity = (size + page - 1) / page * page;
  uint8_t* p = pool().take(capacity);
  std::shared_ptr<const void> keeper(
      p, [capacity](const void* q) { pool().give(static_cast<uint8_t*>(const_cast<void*>(q)), capacity); });
  return std::make_shared<buffer>(p, size, std::move(keeper));
}

std::shared_ptr<buffer> buffer::view(uint8_t* p, size_t size, std::shared_ptr<const void> keeper) {
  return std::make_shared<buffer>(p, size, std::move(keeper));
}

payload_slice::payload_slice(std::shared_ptr<const troupe::buffer> b, size_t offset, size_t size) {
  const size_t have = b ? b->size() : 0;
  if (offset > have || size > have - offset)
    throw std::out_of_range("a payload slice of " + std::to_string(size) + " bytes at " + std::to_string(offset) +
                            " does not lie inside its buffer of " + std::to_string(have) + " bytes");
  offset_ = offset;
  size_ = size;
  buffer_ = std::move(b);
}

std::optional<payload_slice> payload_slice::within(const std::shared_ptr<const troupe::buffer>& b, const uint8_t* p,
                                                   size_t n) {
  if (!b || !b->contains(p, n)) return std::nullopt;
  return payload_slice(b, static_cast<size_t>(p - b->data()), n);
}

payload_slice payload_slice::sub(size_t offset, size_t size) const {
  if (offset > size_ || size > size_ - offset)
    throw std::out_of_range("a slice of " + std::to_string(size) + " bytes at " + std::to_string(offset) +
                            " does not lie inside a payload of " + std::to_string(size_) + " bytes");
  return payload_slice(buffer_, offset_ + offset, size);
}

}  // namespace troupe
