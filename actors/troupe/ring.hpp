// A first-in first-out queue in one ring of slots that grows by doubling and never shrinks.
//
// The queues on the frame path (an instance's inbox, a router's pending and unacknowledged
// frames) hold at most a window's worth of frames each: a ring sized once costs no
// allocation per frame, where a std::deque allocates a block every few frames of this size.
// A slot let go is reset to T{} at once, so a frame's payload is not kept alive by the ring.
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

namespace troupe {

template <class T>
class ring {
 public:
  ring() = default;
  ring(const ring&) = default;
  ring& operator=(const ring&) = default;
  ring(ring&& other) noexcept
      : slots_(std::move(other.slots_)), head_(std::exchange(other.head_, 0)), size_(std::exchange(other.size_, 0)) {
    other.slots_.clear();
  }
  ring& operator=(ring&& other) noexcept {
    slots_ = std::move(other.slots_);
    other.slots_.clear();
    head_ = std::exchange(other.head_, 0);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  T& operator[](size_t i) { return slots_[(head_ + i) & (slots_.size() - 1)]; }
  const T& operator[](size_t i) const { return slots_[(head_ + i) & (slots_.size() - 1)]; }
  T& front() { return (*this)[0]; }
  T& back() { return (*this)[size_ - 1]; }

  void push_back(T value) {
    grow_if_full();
    (*this)[size_] = std::move(value);
    ++size_;
  }
  void push_front(T value) {
    grow_if_full();
    head_ = (head_ + slots_.size() - 1) & (slots_.size() - 1);
    slots_[head_] = std::move(value);
    ++size_;
  }
  /// Lets the first n go (n <= size()).
  void pop_front(size_t n = 1) {
    for (size_t k = 0; k < n; ++k) {
      slots_[head_] = T{};
      head_ = (head_ + 1) & (slots_.size() - 1);
    }
    size_ -= n;
  }
  void clear() {
    pop_front(size_);
    head_ = 0;
  }

  template <class R, class V>
  class basic_iterator {
   public:
    basic_iterator(R* r, size_t i) : r_(r), i_(i) {}
    V& operator*() const { return (*r_)[i_]; }
    V* operator->() const { return &(*r_)[i_]; }
    basic_iterator& operator++() {
      ++i_;
      return *this;
    }
    bool operator==(const basic_iterator& o) const { return i_ == o.i_; }
    bool operator!=(const basic_iterator& o) const { return i_ != o.i_; }

   private:
    R* r_;
    size_t i_;
  };
  using iterator = basic_iterator<ring, T>;
  using const_iterator = basic_iterator<const ring, const T>;
  iterator begin() { return {this, 0}; }
  iterator end() { return {this, size_}; }
  const_iterator begin() const { return {this, 0}; }
  const_iterator end() const { return {this, size_}; }

 private:
  void grow_if_full() {
    if (size_ < slots_.size()) return;
    std::vector<T> next(std::max<size_t>(8, slots_.size() * 2));  // a power of two
    for (size_t i = 0; i < size_; ++i) next[i] = std::move((*this)[i]);
    slots_.swap(next);
    head_ = 0;
  }

  std::vector<T> slots_;  // size is 0 or a power of two
  size_t head_ = 0;       // index of the first element
  size_t size_ = 0;
};

}  // namespace troupe
