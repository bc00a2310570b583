// The isolated adapter: runs one plugin instance in its own worker process (`troupe
// worker`), so that a plugin that crashes, aborts, leaks or hangs takes only its worker
// down.
//
// The worker is spawned by create() and serves exactly one instance. Requests and replies
// go over a Unix socket as Cap'n Proto messages (schema/worker.capnp); payloads go through
// two shared-memory regions: an input is copied once into the input region, an output
// comes back through the output region and is copied once out of it. An output that is a
// view of its input (a pass-through) costs no copy on the way back. Small inputs travel in
// batches, many per request, so that one wake-up of the worker serves them all.
//
// A worker that dies, or is killed by terminate() (the instance's deadline passed), turns
// the call in progress into TROUPE_FATAL with a message naming what happened: the signal,
// the exit status, or the resource limit that was broken.
#pragma once

#include <troupe/adapter.hpp>
#include <troupe/worker_cgroup.hpp>
#include <troupe/worker_landlock.hpp>
#include <troupe/worker_launcher.hpp>

#include <worker.capnp.h>

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

namespace troupe {

class isolated_adapter : public plugin_adapter {
 public:
  /// Bytes of each shared region (inputs, outputs): the largest payload that can cross.
  static constexpr size_t default_region_bytes = size_t{64} << 20;
  static constexpr size_t max_request_frames = 256;
  static constexpr size_t max_request_bytes = size_t{1} << 20;

  /// Its workers are started by launcher.
  isolated_adapter(const manifest& m, uint64_t generation, std::string log_tag,
                   std::shared_ptr<worker_launcher> launcher, size_t region_bytes = default_region_bytes);
  /// Kills and reaps the worker if it still runs.
  ~isolated_adapter() override;
  isolated_adapter(const isolated_adapter&) = delete;
  isolated_adapter& operator=(const isolated_adapter&) = delete;

  /// Spawns the worker, waits for it to run with its limits in force, then creates the
  /// plugin instance there.
  call_result create(const config_values& config) override;
  /// Checks m's library as a worker does, in a worker of its own: the library is loaded
  /// under the manifest's limits, never in this process, so that its constructors cannot
  /// harm it. OK, or why the library cannot serve (a crash at load is named as such).
  static call_result check(const manifest& m, std::shared_ptr<worker_launcher> launcher);
  call_result start() override;
  call_result process(const frame* in, std::vector<frame>& out) override;
  /// Carries many inputs per request: as many as fit the input region, up to
  /// max_request_frames and (unless one frame alone is larger) max_request_bytes.
  void process_batch(const std::vector<frame>& in, batch_sink& sink) override;
  call_result stop() override;
  call_result health() override;
  /// Destroys the plugin instance and lets the worker exit.
  void destroy() override;
  /// Kills the worker (SIGKILL); the call in progress returns TROUPE_FATAL.
  void terminate() override;

  /// The worker's process id, or -1 when there is none.
  int worker_pid() const override { return pid_.load(); }
  uint64_t memory_bytes() const override { return memory_bytes_.load(std::memory_order_relaxed); }
  double cpu_throttled_seconds() const override { return throttled_.load(std::memory_order_relaxed); }
  double cpu_seconds() const override { return cpu_seconds_.load(std::memory_order_relaxed); }

 private:
  struct channel;
  // Starts the worker and waits for its hello: its limits in force and the library loaded.
  call_result spawn();
  /// What the worker may read and write besides the system's files and its scratch directory.
  landlock::grants granted_files() const;
  // Sends msg and reads the reply's one result through take(wire::Result::Reader); a worker
  // that is gone meanwhile turns into TROUPE_FATAL naming what happened `during`.
  template <class Take>
  call_result exchange(const char* during, capnp::MessageBuilder& msg, Take take);
  static call_result plain_result(wire::Result::Reader r);
  // Appends r's outputs to out. An output in the input region must lie within `in`, which
  // was placed at in_offset there.
  call_result read_outputs(wire::Result::Reader r, size_t words, const frame* in, uint64_t in_offset,
                           std::vector<frame>& out);
  // Sends a process request (count inputs, in[k] placed at offsets[k]; none: a source's
  // turn) and reports its results to sink as inputs base + k. Returns how many inputs are
  // done; 0 when the batch ends here (a fatal result, or the sink said stop).
  size_t run_process(capnp::MessageBuilder& msg, const frame* in, const uint64_t* offsets, unsigned count, size_t base,
                     batch_sink& sink);
  call_result worker_gone(const std::string& during);
  // Waits until the worker's socket has something to read (true) or the worker has exited
  // without a word (false): a child of the worker holding the socket open would otherwise
  // keep the read waiting until the call's deadline.
  bool wait_for_reply();
  // Why the worker is over its memory limit: the kernel's OOM killer ended a process of its
  // cgroup (the worker or a child of it) since the last look; empty if not.
  std::string over_memory();
  std::string memory_limit_broken(const std::string& how) const;
  // Samples memory_bytes_, throttled_ and cpu_seconds_ if a second has passed since the last
  // sample, or now if `now`.
  void sample_use(bool now = false);
  static void kill_group(pid_t worker);
  void reap(bool kill_first);
  // Worker p has exited: what it forked is killed, it is reaped (waiting for it if `wait`) and,
  // once reaped, forgotten with its scratch directory. Under pid_mutex_; waitpid's answer.
  pid_t bury(pid_t p, int& status, bool wait);

  const manifest manifest_;
  config_values config_;  // what create was given: its path fields are granted
  const uint64_t generation_;
  const std::string log_tag_;
  const size_t region_bytes_;
  const std::shared_ptr<worker_launcher> launcher_;
  std::unique_ptr<channel> ch_;
  std::unique_ptr<worker_cgroup> cg_;  // the worker's group, where cgroups can be written
  uint64_t oom_seen_ = 0;
  std::atomic<uint64_t> memory_bytes_{0};
  std::atomic<double> throttled_{0};
  std::atomic<double> cpu_seconds_{0};
  std::chrono::steady_clock::time_point sampled_{};
  std::atomic<pid_t> pid_{-1};
  std::mutex pid_mutex_;  // kill() and waitpid() never race: a reaped pid is never signalled
  std::atomic<bool> terminated_{false};
};

}  // namespace troupe
