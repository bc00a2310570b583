// The executor's watchdog: a call past its deadline is reported once and its thread is
// replaced; a pool whose threads all block grows so that other jobs still run.
#include <troupe/executor.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

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

// A process frozen by SIGSTOP (as a node is by an operator or a debugger) stands still with
// its plugin calls: thawed, the watchdog does not take the frozen time for an overrun.
TEST(executor, time_the_process_stood_still_is_not_an_overrun) {
  executor ex(1);
  std::atomic<int> overruns{0};
  std::atomic<bool> started{false}, done{false}, saw_freeze{false};
  ex.submit([&](executor::worker& w) {
    w.on_overrun([&] { overruns.fetch_add(1); });
    executor::call_scope scope(w, 400ms);
    started = true;
    // Runs in small steps until it has seen the freeze, then 100 ms more: well inside its
    // deadline counted in time the process ran, far past it counted on the wall clock.
    auto last = std::chrono::steady_clock::now();
    for (int i = 0; i < 300 && !saw_freeze; ++i) {
      std::this_thread::sleep_for(10ms);
      auto now = std::chrono::steady_clock::now();
      if (now - last > 500ms) saw_freeze = true;
      last = now;
    }
    std::this_thread::sleep_for(100ms);
    done = true;
  });
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  pid_t self = ::getpid();
  pid_t child = ::fork();
  if (child == 0) {  // stops its parent for a second, then lets it go on
    ::kill(self, SIGSTOP);
    ::usleep(1000 * 1000);
    ::kill(self, SIGCONT);
    ::_exit(0);
  }
  ASSERT_GT(child, 0);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(eventually([&] { return done.load(); }));
  EXPECT_TRUE(saw_freeze.load());
  EXPECT_EQ(overruns.load(), 0);
  EXPECT_EQ(ex.abandoned_threads(), 0u);
}
