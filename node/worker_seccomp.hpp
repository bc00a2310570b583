// The system calls of isolated workers: an allow list (seccomp).
//
// A worker may make the calls a computing process needs (memory, files, threads, time,
// signals, polling, pipes, its own children) and no others. A call not on the list is not made:
// it fails with EPERM, and the worker names it with the result of the plugin call it was
// made in ("refused by the system call filter of isolated workers: mount"). Namespaces
// (unshare, setns, clone with a namespace flag), mounts, ptrace and reading other processes'
// memory, kernel keys, BPF, perf events, modules, the clock, and TIOCSTI (typing into the node's
// terminal) are refused. Network sockets and io_uring are refused unless the manifest says
// `network: true`; an inet, inet6, packet or netlink socket, an io_uring, and leaving the
// worker's process group kill the worker, as they always have. Calls of another architecture's
// ABI (int 0x80 on x86-64) kill it too.
#pragma once

#include <string>

namespace troupe::cli::worker_seccomp {

/// Puts the filter in force for this process and all it starts; empty, or why it could not.
/// Needs no_new_privs set first.
std::string install(bool network);

/// The calls refused since the last take, by name ("mount, ptrace"); empty if none.
std::string take_refused();

/// Drops every capability (effective, permitted, inheritable, ambient and the bounding set), so
/// a worker of a node run as root has no root powers: no raising its own limits, no reading
/// or writing past file permissions. Empty, or why it could not.
std::string drop_capabilities();

}  // namespace troupe::cli::worker_seccomp
