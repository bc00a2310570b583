// Starting an isolated worker (on its launcher's thread, worker_launcher.hpp): what files it
// may touch, its cgroup, and its hello. The calls to a running worker are in
// isolated_adapter.cpp.
#include <troupe/admission.hpp>
#include <troupe/isolated_adapter.hpp>
#include <troupe/isolated_channel.hpp>
#include <troupe/worker_protocol.hpp>

#include <spdlog/spdlog.h>

#include <kj/exception.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <mutex>

extern char** environ;

namespace troupe {

namespace wp = worker_protocol;

namespace {

// A descriptor above the ones a worker is given, so that dup2 onto 3..5 always clears
// close-on-exec.
int high_fd(int fd) {
  int h = fcntl(fd, F_DUPFD_CLOEXEC, 64);
  close(fd);
  return h;
}

}  // namespace

landlock::grants isolated_adapter::granted_files() const {
  namespace fs = std::filesystem;
  landlock::grants g;
  g.read.push_back(fs::path(manifest_.path).parent_path().string());
  g.read.push_back(fs::path(manifest_.library).parent_path().string());
  g.read.insert(g.read.end(), manifest_.resources.fs_read.begin(), manifest_.resources.fs_read.end());
  g.write = manifest_.resources.fs_write;
  // A plugin that needs GPUs opens their devices (and the driver's ioctls on them).
  if (manifest_.resources.gpus > 0)
    for (auto& d : gpu_device_paths()) g.write.push_back(d);
  // Files its config names in fields marked as paths (relative ones are the node's working
  // directory's, as the worker's): read, or written with the folder they are in.
  for (auto& [key, value] : config_) {
    auto* f = manifest_.field(key);
    if (f == nullptr || f->path == config_field::path_access::none || value.empty()) continue;
    std::error_code ec;
    auto p = fs::absolute(value, ec).lexically_normal();
    if (ec) continue;
    if (f->path == config_field::path_access::read)
      g.read.push_back(p.string());
    else
      g.write.push_back(p.parent_path().string());
  }
  return g;
}

call_result isolated_adapter::check(const manifest& m, std::shared_ptr<worker_launcher> launcher) {
  isolated_adapter probe(m, 0, "check plugin=" + m.name, std::move(launcher), size_t{1} << 20);
  auto r = probe.spawn();
  if (r.ok()) return r;  // the probe's worker is killed as it goes
  const std::string refused = "create failed: ";
  if (r.error.rfind(refused, 0) == 0)
    r.error = r.error.substr(refused.size());  // the worker's words name the library
  else
    r.error = m.library + ": " + r.error + " (plugin '" + m.name + "', loaded in a worker)";
  return r;
}

call_result isolated_adapter::spawn() {
  if (!launcher_)
    return {TROUPE_FATAL,
            "plugin '" + manifest_.name + "' runs isolated, and nothing here starts workers (no launcher)"};
  auto ch = std::make_unique<channel>();
  ch->region_bytes = region_bytes_;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return {TROUPE_FATAL, std::string("cannot create the worker socket: ") + std::strerror(errno)};
  ch->sock = high_fd(sv[0]);
  int child_sock = high_fd(sv[1]);
  for (int i = 0; i < 2; ++i) {
    int fd = memfd_create(i == 0 ? "troupe-inputs" : "troupe-outputs", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(region_bytes_)) != 0) {
      if (fd >= 0) close(fd);
      close(child_sock);
      return {TROUPE_FATAL, std::string("cannot create a shared region: ") + std::strerror(errno)};
    }
    ch->region_fd[i] = high_fd(fd);
    void* p = mmap(nullptr, region_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, ch->region_fd[i], 0);
    if (p == MAP_FAILED) {
      close(child_sock);
      return {TROUPE_FATAL, std::string("cannot map a shared region: ") + std::strerror(errno)};
    }
    ch->region[i] = static_cast<uint8_t*>(p);
  }

