#include "worker_cgroup.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace troupe {

namespace {

namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Writes text to a control file; empty, or why not.
std::string write_file(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return path + ": " + std::strerror(errno);
  auto n = ::write(fd, text.data(), text.size());
  int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) return "writing " + text + " to " + path + ": " + std::strerror(err);
  return {};
}

std::vector<std::string> split(const std::string& s, char by) {
  std::vector<std::string> out;
  std::string part;
  std::istringstream in(s);
  while (std::getline(in, part, by)) out.push_back(part);
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& x) {
  for (auto& e : v)
    if (e == x) return true;
  return false;
}

// The value of `key N` in a cgroup's key-value file.
uint64_t field_of(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v)
    if (k == key) return v;
  return 0;
}

struct mount {
  std::string root, point, type;
  std::vector<std::string> options;  // super options: the v1 controllers
};

std::vector<mount> cgroup_mounts() {
  std::vector<mount> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::vector<std::string> f;
    for (std::string w; s >> w;) f.push_back(w);
    size_t dash = 0;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (f.size() < 5 || dash + 1 >= f.size()) continue;
    auto type = f[dash + 1];
    if (type != "cgroup" && type != "cgroup2") continue;
    out.push_back({f[3], f[4], type, dash + 3 < f.size() ? split(f[dash + 3], ',') : std::vector<std::string>{}});
  }
  return out;
}

// This process's group in the hierarchy of the v1 controller c ("" for v2), from /proc/self/cgroup.
std::string own_group(const std::string& c) {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    auto controllers = split(line.substr(a + 1, b - a - 1), ',');
    if ((c.empty() && controllers.empty() && line.substr(0, a) == "0") || (!c.empty() && has(controllers, c)))
      return line.substr(b + 1);
  }
  return {};
}

// Where this process's group of a hierarchy mounted at m is, in this mount namespace.
std::string group_dir(const mount& m, const std::string& group) {
  std::string rel = group;
  if (m.root != "/" && rel.rfind(m.root, 0) == 0) rel = rel.substr(m.root.size());
  auto dir = m.point + (rel == "/" ? "" : rel);
  return fs::is_directory(dir) ? dir : std::string{};
}

// Removes the groups of nodes that are gone (killed before they could remove theirs).
void remove_stale(const std::string& dir) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    auto name = e.path().filename().string();
    if (name.rfind("troupe-", 0) != 0 || !e.is_directory()) continue;
    auto pid = std::atoi(name.c_str() + 7);
    if (pid <= 0 || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    for (auto& w : fs::directory_iterator(e.path(), ec))
      if (w.is_directory()) ::rmdir(w.path().c_str());
    ::rmdir(e.path().c_str());
  }
}

struct support_holder {
  cgroup_support s;
  support_holder() { find(); }
  ~support_holder() {
    for (auto& p : s.parents) ::rmdir(p.c_str());  // empty once every worker is gone
  }
  void find() {
    auto mounts = cgroup_mounts();
    const auto me = "troupe-" + std::to_string(::getpid());
    std::string v2_why;
    for (auto& m : mounts) {
      if (m.type != "cgroup2") continue;
      auto base = group_dir(m, own_group(""));
      if (base.empty()) continue;
      auto available = split(read_file(base + "/cgroup.controllers"), ' ');
      for (auto& a : available)
        if (!a.empty() && a.back() == '\n') a.pop_back();
      if (!has(available, "memory") || !has(available, "pids")) {
        v2_why = "cgroup v2 at " + base + " offers no memory and pids controllers";
        continue;
      }
      remove_stale(base);
      auto parent = base + "/" + me;
      if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST) {
        v2_why = "cannot make " + parent + ": " + std::strerror(errno);
        continue;
      }
      auto e = write_file(base + "/cgroup.subtree_control", "+memory +pids");
      if (e.empty()) e = write_file(parent + "/cgroup.subtree_control", "+memory +pids");
      if (!e.empty()) {
        ::rmdir(parent.c_str());
        v2_why =
            "cgroup v2: cannot enable the memory and pids controllers (" + e + "); run the node in a cgroup of its own";
        continue;
      }
      s.version = 2;
      s.parents = {parent};
      return;
    }
    std::string mem, pids;
    for (auto& m : mounts) {
      if (m.type != "cgroup") continue;
      if (has(m.options, "memory") && mem.empty()) mem = group_dir(m, own_group("memory"));
      if (has(m.options, "pids") && pids.empty()) pids = group_dir(m, own_group("pids"));
    }
    if (mem.empty()) {
      s.why_not = v2_why.empty() ? "no cgroup memory controller is mounted" : v2_why;
      return;
    }
    for (auto* dir : {&mem, &pids}) {
      if (dir->empty()) continue;
      remove_stale(*dir);
      auto parent = *dir + "/" + me;
      if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST) {
        if (dir == &mem) {
          s.why_not = "cannot make " + parent + ": " + std::strerror(errno);
          for (auto& p : s.parents) ::rmdir(p.c_str());
          s.parents.clear();
          return;
        }
        continue;  // no process limit, the memory limit holds
      }
      s.parents.push_back(parent);
    }
    s.version = 1;
  }
};

}  // namespace

