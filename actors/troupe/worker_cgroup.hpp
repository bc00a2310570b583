// A cgroup per isolated worker: limits that count everything the worker and what it forks
// map and start, and a kill that reaches all of them.
//
// rlimits are per process: a worker that forks four children gets four address spaces of
// memory_mb each, and pages it writes to tmpfs count against none of them. A cgroup counts
// them all. The node makes one group per worker under its own group (cgroup v2, or the
// memory and pids controllers of cgroup v1), sets the limits, and the worker joins it first
// thing, before its plugin's library is loaded. What the kernel kills for the group's memory
// limit is counted there, and the node names it.
//
// Where cgroups cannot be written (a container without its own cgroup namespace, a user
// without rights, v2 with processes in the node's group), the node says so once and relies on
// rlimits, its process group and seccomp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace troupe {

/// What this process may do with cgroups, found once.
struct cgroup_support {
  int version = 0;  // 0: none; 1: v1 controllers (memory, and pids and cpu where mounted); 2: unified
  // Where workers' groups go, per controller ("": not available); v2: one directory for all.
  std::string memory, pids, cpu;
  std::vector<std::string> parents;  // the distinct directories of those
  std::string why_not;               // version 0: why
  /// One line for the log: what is enforced and where, or why cgroups are not used.
  std::string describe() const;
};
const cgroup_support& cgroups_here();

class worker_cgroup {
 public:
  /// Bytes a worker may use on top of its manifest's memory_mb: its own code and buffers.
  static constexpr uint64_t worker_allowance_bytes = uint64_t{64} << 20;

  struct limits {
    uint64_t memory_bytes = 0;  // 0: none
    uint64_t max_tasks = 0;     // processes and threads; 0: none
    double cpu_cores = 0;       // CPU time per unit of wall-clock time, throttled; 0: none
  };
  /// Makes the group `name` (under cgroups_here().parents) with the limits (cpu_cores only
  /// where a cpu controller is: see cgroups_here().cpu). Null, with why, when cgroups are not
  /// available, a limit cannot be put in force, or the group cannot be made.
  static std::unique_ptr<worker_cgroup> make(const std::string& name, const limits& lim, std::string& why);
  /// Kills what is left in the group and removes it.
  ~worker_cgroup();
  worker_cgroup(const worker_cgroup&) = delete;
  worker_cgroup& operator=(const worker_cgroup&) = delete;

  /// The cgroup.procs files a worker writes its pid to, joined by ':'.
  std::string procs_files() const;
  /// SIGKILLs every process in the group until none is left (for up to a second).
  void kill_all();
  /// How many processes of the group the kernel's OOM killer ended (its memory limit).
  uint64_t oom_kills() const;
  /// Bytes of memory the group uses now; 0 if unknown.
  uint64_t memory_bytes() const;
  /// Forks and thread creations refused at the process limit.
  uint64_t tasks_refused() const;
  /// Seconds the group was held back by its CPU limit.
  double cpu_throttled_seconds() const;

 private:
  worker_cgroup(int version, std::string memory, std::string pids, std::string cpu);
  const int version_;
  const std::string memory_, pids_, cpu_;  // the group's directory per controller ("": none)
  std::vector<std::string> dirs_;          // the distinct ones
  int oom_fd_ = -1;                        // memory.oom_control (v1) or memory.events (v2), kept open
};

/// Joins the groups named by procs_files (':'-separated cgroup.procs files); empty, or why not.
std::string join_cgroups(const std::string& procs_files);

}  // namespace troupe