  // Its cgroup: the memory limit counts the worker's own code, its output region (pages it
  // writes first are charged to it) and whatever it forks.
  static std::once_flag said;
  std::call_once(said, [] {
    const auto& cg = cgroups_here();
    if (cg.version > 0)
      spdlog::info("isolated workers: {}", cg.describe());
    else
      spdlog::warn("isolated workers: {}", cg.describe());
    landlock::remove_orphaned_scratch_dirs();  // of workers whose node was killed
    if (landlock::abi() > 0)
      spdlog::info("isolated workers: {}", landlock::describe());
    else
      spdlog::warn("isolated workers: {}", landlock::describe());
  });
  static std::atomic<uint64_t> workers{0};
  const auto& lim = manifest_.resources;
  worker_cgroup::limits cl;
  cl.memory_bytes =
      lim.memory_mb > 0 ? (lim.memory_mb << 20) + region_bytes_ + worker_cgroup::worker_allowance_bytes : 0;
  cl.max_tasks = lim.processes;
  cl.cpu_cores = lim.cpu_cores;
  cg_.reset();
  oom_seen_ = 0;
  std::string cg_why;
  cg_ = worker_cgroup::make("worker-" + std::to_string(++workers), cl, cg_why);
  if (!cg_ && cgroups_here().version > 0) spdlog::warn("[{}] worker without a cgroup: {}", log_tag_, cg_why);
  if (lim.cpu_cores > 0 && (!cg_ || cgroups_here().cpu.empty()))
    spdlog::warn("[{}] cpu_cores {} is not enforced: no cgroup cpu controller ({})", log_tag_, lim.cpu_cores,
                 cgroups_here().describe());

  const auto& exe = launcher_->executable();
  std::vector<std::string> args = {exe,
                                   "worker",
                                   "--manifest",
                                   manifest_.path,
                                   "--generation",
                                   std::to_string(generation_),
                                   "--tag",
                                   log_tag_,
                                   "--parent",
                                   std::to_string(getpid()),
                                   "--region-bytes",
                                   std::to_string(region_bytes_),
                                   "--log-level",
                                   std::string(spdlog::level::to_string_view(spdlog::get_level()).data())};
  if (cg_) args.insert(args.end(), {"--cgroup", cg_->procs_files()});
  auto files = granted_files();
  for (auto& p : files.read) args.insert(args.end(), {"--read", p});
  for (auto& p : files.write) args.insert(args.end(), {"--write", p});
  pid_t pid = launcher_->run([&]() -> pid_t {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, child_sock, wp::socket_fd);
    posix_spawn_file_actions_adddup2(&fa, ch->region_fd[0], wp::input_region_fd);
    posix_spawn_file_actions_adddup2(&fa, ch->region_fd[1], wp::output_region_fd);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // A process group of its own: whatever the worker forks dies with it (it cannot leave).
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    pid_t child = -1;
    int rc = posix_spawn(&child, exe.c_str(), &fa, &attr, argv.data(), environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      errno = rc;
      return -1;
    }
    return child;
  });
  int spawn_errno = errno;
  close(child_sock);
  if (pid < 0) return {TROUPE_FATAL, "cannot start worker " + exe + ": " + std::strerror(spawn_errno)};
  pid_.store(pid);
  ch->pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));  // close-on-exec; -1 before Linux 5.3
  ch_ = std::move(ch);

  // The worker says hello once its limits are in force and the library is loaded.
  try {
    if (!wait_for_reply()) return worker_gone("start-up");
    capnp::StreamFdMessageReader reader(ch_->sock, wp::reader_options());
    auto hello = reader.getRoot<wire::Hello>();
    if (hello.getProtocol() != wire::PROTOCOL_VERSION)
      return {TROUPE_FATAL, "worker " + std::to_string(pid) + " speaks protocol " +
                                std::to_string(hello.getProtocol()) + ", expected " +
                                std::to_string(wire::PROTOCOL_VERSION)};
    if (hello.getError().size() > 0) {
      std::string e = hello.getError().cStr();
      reap(true);
      return {TROUPE_FATAL, "create failed: " + e};
    }
  } catch (const kj::Exception&) {
    return worker_gone("start-up");
  }
  spdlog::debug("[{}] worker {} runs {}", log_tag_, pid, manifest_.library);
  return {TROUPE_OK, {}};
}

}  // namespace troupe
