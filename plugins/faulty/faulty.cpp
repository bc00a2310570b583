// faulty: forwards frames, and fails on purpose where told to: an error, a fatal error, an
// exception, abort, a segfault, exit, a hang, a busy spin, a slow call, a memory hog, a
// network socket, an io_uring ring, a child left behind, children that share a memory hog
// (each within the process limits) or that fork as many as they can, an output that reveals which process it runs
// in, reading or writing a file, or a system call a plugin must not make (an error names what the
// system said), on one sequence number or on every Nth frame
// this instance processes; or it fails create, start, stop or every health check, or takes its time to stop. For tests.
#include <troupe/plugin.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <linux/io_uring.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

class faulty : public troupe::plugin {
 public:
  explicit faulty(troupe::context& ctx)
      : plugin(ctx),
        action_(ctx.config.get_string("action", "none")),
        call_(ctx.config.get_string("call", "capabilities")),
        on_seq_(ctx.config.get_int("on_seq", -1)),
        every_(ctx.config.get_int("every", 0)),
        hang_ms_(ctx.config.get_int("hang_ms", 3600000)),
        slow_ms_(ctx.config.get_int("slow_ms", 50)),
        cpu_ms_(ctx.config.get_int("cpu_ms", 0)),
        hog_mb_(ctx.config.get_int("hog_mb", 1024)),
        children_(ctx.config.get_int("children", 4)),
        stop_ms_(ctx.config.get_int("stop_ms", 0)),
        file_(ctx.config.get_string("file", "")),
        fail_start_(ctx.config.get_bool("fail_start")),
        fail_stop_(ctx.config.get_bool("fail_stop")),
        fail_health_(ctx.config.get_bool("fail_health")) {
    if (ctx.config.get_bool("fail_create")) throw troupe::fatal_error("faulty: configured to fail create");
  }

  void start() override {
    if (fail_start_) throw troupe::fatal_error("faulty: configured to fail start");
  }

  bool healthy() override { return !fail_health_; }

  void stop() override {
    if (stop_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(stop_ms_));
    if (fail_stop_) throw troupe::fatal_error("faulty: configured to fail stop");
  }

  void process(const troupe::frame_in& in) override {
    ++seen_;
    bool hit = (on_seq_ >= 0 && in.seq() == static_cast<uint64_t>(on_seq_) && in.part() == 0) ||
               (every_ > 0 && seen_ % every_ == 0);
    if (hit && action_ == "reveal") {
      // Tells which process it runs in: the one thing a plugin must not depend on.
      auto pid = std::to_string(getpid());
      troupe::frame_out o;
      o.type = in.view().type;
      o.timestamp_ns = in.timestamp_ns();
      o.data = in.data();
      o.size = in.size();
      o.meta.assign(in.view().meta, in.view().meta + in.view().meta_count);
      o.meta.push_back({"pid", pid.c_str()});
      emit(o);
      return;
    }
    if (hit) act(in);
    forward(in);
  }

