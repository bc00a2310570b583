#include <troupe/executor.hpp>

#include <troupe/handover.hpp>

#include <algorithm>

namespace troupe {

namespace {
constexpr auto watchdog_period = std::chrono::milliseconds(10);
constexpr auto starved_after = std::chrono::milliseconds(20);
// The watchdog itself stood still this long (the process was frozen, SIGSTOP, or starved of
// CPU): so did every call it watches, whose deadlines move on by as much.
constexpr auto stood_still_after = std::chrono::milliseconds(250);
constexpr auto retire_after = std::chrono::seconds(2);

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(executor::clock::now().time_since_epoch()).count();
}
}  // namespace

struct executor_core : std::enable_shared_from_this<executor_core> {
  using job = executor::job;
  using worker = executor::worker;
  using clock = executor::clock;
  size_t min_threads, max_threads;
  std::mutex mutex;
  std::condition_variable work_cv, watchdog_cv;
  std::deque<std::pair<job, clock::time_point>> queue;
  std::vector<std::shared_ptr<worker>> workers;
  std::vector<std::thread> threads;  // parallel to workers
  std::vector<std::thread> retired;  // idle threads told to exit; joined at the end
  bool stopping = false;
  uint64_t abandoned_total = 0;

  void spawn_locked() {
    auto w = std::make_shared<worker>();
    w->core_ = this;
    workers.push_back(w);
    threads.emplace_back([self = shared_from_this(), w] { self->run(*w); });
  }

  // Removes worker i from the pool; the caller decides whether its thread is joined later.
  std::thread remove_locked(size_t i) {
    auto t = std::move(threads[i]);
    threads.erase(threads.begin() + static_cast<ptrdiff_t>(i));
    workers.erase(workers.begin() + static_cast<ptrdiff_t>(i));
    return t;
  }

  void run(worker& w) {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      w.busy_ = false;
      w.idle_since_ = clock::now();
      work_cv.wait(lock, [&] { return stopping || w.retired_ || !queue.empty(); });
      if (stopping || w.retired_) return;
      auto j = std::move(queue.front().first);
      queue.pop_front();
      w.busy_ = true;
      w.busy_since_ = clock::now();
      lock.unlock();
      handover::taken();
      j(w);
      j = nullptr;  // release what the job captured before taking the lock again
      lock.lock();
      w.on_overrun_ = nullptr;
      if (w.abandoned()) return;  // replaced already; this thread is detached
    }
  }

  void watchdog() {
    std::unique_lock<std::mutex> lock(mutex);
    auto last_tick = clock::now();
    while (!stopping) {
      watchdog_cv.wait_for(lock, watchdog_period);
      if (stopping) break;
      auto now = clock::now();
      auto t = now_ns();
      auto gap = now - last_tick;
      last_tick = now;
      if (gap > stood_still_after) {
        // A plugin call is not overrun by time in which nothing ran.
        auto shift = std::chrono::duration_cast<std::chrono::nanoseconds>(gap).count();
        for (auto& w : workers) {
          int64_t deadline = w->deadline_ns_.load(std::memory_order_acquire);
          if (deadline != 0) w->deadline_ns_.compare_exchange_strong(deadline, deadline + shift);
        }
        continue;
      }
      for (size_t i = 0; i < workers.size();) {
        auto& w = *workers[i];
        int64_t deadline = w.deadline_ns_.load(std::memory_order_acquire);
        if (deadline == 0 || t < deadline || !w.deadline_ns_.compare_exchange_strong(deadline, 0)) {
          ++i;
          continue;
        }
        // Past its deadline: report once, give the thread up and replace it.
        w.abandoned_.store(true, std::memory_order_release);
        auto handler = std::move(w.on_overrun_);
        w.on_overrun_ = nullptr;
        remove_locked(i).detach();
        ++abandoned_total;
        if (workers.size() < min_threads) spawn_locked();
        if (handler) {
          lock.unlock();
          handler();
          lock.lock();
          if (stopping) return;
        }
      }
      // Jobs waiting while every thread has been on one job for a while: plugins are
      // blocking or slow; add a thread. Quick jobs that merely queue up do not count.
      bool all_stuck = std::all_of(workers.begin(), workers.end(),
                                   [&](auto& w) { return w->busy_ && now - w->busy_since_ > starved_after; });
      if (!queue.empty() && all_stuck && now - queue.front().second > starved_after && workers.size() < max_threads)
        spawn_locked();
      // Retire one extra thread idle for a while.
      if (workers.size() > min_threads && queue.empty()) {
        for (size_t i = 0; i < workers.size(); ++i) {
          auto& w = *workers[i];
          if (w.busy_ || now - w.idle_since_ < retire_after) continue;
          w.retired_ = true;
          retired.push_back(remove_locked(i));
          work_cv.notify_all();
          break;
        }
      }
    }
  }
};

executor::call_scope::call_scope(worker& w, std::chrono::milliseconds deadline) : w_(w) {
  w_.deadline_ns_.store(now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(deadline).count(),
                        std::memory_order_release);
}

executor::call_scope::call_scope(worker& w, std::chrono::milliseconds deadline, clock::time_point start) : w_(w) {
  w_.deadline_ns_.store(
      std::chrono::duration_cast<std::chrono::nanoseconds>((start + deadline).time_since_epoch()).count(),
      std::memory_order_release);
}

executor::call_scope::~call_scope() { w_.deadline_ns_.store(0, std::memory_order_release); }

void executor::worker::on_overrun(std::function<void()> handler) {
  std::lock_guard<std::mutex> lock(core_->mutex);
  on_overrun_ = std::move(handler);
}

executor::executor(size_t min_threads, size_t max_threads) : core_(std::make_shared<executor_core>()) {
  core_->min_threads = std::max<size_t>(1, min_threads);
  core_->max_threads = std::max(max_threads, core_->min_threads);
  {
    std::lock_guard<std::mutex> lock(core_->mutex);
    for (size_t i = 0; i < core_->min_threads; ++i) core_->spawn_locked();
  }
  watchdog_ = std::thread([c = core_] { c->watchdog(); });
}

executor::~executor() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(core_->mutex);
    core_->stopping = true;
    threads.swap(core_->threads);
    for (auto& t : core_->retired) threads.push_back(std::move(t));
    core_->retired.clear();
  }
  core_->work_cv.notify_all();
  core_->watchdog_cv.notify_all();
  watchdog_.join();
  for (auto& t : threads) t.join();
}

size_t executor::threads() const {
  std::lock_guard<std::mutex> lock(core_->mutex);
  return core_->workers.size();
}

uint64_t executor::abandoned_threads() const {
  std::lock_guard<std::mutex> lock(core_->mutex);
  return core_->abandoned_total;
}

void executor::submit(job j) {
  {
    std::lock_guard<std::mutex> lock(core_->mutex);
    core_->queue.emplace_back(std::move(j), clock::now());
  }
  core_->work_cv.notify_one();
}

}  // namespace troupe
