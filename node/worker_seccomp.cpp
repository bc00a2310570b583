#include "worker_seccomp.hpp"

#include <seccomp.h>

#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace troupe::cli::worker_seccomp {

namespace {

// What a computing process needs, by name; names this architecture does not have are left out.
constexpr const char* allowed[] = {
    // memory
    "brk mmap munmap mremap mprotect madvise msync mlock mlock2 munlock mlockall munlockall mincore "
    "membarrier memfd_create pkey_mprotect pkey_alloc pkey_free get_mempolicy set_mempolicy mbind",
    // processes and threads (clone is allowed below, without namespace flags)
    "fork vfork execve execveat exit exit_group wait4 waitid kill tkill tgkill getpid getppid gettid "
    "getpgrp getpgid getsid getuid geteuid getgid getegid getgroups getresuid getresgid setuid setgid "
    "setreuid setregid setresuid setresgid setfsuid setfsgid setgroups capget capset set_tid_address "
    "set_robust_list get_robust_list rseq futex futex_waitv sched_yield sched_getaffinity "
    "sched_setaffinity sched_getparam sched_setparam sched_getscheduler sched_setscheduler "
    "sched_get_priority_max sched_get_priority_min sched_getattr sched_setattr sched_rr_get_interval "
    "getpriority setpriority ioprio_get ioprio_set prctl arch_prctl getrlimit setrlimit prlimit64 "
    "getrusage times sysinfo uname getcpu pidfd_open pidfd_send_signal restart_syscall seccomp "
    "landlock_create_ruleset landlock_add_rule landlock_restrict_self getrandom",
    // signals and timers
    "rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigtimedwait rt_sigsuspend rt_sigqueueinfo "
    "rt_tgsigqueueinfo sigaltstack pause alarm getitimer setitimer timer_create timer_settime "
    "timer_gettime timer_getoverrun timer_delete clock_gettime clock_getres clock_nanosleep nanosleep "
    "gettimeofday time",
    // files (Landlock decides which)
    "read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 open openat openat2 creat "
    "close close_range lseek fstat stat lstat newfstatat statx fstatfs statfs access faccessat faccessat2 "
    "getdents getdents64 readlink readlinkat mkdir mkdirat rmdir unlink unlinkat rename renameat "
    "renameat2 link linkat symlink symlinkat chmod fchmod fchmodat chown fchown lchown fchownat truncate "
    "ftruncate fallocate fsync fdatasync sync_file_range fadvise64 readahead utime utimes utimensat "
    "futimesat dup dup2 dup3 fcntl flock getcwd chdir fchdir umask sendfile splice tee vmsplice "
    "copy_file_range getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr inotify_init "
    "inotify_init1 inotify_add_watch inotify_rm_watch io_setup io_destroy io_submit io_getevents "
    "io_pgetevents io_cancel",
    // pipes, events, polling, and the socket the worker was given
    "pipe pipe2 eventfd eventfd2 timerfd_create timerfd_settime timerfd_gettime signalfd signalfd4 select "
    "pselect6 poll ppoll epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2 "
    "socketpair sendmsg recvmsg sendmmsg recvmmsg sendto recvfrom shutdown getsockopt setsockopt "
    "getsockname getpeername connect bind listen accept accept4",
};

// Namespace flags of clone: a worker makes none.
constexpr scmp_datum_t namespace_flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
                                         CLONE_NEWNET | CLONE_NEWCGROUP | CLONE_NEWTIME;

constexpr int max_call = 1024;
std::atomic<uint32_t> refused[max_call];
std::atomic<bool> any_refused{false};
// The names of calls, resolved before the filter is in force (the handler cannot allocate).
const char* names[max_call];

// A call not on the list: not made, it fails with EPERM, and is remembered.
void on_sigsys(int, siginfo_t* si, void* context) {
  int nr = si->si_syscall;
  if (nr >= 0 && nr < max_call) refused[nr].fetch_add(1, std::memory_order_relaxed);
  any_refused.store(true, std::memory_order_release);
  auto* uc = static_cast<ucontext_t*>(context);
#if defined(__x86_64__)
  uc->uc_mcontext.gregs[REG_RAX] = -EPERM;
#elif defined(__aarch64__)
  uc->uc_mcontext.regs[0] = static_cast<unsigned long long>(-EPERM);
#else
#error "the worker's seccomp handler knows x86-64 and aarch64"
#endif
}

}  // namespace

