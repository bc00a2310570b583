#include "plugin_fixture.hpp"

#include <chrono>
#include <csignal>

using namespace troupe;
using namespace troupe::test;
using ::testing::HasSubstr;

namespace {
frame tiny(uint64_t seq) {
  return rgb_frame(
      1, 1, [](int, int, int) { return uint8_t(0); }, 0, seq);
}
}  // namespace

TEST(faulty, error_fatal_and_throw_map_to_their_status) {
  for (auto [action, status] :
       {std::pair{"error", TROUPE_ERROR}, std::pair{"fatal", TROUPE_FATAL}, std::pair{"throw", TROUPE_FATAL}}) {
    plugin_fixture p("faulty", {{"action", action}, {"on_seq", "2"}});
    ASSERT_TRUE(p.create_result.ok() && p.start().ok());
    EXPECT_TRUE(p.process(tiny(1)).ok());
    EXPECT_EQ(p.outputs.size(), 1u);  // forwarded
    auto r = p.process(tiny(2));
    EXPECT_EQ(r.status, status) << action;
    EXPECT_THAT(r.error, HasSubstr("seq 2")) << action;
  }
}

TEST(faulty, every_nth_counts_frames_of_this_instance) {
  plugin_fixture p("faulty", {{"action", "error"}, {"every", "3"}});
  ASSERT_TRUE(p.create_result.ok() && p.start().ok());
  std::vector<uint64_t> failed;
  for (uint64_t i = 1; i <= 7; ++i)
    if (!p.process(tiny(100 + i)).ok()) failed.push_back(i);
  EXPECT_EQ(failed, (std::vector<uint64_t>{3, 6}));
}

TEST(faulty, fails_create_start_and_stop_when_told) {
  plugin_fixture c("faulty", {{"fail_create", "true"}});
  EXPECT_EQ(c.create_result.status, TROUPE_FATAL);
  EXPECT_THAT(c.create_result.error, HasSubstr("configured to fail create"));
  plugin_fixture s("faulty", {{"fail_start", "true"}});
  ASSERT_TRUE(s.create_result.ok());
  EXPECT_EQ(s.start().status, TROUPE_FATAL);
  plugin_fixture t("faulty", {{"fail_stop", "true"}});
  ASSERT_TRUE(t.create_result.ok() && t.start().ok());
  auto r = t.stop();
  EXPECT_EQ(r.status, TROUPE_FATAL);
  EXPECT_THAT(r.error, HasSubstr("configured to fail stop"));
}

TEST(faulty, slow_and_hang_block_for_their_time_then_forward) {
  for (auto [action, key] : {std::pair{"slow", "slow_ms"}, std::pair{"hang", "hang_ms"}}) {
    plugin_fixture p("faulty", {{"action", action}, {"on_seq", "0"}, {key, "120"}});
    ASSERT_TRUE(p.create_result.ok() && p.start().ok());
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(p.process(tiny(0)).ok());
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(120)) << action;
    EXPECT_EQ(p.outputs.size(), 1u);
  }
}

TEST(faulty_death, abort_segfault_and_exit_end_the_process) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto crash = [](const char* action) {
    plugin_fixture p("faulty", {{"action", action}, {"on_seq", "0"}});
    (void)p.start();
    (void)p.process(tiny(0));
  };
  EXPECT_EXIT(crash("abort"), ::testing::KilledBySignal(SIGABRT), "");
  EXPECT_EXIT(crash("exit"), ::testing::ExitedWithCode(3), "");
  EXPECT_DEATH(crash("segfault"), "");
}
