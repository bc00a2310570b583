#include "frame.hpp"

namespace troupe {

buffer::buffer(size_t size) : bytes_(std::make_unique_for_overwrite<uint8_t[]>(size)), size_(size) {}

std::shared_ptr<buffer> buffer::allocate(size_t size) { return std::make_shared<buffer>(size); }

}  // namespace troupe
