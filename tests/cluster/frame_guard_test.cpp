// The frame guard of the peer and admin ports, read as the RPC system reads a connection
// (capnp's async message reader) over an in-process pipe: what it takes before and after a
// call with the token, and what it closes, saying why.
#include <cluster/frame_guard.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <capnp/serialize-async.h>
#include <kj/async-io.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace troupe::cluster;
using ::testing::HasSubstr;

namespace {

// The framing of a one-segment message of `words` words of zeros.
std::vector<uint8_t> message_of(uint32_t words) {
  std::vector<uint8_t> m(8 + size_t{words} * 8, 0);
  std::memcpy(m.data() + 4, &words, 4);
  return m;
}

// A connection's read end behind the guard; what the test sends comes from a thread of its
// own writing the other end of a socket pair, as a client would.
// Runs f after `turns` turns of the event loop.
kj::Promise<void> later(int turns, std::function<void()> f) {
  return kj::evalLater([turns, f = std::move(f)]() mutable -> kj::Promise<void> {
    if (turns <= 1) return f(), kj::READY_NOW;
    return later(turns - 1, std::move(f));
  });
}

struct guarded {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  int fds[2] = {-1, -1};
  connection_gate gate{"127.0.0.1:4242"};
  std::vector<std::string> closed;
  kj::Own<checked_stream> stream;
  std::vector<std::thread> writers;

  explicit guarded(frame_limits limits = {}) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw std::runtime_error("socketpair");
    stream =
        kj::heap<checked_stream>(io.lowLevelProvider->wrapSocketFd(fds[0], kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP),
                                 limits, gate, [this](const std::string& why) { closed.push_back(why); });
  }
  ~guarded() {
    stream = nullptr;  // the writers see the connection closed
    for (auto& w : writers) w.join();
    ::close(fds[1]);
  }
  // Sends bytes behind what was sent before (one writer at a time, in order).
  void send(std::vector<uint8_t> bytes) {
    for (auto& w : writers) w.join();
    writers.clear();
    writers.emplace_back([fd = fds[1], bytes = std::move(bytes)] {
      size_t at = 0;
      while (at < bytes.size()) {
        auto n = ::send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
        if (n <= 0) return;
        at += static_cast<size_t>(n);
      }
    });
  }
  void end() {
    if (fds[1] < 0) return;
    for (auto& w : writers) w.join();
    writers.clear();
    ::shutdown(fds[1], SHUT_WR);
  }
  // Reads one message as the RPC system does; its size in words, or the reason it failed.
  std::string read() {
    try {
      auto m = capnp::readMessage(*stream).wait(io.waitScope);
      return std::to_string(m->getSegment(0).size());
    } catch (const kj::Exception& e) {
      return e.getDescription().cStr();
    }
  }
};

TEST(frame_guard, takes_small_messages_before_the_token) {
  guarded g;
  g.send(message_of(100));
  g.send(message_of(1));
  EXPECT_EQ(g.read(), "100");
  EXPECT_EQ(g.read(), "1");
  EXPECT_TRUE(g.closed.empty());
}

TEST(frame_guard, closes_a_large_message_before_the_token_at_its_header) {
  guarded g;
  g.send(message_of(1024));  // 8 KiB: more than 4 KiB before the token
  EXPECT_THAT(g.read(), HasSubstr("a message of 8192 bytes before the token was checked (at most 4096)"));
  ASSERT_EQ(g.closed.size(), 1u);
  EXPECT_EQ(g.closed[0], "a message of 8192 bytes before the token was checked (at most 4096)");
}

TEST(frame_guard, takes_a_large_message_once_a_call_carried_the_token) {
  guarded g;
  g.send(message_of(10));
  g.send(message_of(100000));
  EXPECT_EQ(g.read(), "10");
  g.gate.authenticate();
  EXPECT_EQ(g.read(), "100000");
  EXPECT_TRUE(g.closed.empty());
}

// A client sends its hello and a large call back to back: the hello is checked in a later
// turn of the event loop (as the RPC system dispatches calls), and the large call waits for it.
TEST(frame_guard, a_large_call_right_behind_the_hello_waits_for_its_check) {
  guarded g;
  g.send(message_of(10));
  g.send(message_of(100000));
  EXPECT_EQ(g.read(), "10");
  // The check of the hello comes several turns later, after the large call's header was read.
  auto dispatched = later(8, [&] { g.gate.authenticate(); }).eagerlyEvaluate(nullptr);
  EXPECT_EQ(g.read(), "100000");
  dispatched.wait(g.io.waitScope);
  EXPECT_TRUE(g.closed.empty());
}

TEST(frame_guard, limits_what_a_connection_sends_in_all_before_the_token) {
  guarded g;
  for (int i = 0; i < 5; ++i) g.send(message_of(500));  // 4,008 bytes each
  EXPECT_EQ(g.read(), "500");
  EXPECT_EQ(g.read(), "500");
  EXPECT_EQ(g.read(), "500");
  EXPECT_EQ(g.read(), "500");
  EXPECT_THAT(g.read(), HasSubstr("bytes sent without a call carrying the token (at most 16384)"));
  EXPECT_EQ(g.closed.size(), 1u);
}

TEST(frame_guard, refuses_oversized_and_malformed_headers_and_names_a_truncated_message) {
  {
    guarded g(frame_limits{1 << 20, 4096, 16384});
    g.gate.authenticate();
    g.send(message_of(200000));
    EXPECT_THAT(g.read(), HasSubstr("oversized message: 1600000 bytes (at most 1048576)"));
  }
  {
    guarded g;
    g.send({0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0});
    EXPECT_THAT(g.read(), HasSubstr("its header claims 4294967296 segments (at most 512)"));
  }
  {
    guarded g;
    auto m = message_of(100);
    m.resize(48);
    g.send(m);
    g.end();
    EXPECT_THAT(g.read(), HasSubstr("the connection ended 48 bytes into a message (truncated)"));
  }
}

TEST(frame_guard, tells_the_watchdog_when_a_message_is_part_way_in) {
  guarded g;
  auto m = message_of(100);
  g.send(std::vector<uint8_t>(m.begin(), m.begin() + 12));
  auto partial = g.stream->tryRead(m.data(), 12, 12).wait(g.io.waitScope);
  EXPECT_EQ(partial, 12u);
  EXPECT_TRUE(g.gate.message_started.has_value());
  g.send(std::vector<uint8_t>(m.begin() + 12, m.end()));
  std::vector<uint8_t> rest(m.size() - 12);
  g.stream->tryRead(rest.data(), rest.size(), rest.size()).wait(g.io.waitScope);
  EXPECT_FALSE(g.gate.message_started.has_value());
}

}  // namespace
