// The threads that run plugin code.
//
// Instance actors never call a plugin on a scheduler thread: they submit jobs here. A job
// brackets each plugin call with a deadline (call_scope). A watchdog thread finds calls
// past their deadline, runs the job's overrun handler once, and gives up on that thread
// (it is replaced and left to return or hang on its own). The watchdog also adds a thread
// when jobs wait while every thread is busy, so plugins that block stall only themselves;
// extra threads retire when idle. Idle instances cost no threads.
//
// Thread-safe. Jobs run in submission order per submitter only if the submitter waits for
// each job before submitting the next (instance actors do).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace troupe {

class executor {
 public:
  using clock = std::chrono::steady_clock;

  /// Per-thread state a job uses to bracket plugin calls with deadlines.
  class worker {
   public:
    /// True once the watchdog gave up on this thread: the job must stop calling the plugin
    /// and must not touch state owned by anyone but itself.
    bool abandoned() const { return abandoned_.load(std::memory_order_acquire); }
    /// What the watchdog runs (once, on its own thread) if a call of the current job passes
    /// its deadline. Cleared when the job returns; must own whatever it uses.
    void on_overrun(std::function<void()> handler);

   private:
    friend class executor;
    friend class call_scope;
    friend struct executor_core;
    struct executor_core* core_ = nullptr;  // kept alive by the thread that owns this worker
    std::atomic<int64_t> deadline_ns_{0};   // 0: no call under watch
    std::atomic<bool> abandoned_{false};
    std::function<void()> on_overrun_;  // guarded by the core's mutex
    clock::time_point idle_since_ = clock::now();
    clock::time_point busy_since_;  // start of the current job
    bool busy_ = false;
    bool retired_ = false;
  };

  /// RAII bracket of one plugin call: arms the deadline on entry, disarms on exit. Lock-free.
  class call_scope {
   public:
    call_scope(worker& w, std::chrono::milliseconds deadline);
    /// The call began at `start` (a clock reading the caller has anyway).
    call_scope(worker& w, std::chrono::milliseconds deadline, clock::time_point start);
    ~call_scope();
    call_scope(const call_scope&) = delete;
    call_scope& operator=(const call_scope&) = delete;

   private:
    worker& w_;
  };

  using job = std::function<void(worker&)>;

  /// min_threads stay up; up to max_threads while calls block.
  executor(size_t min_threads, size_t max_threads = 256);
  /// Joins the threads that are not stuck in a plugin; stuck ones are left detached.
  ~executor();
  executor(const executor&) = delete;
  executor& operator=(const executor&) = delete;

  void submit(job j);

  /// Threads currently serving (not counting abandoned ones).
  size_t threads() const;
  /// Threads given up on since start.
  uint64_t abandoned_threads() const;

 private:
  std::shared_ptr<struct executor_core> core_;  // shared with every thread: a detached one may outlive us
  std::thread watchdog_;
};

}  // namespace troupe
