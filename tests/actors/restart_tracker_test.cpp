// The restart policy, step by step on a clock the test moves.
#include <troupe/restart_tracker.hpp>

#include <gtest/gtest.h>

using namespace troupe;
using namespace std::chrono_literals;
using verdict = restart_tracker::decision::verdict;

namespace {

restart_policy policy(uint32_t max_restarts, double period_s = 60, uint32_t initial_ms = 100, uint32_t max_ms = 5000,
                      double stable_after_s = 30) {
  restart_policy p;
  p.max_restarts = max_restarts;
  p.period_s = period_s;
  p.backoff_initial_ms = initial_ms;
  p.backoff_max_ms = max_ms;
  p.stable_after_s = stable_after_s;
  return p;
}

const auto t0 = restart_tracker::clock::time_point{} + 1000s;

}  // namespace

TEST(restart_tracker, backoff_doubles_up_to_its_maximum) {
  restart_tracker t;
  auto p = policy(10, 60, 100, 1000);
  std::vector<int64_t> upper;  // jitter 1: the top of each range
  for (int i = 0; i < 6; ++i) {
    auto d = t.failed(p, t0 + std::chrono::seconds(i), 1.0);
    ASSERT_EQ(d.what, verdict::restart);
    upper.push_back(d.delay.count());
  }
  EXPECT_EQ(upper, (std::vector<int64_t>{100, 200, 400, 800, 1000, 1000}));
}

TEST(restart_tracker, jitter_spreads_the_delay_over_the_lower_half) {
  auto p = policy(10, 60, 400, 5000);
  restart_tracker low, high, mid;
  EXPECT_EQ(low.failed(p, t0, 0.0).delay, 200ms);
  EXPECT_EQ(mid.failed(p, t0, 0.5).delay, 300ms);
  EXPECT_EQ(high.failed(p, t0, 0.999).delay, 399ms);
  restart_tracker out_of_range;
  EXPECT_EQ(out_of_range.failed(p, t0, 7.0).delay, 400ms);
  EXPECT_EQ(out_of_range.failed(p, t0 + 1s, -3.0).delay, 400ms);  // the second: base 800
}

TEST(restart_tracker, quarantines_past_max_restarts_within_the_period) {
  restart_tracker t;
  auto p = policy(3, 10);
  for (int i = 0; i < 3; ++i) {
    auto d = t.failed(p, t0 + std::chrono::seconds(i), 0.0);
    ASSERT_EQ(d.what, verdict::restart) << "failure " << i;
    EXPECT_EQ(d.recent, static_cast<size_t>(i + 1));
  }
  auto d = t.failed(p, t0 + 3s, 0.0);
  EXPECT_EQ(d.what, verdict::quarantine);
  EXPECT_EQ(d.recent, 3u);
}

TEST(restart_tracker, failures_older_than_the_period_no_longer_count) {
  restart_tracker t;
  auto p = policy(2, 10);
  EXPECT_EQ(t.failed(p, t0, 0.0).what, verdict::restart);
  EXPECT_EQ(t.failed(p, t0 + 1s, 0.0).what, verdict::restart);
  // Both earlier failures are more than 10 s old: this one is the first in its period.
  auto d = t.failed(p, t0 + 12s, 0.0);
  EXPECT_EQ(d.what, verdict::restart);
  EXPECT_EQ(d.recent, 1u);
  // The backoff did not start over, though: the instance never ran stably.
  EXPECT_EQ(d.delay, 200ms);
}

TEST(restart_tracker, a_stable_run_starts_the_count_and_the_backoff_over) {
  restart_tracker t;
  auto p = policy(2, 600, 100, 5000, 30);
  EXPECT_EQ(t.failed(p, t0, 1.0).delay, 100ms);
  t.running(t0 + 1s);
  EXPECT_EQ(t.failed(p, t0 + 2s, 1.0).delay, 200ms);  // ran 1 s: not stable
  t.running(t0 + 3s);
  auto d = t.failed(p, t0 + 40s, 1.0);  // ran 37 s: stable
  EXPECT_EQ(d.what, verdict::restart);
  EXPECT_EQ(d.recent, 1u);
  EXPECT_EQ(d.delay, 100ms);
}

TEST(restart_tracker, a_run_counts_only_until_the_next_failure) {
  restart_tracker t;
  auto p = policy(3, 600, 100, 5000, 30);
  t.running(t0);
  EXPECT_EQ(t.failed(p, t0 + 1s, 1.0).delay, 100ms);
  // Failed again, 60 s after it last ran but without running since: still counted.
  auto d = t.failed(p, t0 + 61s, 1.0);
  EXPECT_EQ(d.recent, 2u);
  EXPECT_EQ(d.delay, 200ms);
}

TEST(restart_tracker, no_restarts_allowed_quarantines_at_the_first_failure) {
  restart_tracker t;
  auto d = t.failed(policy(0), t0, 0.0);
  EXPECT_EQ(d.what, verdict::quarantine);
  EXPECT_EQ(d.recent, 0u);
}
