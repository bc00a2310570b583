#include "frame.hpp"

namespace troupe {

buffer::buffer(size_t size)
    : owned_(std::make_unique_for_overwrite<uint8_t[]>(size)), data_(owned_.get()), size_(size) {}

buffer::buffer(uint8_t* p, size_t size, std::shared_ptr<const void> keeper)
    : keeper_(std::move(keeper)), data_(p), size_(size) {}

std::shared_ptr<buffer> buffer::allocate(size_t size) { return std::make_shared<buffer>(size); }

std::shared_ptr<buffer> buffer::view(uint8_t* p, size_t size, std::shared_ptr<const void> keeper) {
  return std::make_shared<buffer>(p, size, std::move(keeper));
}

}  // namespace troupe
