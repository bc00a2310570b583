// The frame guard of the peer and admin ports, read as the RPC system reads a connection
// (capnp's async message reader), over bytes that arrive in chunks of any size. The first
// input byte sets the chunk size and after which message a call carries the token. Any input
// must end in messages taken or the connection closed with a reason, never a crash, a leak,
// or a message larger than the guard allows at that point.
#include <cluster/frame_guard.hpp>

#include <capnp/any.h>
#include <capnp/serialize-async.h>
#include <kj/async.h>

#include <algorithm>
#include <cstring>

using namespace troupe::cluster;

namespace {

// The fuzz input as a connection's read side.
class input_stream final : public kj::AsyncIoStream {
 public:
  input_stream(const uint8_t* p, size_t n, size_t chunk) : p_(p), n_(n), chunk_(chunk) {}
  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    size_t take = std::min({n_, max_bytes, std::max(min_bytes, chunk_)});
    if (take > 0) std::memcpy(buffer, p_, take);
    p_ += take, n_ -= take;
    return take;
  }
  kj::Promise<void> write(const void*, size_t) override { return kj::READY_NOW; }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>>) override { return kj::READY_NOW; }
  kj::Promise<void> whenWriteDisconnected() override { return kj::NEVER_DONE; }
  void shutdownWrite() override {}

 private:
  const uint8_t* p_;
  size_t n_, chunk_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t chunk = 1 + (data[0] & 0x0f) * 37;
  const unsigned token_after = data[0] >> 4;  // 15: never
  kj::EventLoop loop;
  kj::WaitScope wait(loop);
  connection_gate gate("127.0.0.1:1");
  bool closed = false;
  const frame_limits limits{1 << 20, 4096, 16384};
  checked_stream stream(kj::heap<input_stream>(data + 1, size - 1, chunk), limits, gate, [&](const std::string& why) {
    if (why.empty() || closed) __builtin_trap();  // said once, with a reason
    closed = true;
  });
  capnp::ReaderOptions options;
  options.traversalLimitInWords = limits.max_message_bytes / 8;
  for (unsigned k = 0;; ++k) {
    if (k == token_after) gate.authenticate();
    try {
      const bool before = !gate.authenticated;
      auto maybe = capnp::tryReadMessage(stream, options).wait(wait);
      KJ_IF_MAYBE (m, maybe) {
        size_t words = 0;
        for (unsigned s = 0;; ++s) {
          auto seg = (*m)->getSegment(s);
          if (seg == nullptr) break;
          words += seg.size();
        }
        if (words * 8 > (before ? limits.max_message_before_auth : limits.max_message_bytes)) __builtin_trap();
        (void)(*m)->getRoot<capnp::AnyPointer>().targetSize();
      } else {
        break;  // the connection ended between messages
      }
    } catch (const kj::Exception&) {
      break;
    }
  }
  return 0;
}
