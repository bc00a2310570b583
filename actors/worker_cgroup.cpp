#include <troupe/worker_cgroup.hpp>

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
  support_holder() {
    find();
    for (auto* d : {&s.memory, &s.pids, &s.cpu})
      if (!d->empty() && !has(s.parents, *d)) s.parents.push_back(*d);
  }
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
      const std::string wanted = has(available, "cpu") ? "+memory +pids +cpu" : "+memory +pids";
      auto e = write_file(base + "/cgroup.subtree_control", wanted);
      if (e.empty()) e = write_file(parent + "/cgroup.subtree_control", wanted);
      if (!e.empty()) {
        ::rmdir(parent.c_str());
        v2_why =
            "cgroup v2: cannot enable the memory and pids controllers (" + e + "); run the node in a cgroup of its own";
        continue;
      }
      s.version = 2;
      s.memory = s.pids = parent;
      if (has(available, "cpu")) s.cpu = parent;
      return;
    }
    std::string dirs[3];
    const char* controllers[3] = {"memory", "pids", "cpu"};
    for (auto& m : mounts)
      for (int i = 0; i < 3; ++i)
        if (m.type == "cgroup" && has(m.options, controllers[i]) && dirs[i].empty())
          dirs[i] = group_dir(m, own_group(controllers[i]));
    if (dirs[0].empty()) {
      s.why_not = v2_why.empty() ? "no cgroup memory controller is mounted" : v2_why;
      return;
    }
    std::string* out[3] = {&s.memory, &s.pids, &s.cpu};
    for (int i = 0; i < 3; ++i) {
      if (dirs[i].empty()) continue;
      remove_stale(dirs[i]);
      auto parent = dirs[i] + "/" + me;
      if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST) {
        if (i == 0) {
          s.why_not = "cannot make " + parent + ": " + std::strerror(errno);
          return;
        }
        continue;  // without a process or CPU limit; the memory limit holds
      }
      *out[i] = parent;
    }
    s.version = 1;
  }
};

}  // namespace

std::string cgroup_support::describe() const {
  if (version == 0) return "no cgroups (" + why_not + "): memory limits are per process (rlimits)";
  std::string what = "memory";
  if (!pids.empty()) what += ", processes";
  if (!cpu.empty()) what += ", cpu";
  std::string where;
  for (auto& p : parents) where += (where.empty() ? "" : ", ") + p;
  return "cgroup v" + std::to_string(version) + " per worker (" + what + ") under " + where;
}

const cgroup_support& cgroups_here() {
  static support_holder h;
  return h.s;
}

worker_cgroup::worker_cgroup(int version, std::string memory, std::string pids, std::string cpu)
    : version_(version), memory_(std::move(memory)), pids_(std::move(pids)), cpu_(std::move(cpu)) {
  for (auto* d : {&memory_, &pids_, &cpu_})
    if (!d->empty() && !has(dirs_, *d)) dirs_.push_back(*d);
  oom_fd_ =
      ::open((memory_ + (version_ == 2 ? "/memory.events" : "/memory.oom_control")).c_str(), O_RDONLY | O_CLOEXEC);
}

std::unique_ptr<worker_cgroup> worker_cgroup::make(const std::string& name, const limits& lim, std::string& why) {
  const auto& here = cgroups_here();
  if (here.version == 0) {
    why = here.why_not;
    return nullptr;
  }
  std::string made[3];
  const std::string* parent[3] = {&here.memory, &here.pids, &here.cpu};
  for (int i = 0; i < 3; ++i) {
    if (parent[i]->empty()) continue;
    auto dir = *parent[i] + "/" + name;
    bool same = false;
    for (int j = 0; j < i; ++j) same = same || made[j] == dir;
    if (!same && ::mkdir(dir.c_str(), 0755) != 0) {
      why = "cannot make " + dir + ": " + std::strerror(errno);
      for (int j = 0; j < i; ++j)
        if (!made[j].empty()) ::rmdir(made[j].c_str());
      return nullptr;
    }
    made[i] = dir;
  }
  std::unique_ptr<worker_cgroup> g(new worker_cgroup(here.version, made[0], made[1], made[2]));
  std::string e;
  const bool v2 = here.version == 2;
  if (lim.memory_bytes > 0) {
    const auto bytes = std::to_string(lim.memory_bytes);
    e = write_file(g->memory_ + (v2 ? "/memory.max" : "/memory.limit_in_bytes"), bytes);
    // No swapping round the limit (the files are absent without swap accounting).
    write_file(g->memory_ + (v2 ? "/memory.swap.max" : "/memory.memsw.limit_in_bytes"), v2 ? "0" : bytes);
  }
  if (e.empty() && lim.max_tasks > 0 && !g->pids_.empty())
    e = write_file(g->pids_ + "/pids.max", std::to_string(lim.max_tasks));
  if (e.empty() && lim.cpu_cores > 0 && !g->cpu_.empty()) {
    // A quota of CPU time per period of 100 ms, shared by every thread of every process.
    const auto quota = std::to_string(std::max<int64_t>(1000, static_cast<int64_t>(lim.cpu_cores * 100000)));
    if (v2) {
      e = write_file(g->cpu_ + "/cpu.max", quota + " 100000");
    } else {
      e = write_file(g->cpu_ + "/cpu.cfs_period_us", "100000");
      if (e.empty()) e = write_file(g->cpu_ + "/cpu.cfs_quota_us", quota);
    }
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
  if (version_ == 2) write_file(memory_ + "/cgroup.kill", "1");  // 5.14 and newer
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
  auto text = read_file(memory_ + (version_ == 2 ? "/memory.current" : "/memory.usage_in_bytes"));
  return text.empty() ? 0 : std::strtoull(text.c_str(), nullptr, 10);
}

uint64_t worker_cgroup::tasks_refused() const {
  if (pids_.empty()) return 0;
  return field_of(read_file(pids_ + "/pids.events"), "max");
}

double worker_cgroup::cpu_throttled_seconds() const {
  if (cpu_.empty()) return 0;
  auto text = read_file(cpu_ + "/cpu.stat");
  if (version_ == 2) return static_cast<double>(field_of(text, "throttled_usec")) / 1e6;
  return static_cast<double>(field_of(text, "throttled_time")) / 1e9;
}

std::string join_cgroups(const std::string& procs_files) {
  if (procs_files.empty()) return {};
  for (auto& f : split(procs_files, ':'))
    if (auto e = write_file(f, std::to_string(::getpid())); !e.empty()) return "cannot join its cgroup: " + e;
  return {};
}

}  // namespace troupe
