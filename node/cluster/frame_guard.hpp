// The frame guard: a peer or admin connection as the RPC system reads it, with the framing
// of every message checked before Cap'n Proto reads it, and little allowed before a call on
// it has carried the cluster's token.
#pragma once

#include <kj/async-io.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace troupe::cluster {

/// What a connection's guard, its services and its watchdog share: whether a call on it has
/// carried the cluster's token yet, and when its messages came. One per connection.
struct connection_gate {
  using clock = std::chrono::steady_clock;
  explicit connection_gate(std::string peer) : from(std::move(peer)), opened(clock::now()), last_message(opened) {}

  /// A call on this connection carried the token: from now on it may send what a member may.
  void authenticate() {
    if (authenticated) return;
    authenticated = true;
    if (on_authenticated) on_authenticated();
  }

  std::string from;  // the peer's address, for log lines
  bool authenticated = false;
  clock::time_point opened, last_message;
  std::optional<clock::time_point> message_started;  // set while a message is part way in
  uint64_t bytes_before_authentication = 0;
  std::function<void()> on_authenticated;  // the port counts it; cleared when the connection ends
};

/// How much a connection may send, before and after its first call with the token.
struct frame_limits {
  uint64_t max_message_bytes = uint64_t{16} << 20;
  uint64_t max_message_before_auth = 4096;
  uint64_t max_total_before_auth = 16384;
};

// A peer connection as the RPC system reads it, with the framing of every message checked
// on the way: a message with an absurd segment table or larger than the limit, or a
// connection that ends in the middle of a message, closes that connection with a reason
// that is logged and counted. (The RPC system refuses a well-framed message with bad
// contents itself, and closes the connection.)
//
// Until a call on the connection has carried the token, its messages are small: a header
// that announces more is held until the calls already received have been checked (a client
// may send its token call and a large call back to back) and, if none carried the token,
// the connection is closed before anything is allocated for that message.
class checked_stream final : public kj::AsyncIoStream {
 public:
  using bad_fn = std::function<void(const std::string&)>;
  checked_stream(kj::Own<kj::AsyncIoStream> inner, frame_limits limits, connection_gate& gate, bad_fn bad)
      : inner_(kj::mv(inner)), limits_(limits), gate_(gate), bad_(std::move(bad)) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    return inner_->tryRead(buffer, min_bytes, max_bytes)
        .then([this, buffer, min_bytes](size_t n) -> kj::Promise<size_t> {
          if (!gate_.authenticated) gate_.bytes_before_authentication += n;
          return settle(static_cast<const uint8_t*>(buffer), n, n, min_bytes);
        });
  }
  kj::Promise<void> write(const void* buffer, size_t size) override { return inner_->write(buffer, size); }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return inner_->write(pieces);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, kj::uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, kj::uint* length) override { inner_->getsockname(addr, length); }
  void getpeername(struct sockaddr* addr, kj::uint* length) override { inner_->getpeername(addr, length); }

 private:
  enum class expect { count, sizes, body };

  [[noreturn]] void fail(const std::string& why) {
    if (!failed_) bad_(why);
    failed_ = true;
    kj::throwFatalException(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString(why)));
  }

  // Inspects the n bytes at p of a read of total bytes; a header held for the token check is
  // decided once every event already queued (the calls received before it) has run.
  kj::Promise<size_t> settle(const uint8_t* p, size_t n, size_t total, size_t min_bytes) {
    size_t used = inspect(p, n);
    if (held_ == 0) {
      if (total < min_bytes && (state_ != expect::count || have_ > 0))
        fail("the connection ended " + std::to_string(in_message_) + " bytes into a message (truncated)");
      return total;
    }
    return kj::evalLast([this, p, n, used, total, min_bytes]() -> kj::Promise<size_t> {
      if (!gate_.authenticated) fail(unauthenticated(held_));
      held_ = 0;
      return settle(p + used, n - used, total, min_bytes);
    });
  }

  std::string unauthenticated(uint64_t bytes) const {
    if (bytes > limits_.max_message_before_auth)
      return "a message of " + std::to_string(bytes) + " bytes before the token was checked (at most " +
             std::to_string(limits_.max_message_before_auth) + ")";
    return std::to_string(gate_.bytes_before_authentication) +
           " bytes sent without a call carrying the token (at most " + std::to_string(limits_.max_total_before_auth) +
           ")";
  }

  // Walks the framing: a 4-byte segment count minus one, a 4-byte size (in words) per
  // segment, padding to 8 bytes, then the segments. Returns the bytes it walked: all of
  // them, or up to a header that waits for the token check (held_ set).
  size_t inspect(const uint8_t* p, size_t n) {
    const size_t given = n;
    while (n > 0) {
      if (state_ == expect::body) {
        auto take = static_cast<size_t>(std::min<uint64_t>(n, body_left_));
        body_left_ -= take, p += take, n -= take, in_message_ += take;
        if (body_left_ == 0) ended();
        continue;
      }
      if (state_ == expect::count && have_ == 0) gate_.message_started = connection_gate::clock::now();
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
        if (words * 8 > limits_.max_message_bytes)
          fail("oversized message: " + std::to_string(words * 8) + " bytes (at most " +
               std::to_string(limits_.max_message_bytes) + ")");
        body_left_ = words * 8;
        have_ = 0;
        state_ = body_left_ > 0 ? expect::body : expect::count;
        if (state_ == expect::count) ended();
        if (!gate_.authenticated && (body_left_ > limits_.max_message_before_auth ||
                                     gate_.bytes_before_authentication + body_left_ > limits_.max_total_before_auth)) {
          held_ = std::max<uint64_t>(body_left_, 1);
          return given - n;
        }
      }
    }
    return given;
  }
  void ended() {
    state_ = expect::count;
    in_message_ = 0;
    gate_.message_started.reset();
    gate_.last_message = connection_gate::clock::now();
  }
  uint32_t load(size_t at) const {
    return uint32_t{header_[at]} | uint32_t{header_[at + 1]} << 8 | uint32_t{header_[at + 2]} << 16 |
           uint32_t{header_[at + 3]} << 24;
  }

  static constexpr uint64_t max_segments = 512;
  kj::Own<kj::AsyncIoStream> inner_;
  frame_limits limits_;
  connection_gate& gate_;
  bad_fn bad_;
  expect state_ = expect::count;
  uint8_t header_[4 + 4 * max_segments + 4];
  size_t have_ = 0;
  uint64_t segments_ = 0, body_left_ = 0, in_message_ = 0;
  uint64_t held_ = 0;  // the size of a message waiting for the token check
  bool failed_ = false;
};

}  // namespace troupe::cluster
