// Work a KJ event loop hands to a thread of its own without ever waiting for it: the jobs run
// in order on that thread (they may block, on the actor system or on files), and each one's
// result fulfils a promise on the loop that asked.
#pragma once

#include <kj/async.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>

namespace troupe::cluster {

class job_thread {
 public:
  job_thread() : thread_([this] { loop(); }) {}
  /// Runs the jobs already queued, then joins the thread.
  ~job_thread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  job_thread(const job_thread&) = delete;
  job_thread& operator=(const job_thread&) = delete;

  /// Runs f() on the job thread; the promise (on the calling loop) gets its result, or a
  /// FAILED exception with what it threw.
  template <class F>
  auto run(F f) -> kj::Promise<std::invoke_result_t<F>> {
    using T = std::invoke_result_t<F>;
    auto paf = kj::newPromiseAndCrossThreadFulfiller<T>();
    auto fulfiller = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<T>>>(kj::mv(paf.fulfiller));
    post([f = std::move(f), fulfiller]() mutable {
      try {
        if constexpr (std::is_void_v<T>) {
          f();
          (*fulfiller)->fulfill();
        } else {
          (*fulfiller)->fulfill(f());
        }
      } catch (const std::exception& e) {
        (*fulfiller)->reject(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString(e.what())));
      } catch (...) {
        (*fulfiller)
            ->reject(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString("a job failed")));
      }
    });
    return kj::mv(paf.promise);
  }

 private:
  void post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      job = nullptr;  // what it captured goes on this thread
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace troupe::cluster