 private:
  void act(const troupe::frame_in& in) {
    auto where = "stream " + std::to_string(in.stream()) + " seq " + std::to_string(in.seq());
    if (action_ == "read_file" || action_ == "write_file") {
      bool reading = action_ == "read_file";
      FILE* f = std::fopen(file_.c_str(), reading ? "r" : "a");
      if (f == nullptr)
        throw troupe::frame_error(std::string("faulty: cannot ") + (reading ? "read " : "write ") + file_ + ": " +
                                  std::strerror(errno));
      char c;
      if (reading) [[maybe_unused]]
        auto n = std::fread(&c, 1, 1, f);
      else
        std::fputs("written\n", f);
      std::fclose(f);
    }
    if (action_ == "error") throw troupe::frame_error("faulty: error on " + where);
    if (action_ == "fatal") throw troupe::fatal_error("faulty: fatal error on " + where);
    if (action_ == "throw") throw std::runtime_error("faulty: exception on " + where);
    if (action_ == "abort") std::abort();
    if (action_ == "segfault") {
      // A real invalid access (to a page with no access rights), not undefined behaviour
      // that a sanitizer would report first.
      void* page = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      *static_cast<volatile int*>(page) = 1;
    }
    if (action_ == "exit") std::_Exit(3);
    if (action_ == "hang") std::this_thread::sleep_for(std::chrono::milliseconds(hang_ms_));
    if (action_ == "slow") std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms_));
    if (action_ == "spin") {
      // Burns CPU time for hang_ms of wall-clock time, or until this thread has used cpu_ms
      // of CPU time if that comes first (a fixed amount of work, however loaded the machine).
      auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(hang_ms_);
      auto cpu_until = thread_cpu_ms() + cpu_ms_;
      volatile uint64_t x = 0;
      while (std::chrono::steady_clock::now() < until && (cpu_ms_ == 0 || thread_cpu_ms() < cpu_until)) x = x + 1;
    }
    if (action_ == "hog") {
      // One block, kept and touched page by page: the memory is really used. (One block
      // also leaves a limited process the memory it has: a sanitizer can still report.)
      auto bytes = static_cast<size_t>(hog_mb_) << 20;
      hoard_.emplace_back(new char[bytes]);
      std::memset(hoard_.back().get(), 1, bytes);
    }
    if (action_ == "socket") {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      if (fd < 0) throw troupe::frame_error("faulty: socket failed on " + where);
      ::close(fd);
    }
    if (action_ == "fork") {
      // A child that would outlive its parent, then the parent's end.
      if (::fork() == 0)
        for (;;) ::pause();
      std::abort();
    }
    if (action_ == "fork_hog") {
      // children_ children, each touching hog_mb: every one stays within a per-process limit,
      // together they do not. Waits until each has touched its memory or died.
      int done[2];
      if (::pipe(done) != 0) throw troupe::frame_error("faulty: pipe failed on " + where);
      std::vector<pid_t> kids;
      for (int64_t i = 0; i < children_; ++i) {
        pid_t k = ::fork();
        if (k == 0) {
          auto bytes = static_cast<size_t>(hog_mb_) << 20;
          void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
          if (p != MAP_FAILED) std::memset(p, 1, bytes);
          char c = 1;
          (void)!::write(done[1], &c, 1);
          for (;;) ::pause();
        }
        if (k > 0) kids.push_back(k);
      }
      ::close(done[1]);
      size_t settled = 0;
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (settled < kids.size() && std::chrono::steady_clock::now() < until) {
        pollfd p{done[0], POLLIN, 0};
        if (::poll(&p, 1, 10) > 0) {
          char c;
          if (::read(done[0], &c, 1) == 1) ++settled;
        }
        int status;
        while (::waitpid(-1, &status, WNOHANG) > 0) ++settled;  // one that died before it said so
      }
      ::close(done[0]);
    }
    if (action_ == "fork_many") {
      // Forks until children_ children run or a fork is refused; a refusal is fatal.
      for (int64_t i = 0; i < children_; ++i) {
        pid_t k = ::fork();
        if (k == 0)
          for (;;) ::pause();
        if (k < 0)
          throw troupe::fatal_error("faulty: fork refused after " + std::to_string(i) + " children (" +
                                    std::strerror(errno) + ") on " + where);
      }
    }
    if (action_ == "syscall") escape(where);
    if (action_ == "io_uring") {
      // The way round a ban on socket(): a ring, whose IORING_OP_SOCKET makes one.
      io_uring_params params{};
      long fd = ::syscall(__NR_io_uring_setup, 4, &params);
      if (fd < 0) throw troupe::frame_error("faulty: io_uring_setup failed on " + where);
      ::close(static_cast<int>(fd));
    }
  }

  // What a plugin trying to get out of its worker would call. Each throws if it fails, naming
  // the call and what the system said.
  void escape(const std::string& where) {
    long rc = 0;
    if (call_ == "capabilities") {
      // Holds any capability (effective, or could regain it: bounding set)?
      std::ifstream status("/proc/self/status");
      std::string line, held;
      while (std::getline(status, line))
        if ((line.rfind("CapEff:", 0) == 0 || line.rfind("CapBnd:", 0) == 0) &&
            line.find_first_not_of("0\t ", 7) != std::string::npos)
          held += (held.empty() ? "" : ", ") + line;
      if (!held.empty()) throw troupe::frame_error("faulty: holds capabilities (" + held + ") on " + where);
      return;
    }
    if (call_ == "unshare") {
      rc = ::unshare(CLONE_NEWUSER | CLONE_NEWNS);
    } else if (call_ == "clone_newns") {
      rc = ::syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0);
      if (rc == 0) std::_Exit(0);  // the child, had it been made
      if (rc > 0) ::waitpid(static_cast<pid_t>(rc), nullptr, 0);
    } else if (call_ == "mount") {
      rc = ::mount("none", "/tmp", "tmpfs", 0, nullptr);
    } else if (call_ == "chroot") {
      rc = ::chroot("/");
    } else if (call_ == "process_vm_readv") {
      char mine[8], theirs[8] = {};
      iovec local{mine, sizeof mine}, remote{theirs, sizeof theirs};
      rc = ::process_vm_readv(getppid(), &local, 1, &remote, 1, 0);
    } else if (call_ == "keyctl") {
      rc = ::syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -4 /* the user's keyring */, 0);
    } else if (call_ == "bpf") {
      rc = ::syscall(SYS_bpf, 0, nullptr, 0);
    } else if (call_ == "tiocsti") {
      char c = '\n';
      rc = ::ioctl(2, TIOCSTI, &c);
    }
    if (rc < 0) throw troupe::frame_error("faulty: " + call_ + ": " + std::strerror(errno) + " on " + where);
  }

  const std::string action_;
  const std::string call_;
  static int64_t thread_cpu_ms() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
  }

  const int64_t on_seq_, every_, hang_ms_, slow_ms_, cpu_ms_, hog_mb_, children_, stop_ms_;
  const std::string file_;
  std::vector<std::unique_ptr<char[]>> hoard_;
  const bool fail_start_, fail_stop_, fail_health_;
  int64_t seen_ = 0;
};

}  // namespace

TROUPE_PLUGIN("faulty", faulty)
