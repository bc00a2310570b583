#include <troupe/worker_launcher.hpp>

#include <unistd.h>

#include <future>

namespace troupe {

namespace {

std::string own_executable() {
  char buf[4096];
  auto n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("troupe");
}

}  // namespace

worker_launcher::worker_launcher(std::string executable)
    : executable_(executable.empty() ? own_executable() : std::move(executable)), thread_([this] { loop(); }) {}

worker_launcher::~worker_launcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

pid_t worker_launcher::run(const std::function<pid_t()>& spawn) {
  std::packaged_task<pid_t()> task(spawn);
  auto result = task.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.emplace_back([&task] { task(); });
  }
  cv_.notify_one();
  return result.get();
}

void worker_launcher::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [this] { return done_ || !jobs_.empty(); });
    if (jobs_.empty()) return;
    auto job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    job();
    lock.lock();
  }
}

}  // namespace troupe
