// The frame guard: a peer or admin connection as the RPC system reads it, with the framing
// of every message checked before Cap'n Proto reads it.
#pragma once

#include <kj/async-io.h>

#include <algorithm>

#include <cstdint>
#include <functional>
#include <string>

namespace troupe::cluster {
// A peer connection as the RPC system reads it, with the framing of every message checked
// on the way: a message with an absurd segment table or larger than the limit, or a
// connection that ends in the middle of a message, closes that connection with a reason
// that is logged and counted. (The RPC system refuses a well-framed message with bad
// contents itself, and closes the connection.)
class checked_stream final : public kj::AsyncIoStream {
 public:
  using bad_fn = std::function<void(const std::string&)>;
  checked_stream(kj::Own<kj::AsyncIoStream> inner, uint64_t max_bytes, bad_fn bad)
      : inner_(kj::mv(inner)), max_bytes_(max_bytes), bad_(std::move(bad)) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    return inner_->tryRead(buffer, min_bytes, max_bytes).then([this, buffer, min_bytes](size_t n) -> size_t {
      inspect(static_cast<const uint8_t*>(buffer), n);
      if (n < min_bytes && (state_ != expect::count || have_ > 0)) {
        fail("the connection ended " + std::to_string(in_message_) + " bytes into a message (truncated)");
      }
      return n;
    });
  }
  kj::Promise<void> write(const void* buffer, size_t size) override { return inner_->write(buffer, size); }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return inner_->write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }

 private:
  enum class expect { count, sizes, body };

  [[noreturn]] void fail(const std::string& why) {
    if (!failed_) bad_(why);
    failed_ = true;
    kj::throwFatalException(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString(why)));
  }

  // Walks the framing: a 4-byte segment count minus one, a 4-byte size (in words) per
  // segment, padding to 8 bytes, then the segments.
  void inspect(const uint8_t* p, size_t n) {
    while (n > 0) {
      if (state_ == expect::body) {
        auto take = static_cast<size_t>(std::min<uint64_t>(n, body_left_));
        body_left_ -= take, p += take, n -= take, in_message_ += take;
        if (body_left_ == 0) state_ = expect::count, in_message_ = 0;
        continue;
      }
      header_[have_++] = *p++;
      --n;
      ++in_message_;
      if (state_ == expect::count && have_ == 4) {
        segments_ = uint64_t{load(0)} + 1;
        if (segments_ > max_segments)
          fail("malformed message: its header claims " + std::to_string(segments_) + " segments (at most " +
               std::to_string(max_segments) + ")");
        state_ = expect::sizes;
      } else if (state_ == expect::sizes && have_ == 4 + 4 * segments_ + (segments_ % 2 == 0 ? 4 : 0)) {
        uint64_t words = 0;
        for (uint64_t i = 0; i < segments_; ++i) words += load(4 + 4 * i);
        if (words * 8 > max_bytes_)
          fail("oversized message: " + std::to_string(words * 8) + " bytes (at most " + std::to_string(max_bytes_) +
               ")");
        body_left_ = words * 8;
        have_ = 0;
        state_ = body_left_ > 0 ? expect::body : expect::count;
        if (state_ == expect::count) in_message_ = 0;
      }
    }
  }
  uint32_t load(size_t at) const {
    return uint32_t{header_[at]} | uint32_t{header_[at + 1]} << 8 | uint32_t{header_[at + 2]} << 16 |
           uint32_t{header_[at + 3]} << 24;
  }

  static constexpr uint64_t max_segments = 512;
  kj::Own<kj::AsyncIoStream> inner_;
  uint64_t max_bytes_;
  bad_fn bad_;
  expect state_ = expect::count;
  uint8_t header_[4 + 4 * max_segments + 4];
  size_t have_ = 0;
  uint64_t segments_ = 0, body_left_ = 0, in_message_ = 0;
  bool failed_ = false;
};

}  // namespace troupe::cluster