std::string install(bool network) {
  for (int nr = 0; nr < max_call; ++nr) names[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
  struct sigaction sa {};
  sa.sa_sigaction = on_sigsys;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSYS, &sa, nullptr) != 0) return std::string("cannot handle SIGSYS: ") + std::strerror(errno);

  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);  // and another architecture's calls kill
  if (ctx == nullptr) return "cannot initialise a filter";
  int rc = 0;
  auto add = [&](uint32_t action, int call, unsigned count = 0, scmp_arg_cmp cmp = {}) {
    if (rc != 0 || call == __NR_SCMP_ERROR) return;
    rc = count == 0 ? seccomp_rule_add(ctx, action, call, 0) : seccomp_rule_add(ctx, action, call, 1, cmp);
  };
  for (const char* group : allowed) {
    std::istringstream names(group);
    for (std::string name; names >> name;) add(SCMP_ACT_ALLOW, seccomp_syscall_resolve_name(name.c_str()));
  }
  add(SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, namespace_flags, 0));
  // clone3's flags are in memory, where a filter cannot look: the C library falls back to clone.
  add(SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3));
  // Every ioctl but typing into a terminal (the node's, which the worker shares).
  add(SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, SCMP_A1_32(SCMP_CMP_NE, TIOCSTI));
  // The worker's processes stay in its process group, which the node kills with it.
  add(SCMP_ACT_KILL_PROCESS, SCMP_SYS(setsid));
  add(SCMP_ACT_KILL_PROCESS, SCMP_SYS(setpgid));
  if (network) {
    add(SCMP_ACT_ALLOW, SCMP_SYS(socket));
    for (int call : {SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register)})
      add(SCMP_ACT_ALLOW, call);
  } else {
    // A network socket kills the worker; other sockets (a Unix socket to a daemon) are refused.
    for (int domain : {AF_INET, AF_INET6, AF_PACKET, AF_NETLINK})
      add(SCMP_ACT_KILL_PROCESS, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(domain)));
    // io_uring makes sockets of its own (IORING_OP_SOCKET) without the socket system call.
    for (int call : {SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register)})
      add(SCMP_ACT_KILL_PROCESS, call);
  }
#if defined(__SANITIZE_ADDRESS__)
  // LeakSanitizer stops the worker's threads with ptrace to look for leaks at exit.
  add(SCMP_ACT_ALLOW, SCMP_SYS(ptrace));
#endif
  if (rc == 0) rc = seccomp_load(ctx);
  seccomp_release(ctx);
  if (rc != 0) return std::strerror(-rc);
  return {};
}

std::string take_refused() {
  if (!any_refused.exchange(false, std::memory_order_acquire)) return {};
  std::string out;
  for (int nr = 0; nr < max_call; ++nr) {
    if (refused[nr].exchange(0, std::memory_order_relaxed) == 0) continue;
    if (!out.empty()) out += ", ";
    out += names[nr] != nullptr ? names[nr] : "system call " + std::to_string(nr);
  }
  return out;
}

std::string drop_capabilities() {
  int last = CAP_LAST_CAP;
  if (std::ifstream in("/proc/sys/kernel/cap_last_cap"); in) in >> last;
  for (int cap = 0; cap <= last; ++cap)
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL && errno != EPERM)
      return std::string("bounding set: ") + std::strerror(errno);
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    return std::string("ambient capabilities: ") + std::strerror(errno);
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capset, &header, data) != 0) return std::string("capabilities: ") + std::strerror(errno);
  return {};
}

}  // namespace troupe::cli::worker_seccomp
