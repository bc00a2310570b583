// What starts isolated workers: the executable that serves `troupe worker`, and the one
// long-lived thread that spawns them.
//
// A worker asks the kernel to kill it when the thread that spawned it ends
// (PR_SET_PDEATHSIG), and executor threads come and go, so every worker is spawned from the
// launcher's own thread. Whoever runs pipelines owns a launcher (`troupe run`, a node's
// pipeline host, `troupe conformance`) and hands it to the stages it starts; every isolated
// adapter keeps it alive as long as it may spawn a worker. Nothing about it is process-wide.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace troupe {

class worker_launcher {
 public:
  /// Workers run `executable worker ...`; empty: this process's own executable.
  explicit worker_launcher(std::string executable = {});
  /// Joins the spawning thread. Workers it spawned are killed by the kernel with it.
  ~worker_launcher();
  worker_launcher(const worker_launcher&) = delete;
  worker_launcher& operator=(const worker_launcher&) = delete;

  const std::string& executable() const { return executable_; }
  /// Runs spawn on the launcher's thread and returns what it returns (a process id, or -1).
  pid_t run(const std::function<pid_t()>& spawn);

 private:
  void loop();

  std::string executable_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool done_ = false;
  std::thread thread_;  // last: it starts once everything above is in place
};

}  // namespace troupe