std::string cgroup_support::describe() const {
  if (version == 0) return "no cgroups (" + why_not + "): memory limits are per process (rlimits)";
  std::string where;
  for (auto& p : parents) where += (where.empty() ? "" : ", ") + p;
  if (version == 2) return "cgroup v2 per worker (memory.max, pids.max, cgroup.kill) under " + where;
  return std::string("cgroup v1 per worker (memory") + (parents.size() > 1 ? ", pids" : "") + ") under " + where;
}

const cgroup_support& cgroups_here() {
  static support_holder h;
  return h.s;
}

worker_cgroup::worker_cgroup(int version, std::vector<std::string> dirs) : version_(version), dirs_(std::move(dirs)) {
  oom_fd_ =
      ::open((dirs_[0] + (version_ == 2 ? "/memory.events" : "/memory.oom_control")).c_str(), O_RDONLY | O_CLOEXEC);
}

std::unique_ptr<worker_cgroup> worker_cgroup::make(const std::string& name, uint64_t memory_bytes, uint64_t max_tasks,
                                                   std::string& why) {
  const auto& here = cgroups_here();
  if (here.version == 0) {
    why = here.why_not;
    return nullptr;
  }
  std::vector<std::string> dirs;
  for (auto& p : here.parents) {
    auto dir = p + "/" + name;
    if (::mkdir(dir.c_str(), 0755) != 0) {
      why = "cannot make " + dir + ": " + std::strerror(errno);
      for (auto& d : dirs) ::rmdir(d.c_str());
      return nullptr;
    }
    dirs.push_back(dir);
  }
  std::unique_ptr<worker_cgroup> g(new worker_cgroup(here.version, dirs));
  std::string e;
  const auto bytes = std::to_string(memory_bytes);
  if (here.version == 2) {
    if (memory_bytes > 0) {
      e = write_file(dirs[0] + "/memory.max", bytes);
      write_file(dirs[0] + "/memory.swap.max", "0");  // absent without swap accounting
    }
    if (e.empty() && max_tasks > 0) e = write_file(dirs[0] + "/pids.max", std::to_string(max_tasks));
  } else {
    if (memory_bytes > 0) {
      e = write_file(dirs[0] + "/memory.limit_in_bytes", bytes);
      write_file(dirs[0] + "/memory.memsw.limit_in_bytes", bytes);  // absent without swap accounting
    }
    if (e.empty() && max_tasks > 0 && dirs.size() > 1) e = write_file(dirs[1] + "/pids.max", std::to_string(max_tasks));
  }
  if (!e.empty()) {
    why = e;
    return nullptr;  // the destructor removes the directories
  }
  return g;
}

worker_cgroup::~worker_cgroup() {
  kill_all();
  if (oom_fd_ >= 0) ::close(oom_fd_);
  for (auto& d : dirs_) {
    // A process killed a moment ago may still be leaving the group.
    for (int i = 0; i < 100 && ::rmdir(d.c_str()) != 0 && errno == EBUSY; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string worker_cgroup::procs_files() const {
  std::string out;
  for (auto& d : dirs_) out += (out.empty() ? "" : ":") + d + "/cgroup.procs";
  return out;
}

void worker_cgroup::kill_all() {
  if (version_ == 2) write_file(dirs_[0] + "/cgroup.kill", "1");  // 5.14 and newer
  for (int round = 0; round < 100; ++round) {
    bool any = false;
    for (auto& d : dirs_) {
      std::istringstream in(read_file(d + "/cgroup.procs"));
      for (long pid; in >> pid;) {
        any = true;
        if (pid > 0) ::kill(static_cast<pid_t>(pid), SIGKILL);
      }
    }
    if (!any) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

uint64_t worker_cgroup::oom_kills() const {
  if (oom_fd_ < 0) return 0;
  char buf[512];
  auto n = ::pread(oom_fd_, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  return field_of(std::string(buf, static_cast<size_t>(n)), "oom_kill");
}

uint64_t worker_cgroup::memory_bytes() const {
  auto text = read_file(dirs_[0] + (version_ == 2 ? "/memory.current" : "/memory.usage_in_bytes"));
  return text.empty() ? 0 : std::strtoull(text.c_str(), nullptr, 10);
}

uint64_t worker_cgroup::tasks_refused() const {
  const auto& pids_dir = version_ == 2 ? dirs_[0] : (dirs_.size() > 1 ? dirs_[1] : std::string{});
  if (pids_dir.empty()) return 0;
  return field_of(read_file(pids_dir + "/pids.events"), "max");
}

std::string join_cgroups(const std::string& procs_files) {
  if (procs_files.empty()) return {};
  for (auto& f : split(procs_files, ':'))
    if (auto e = write_file(f, std::to_string(::getpid())); !e.empty()) return "cannot join its cgroup: " + e;
  return {};
}

}  // namespace troupe
