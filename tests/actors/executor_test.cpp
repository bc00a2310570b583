// The executor's watchdog: a call past its deadline is reported once and its thread is
// replaced; a pool whose threads all block grows so that other jobs still run.
#include <executor.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

using namespace troupe;
using namespace std::chrono_literals;

namespace {
// Waits (bounded) until pred holds.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5000ms) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}
}  // namespace

TEST(executor, overrun_is_reported_once_and_the_thread_replaced) {
  executor ex(1);
  std::atomic<int> overruns{0};
  std::atomic<bool> release{false}, returned{false}, abandoned_seen{false};
  ex.submit([&](executor::worker& w) {
    w.on_overrun([&] { overruns.fetch_add(1); });
    {
      executor::call_scope scope(w, 30ms);
      while (!release.load()) std::this_thread::sleep_for(1ms);
    }
    abandoned_seen = w.abandoned();
    returned = true;
  });
  ASSERT_TRUE(eventually([&] { return overruns.load() == 1; }));
  EXPECT_EQ(ex.abandoned_threads(), 1u);
  // The pool still runs jobs while the abandoned thread is stuck.
  std::atomic<bool> ran{false};
  ex.submit([&](executor::worker&) { ran = true; });
  EXPECT_TRUE(eventually([&] { return ran.load(); }));
  release = true;
  ASSERT_TRUE(eventually([&] { return returned.load(); }));
  EXPECT_TRUE(abandoned_seen.load());
  EXPECT_EQ(overruns.load(), 1);
}

TEST(executor, blocked_threads_do_not_starve_other_jobs) {
  executor ex(1, 8);
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  std::atomic<int> blocked{0};
  for (int i = 0; i < 3; ++i)
    ex.submit([&](executor::worker&) {
      blocked.fetch_add(1);
      std::unique_lock<std::mutex> lock(m);
      cv.wait(lock, [&] { return open; });
    });
  std::atomic<bool> ran{false};
  ex.submit([&](executor::worker&) { ran = true; });
  EXPECT_TRUE(eventually([&] { return ran.load(); }));
  EXPECT_EQ(blocked.load(), 3);
  EXPECT_GE(ex.threads(), 4u);
  {
    std::lock_guard<std::mutex> lock(m);
    open = true;
  }
  cv.notify_all();
}
