// `troupe worker`: serves one isolated plugin instance for the node that spawned it.
//
// It finds its control socket and its two shared regions at fixed descriptors
// (worker_protocol.hpp), joins the cgroup the node made for it, puts the manifest's limits
// in force (address space, CPU time, open files, no new privileges, no capabilities, Landlock:
// files only where granted, see worker_landlock.hpp, and a seccomp allow list of system calls
// that kills it on a network socket unless the manifest asks for network, see
// worker_seccomp.hpp), and only then loads the
// plugin library, whose constructors run under all of them; it says hello, and then
// answers requests one by one, running the plugin through the same embedded adapter the
// node uses in-process: the plugin cannot tell the difference.
#include "commands.hpp"
#include "worker_seccomp.hpp"

#include <troupe/embedded_adapter.hpp>
#include <troupe/manifest.hpp>
#include <troupe/plugin_library.hpp>
#include <troupe/worker_cgroup.hpp>
#include <troupe/worker_protocol.hpp>

#include <kj/exception.h>
#include <kj/io.h>
#include <spdlog/spdlog.h>

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <new>

namespace troupe::cli {

namespace wp = worker_protocol;

namespace {

// Bytes of address space this process maps now.
uint64_t mapped_bytes() {
  std::ifstream in("/proc/self/statm");
  uint64_t pages = 0;
  in >> pages;
  return pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// Puts the manifest's limits in force, and the filesystem grants; an error names the limit that
// could not be set.
std::string apply_limits(const resource_limits& lim, const landlock::grants& files) {
  if (lim.open_files > 0) {
    rlimit r{lim.open_files, lim.open_files};
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) return std::string("open file limit: ") + std::strerror(errno);
  }
  // cpu_seconds is per input: the node watches it (isolated_adapter::run_process).
  // What the worker maps already (its own code and the shared regions) is not the plugin's:
  // the limit is on top of it. The library is loaded after this, so what it maps counts.
  if (lim.memory_mb > 0) {
    rlim_t bytes = mapped_bytes() + (lim.memory_mb << 20);
    rlimit r{bytes, bytes};
    if (setrlimit(RLIMIT_AS, &r) != 0) return std::string("memory limit: ") + std::strerror(errno);
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return std::string("no_new_privs: ") + std::strerror(errno);
  if (landlock::abi() > 0)  // else the node said once that files are not restricted
    if (auto e = landlock::restrict_self(files); !e.empty()) return "filesystem: " + e;
  if (auto e = worker_seccomp::drop_capabilities(); !e.empty()) return "dropping capabilities: " + e;
  if (auto e = worker_seccomp::install(lim.network); !e.empty()) return "seccomp: " + e;
  return {};
}

bool send_result(troupe_status st, const std::string& error) {
  capnp::MallocMessageBuilder msg;
  auto reply = msg.initRoot<wire::Reply>();
  reply.setDone(1);
  auto r = reply.initResults(1)[0];
  r.setStatus(st);
  r.setError(error);
  return wp::send_message(wp::socket_fd, msg);
}

template <class F>
call_result guarded(F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    throw;  // the memory limit: the worker ends and says so
  } catch (const std::exception& e) {
    return {TROUPE_FATAL, std::string("exception crossed the plugin ABI: ") + e.what()};
  } catch (...) {
    return {TROUPE_FATAL, "exception of unknown type crossed the plugin ABI"};
  }
}

}  // namespace

int serve_worker(const worker_options& o) {
  // Dies with the node; a node that died before this line is noticed here.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != o.parent) return 1;
  close_range(wp::output_region_fd + 1, ~0U, 0);
  signal(SIGPIPE, SIG_IGN);
  // Ctrl-C on the node's terminal reaches its whole process group: the node drains, and its
  // workers serve until it stops them.
  signal(SIGINT, SIG_IGN);

  auto hello = [](const std::string& error) {
    capnp::MallocMessageBuilder msg;
    auto h = msg.initRoot<wire::Hello>();
    h.setProtocol(wire::PROTOCOL_VERSION);
    h.setPid(getpid());
    h.setError(error);
    return wp::send_message(wp::socket_fd, msg);
  };
  // First of all, before anything of the plugin runs: what it or its children use counts in
  // the group, and the node can kill them all.
  if (auto e = join_cgroups(o.cgroup); !e.empty()) {
    hello(e);
    return 1;
  }
  uint8_t* region[2];
  for (int i = 0; i < 2; ++i) {
    void* p = mmap(nullptr, o.region_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, wp::input_region_fd + i, 0);
    if (p == MAP_FAILED) {
      hello(std::string("cannot map the shared regions: ") + std::strerror(errno));
      return 1;
    }
    region[i] = static_cast<uint8_t*>(p);
  }
  auto m = load_manifest(o.manifest);
  if (!m) {
    hello(describe(m.error()));
    return 1;
  }
  // A scratch directory of its own (TMPDIR), the one place it may write unless granted more.
  auto files = o.files;
  auto scratch = landlock::scratch_dir(getpid());
  struct stat st {};
  // One left by an earlier process of this pid is used only if it is a directory of ours (not
  // a link someone planted to have a folder of theirs granted).
  if (::mkdir(scratch.c_str(), 0700) == 0 ||
      (errno == EEXIST && ::lstat(scratch.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::getuid())) {
    setenv("TMPDIR", scratch.c_str(), 1);
    files.write.push_back(scratch);
  }
  if (auto e = apply_limits(m->resources, files); !e.empty()) {
    hello("cannot put the limits of " + m->path + " in force: " + e);
    return 1;
  }
  // A plugin call the filter refused a system call in names it, with its result and in the log.
  auto name_refused = [&](std::string& error, bool failed) {
    auto calls = worker_seccomp::take_refused();
    if (calls.empty()) return;
    spdlog::warn("[{}] worker: system calls refused (not on the allow list of isolated workers): {}", o.tag, calls);
    if (failed) error += " (refused by the system call filter of isolated workers: " + calls + ")";
  };
  auto lib = plugin_library::open(*m);
  if (!lib) {
    auto e = describe(lib.error());
    name_refused(e, true);
    hello(e);
    return 1;
  }
  {
    std::string none;
    name_refused(none, false);  // in the library's constructors
  }
  if (!hello({})) return 1;

  // Outputs the plugin allocates live in the output region: they cross without a copy.
  const size_t results_bytes = wp::results_bytes(o.region_bytes);
  size_t out_used = results_bytes;
  auto out_alloc = [&](size_t size) -> std::shared_ptr<buffer> {
    size_t at = wp::aligned(out_used);
    if (at > o.region_bytes || size > o.region_bytes - at) return buffer::allocate(size);
    out_used = at + size;
    return buffer::view(region[1] + at, size, nullptr);
  };
  embedded_adapter adapter(*lib, o.generation, o.tag, out_alloc);
  const auto memory_mb = m->resources.memory_mb;

  try {
    for (;;) {
      capnp::StreamFdMessageReader reader(wp::socket_fd, wp::reader_options());
      auto req = reader.getRoot<wire::Request>();
      switch (req.which()) {
        case wire::Request::CREATE: {
          config_values config;
          for (auto kv : req.getCreate()) config.emplace_back(kv.getKey().cStr(), kv.getValue().cStr());
          auto r = guarded([&] { return adapter.create(config); });
          name_refused(r.error, r.status != TROUPE_OK);
          if (!send_result(r.status, r.error)) return 1;
          break;
        }
        case wire::Request::START:
        case wire::Request::STOP:
        case wire::Request::HEALTH: {
          auto which = req.which();
          auto r = guarded([&] {
            return which == wire::Request::START  ? adapter.start()
                   : which == wire::Request::STOP ? adapter.stop()
                                                  : adapter.health();
          });
          name_refused(r.error, r.status != TROUPE_OK);
          if (!send_result(r.status, r.error)) return 1;
          break;
        }
        case wire::Request::DESTROY:
          adapter.destroy();
          send_result(TROUPE_OK, {});
          return 0;
        case wire::Request::PROCESS: {
          auto inputs = req.getProcess();
          wp::control ctl(region[0]);
          size_t results_used = 0;
          out_used = results_bytes;
          std::vector<frame> outs;
          // Runs one call and commits its result to the results area.
          auto serve = [&](const frame* in) {
            outs.clear();
            auto t0 = std::chrono::steady_clock::now();
            auto r = guarded([&] { return adapter.process(in, outs); });
            name_refused(r.error, r.status != TROUPE_OK);
            auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0);
            capnp::MallocMessageBuilder msg;
            auto res = msg.initRoot<wire::Result>();
            res.setNanos(static_cast<uint64_t>(nanos.count()));
            auto list = res.initOutputs(static_cast<unsigned>(outs.size()));
            for (unsigned i = 0; i < outs.size(); ++i) {
              auto& f = outs[i];
              uint8_t reg = wp::output_region;
              const uint8_t* base = region[1];
              const uint8_t* data = f.payload.data();
              const size_t size = f.payload.size();
              if (size > 0 && data >= region[0] && data + size <= region[0] + o.region_bytes) {
                reg = wp::input_region, base = region[0];
              } else if (size > 0 && !(data >= region[1] && data + size <= region[1] + o.region_bytes)) {
                // Emitted from the plugin's own memory: copied into the output region.
                auto b = out_alloc(size);
                if (!(b->data() >= region[1] && b->data() < region[1] + o.region_bytes)) {
                  r = {TROUPE_FATAL,
                       "outputs do not fit the worker's output region of " + std::to_string(o.region_bytes) + " bytes"};
                  list = res.initOutputs(0);
                  break;
                }
                std::memcpy(b->data(), data, size);
                f.payload = payload_slice(std::move(b));
              }
              wp::write_header(list[i], f, reg, size > 0 ? static_cast<uint64_t>(f.payload.data() - base) : 0);
            }
            if (r.status != TROUPE_OK && memory_mb > 0 && r.error.find("bad_alloc") != std::string::npos)
              r = {TROUPE_FATAL, "memory limit " + std::to_string(memory_mb) + " MiB exceeded (" + r.error + ")"};
            res.setStatus(r.status);
            res.setError(r.error);
            // Written in place, straight into the results area.
            auto commit = [&](capnp::MessageBuilder& m) {
              auto bytes = capnp::computeSerializedSizeInWords(m) * sizeof(capnp::word);
              if (bytes > results_bytes - results_used) return false;
              kj::ArrayOutputStream out(kj::arrayPtr(region[1] + results_used, bytes));
              capnp::writeMessage(out, m);
              results_used += bytes;
              return true;
            };
            if (!commit(msg)) {
              // Half the area is always free when a call begins: this one fits.
              capnp::MallocMessageBuilder small;
              auto e = small.initRoot<wire::Result>();
              e.setStatus(TROUPE_FATAL);
              e.setError("the outputs of one frame do not fit the worker's results area of " +
                         std::to_string(results_bytes) + " bytes");
              commit(small);
              r.status = TROUPE_FATAL;
            }
            ctl.committed.fetch_add(1, std::memory_order_release);
            return r.status;
          };
          if (inputs.size() == 0) {
            serve(nullptr);
          } else {
            for (unsigned i = 0; i < inputs.size(); ++i) {
              // Half the output region or half the results area is used: the node takes
              // these results and sends the rest again.
              if (i > 0 &&
                  (out_used - results_bytes > (o.region_bytes - results_bytes) / 2 || results_used > results_bytes / 2))
                break;
              frame in = wp::read_header(inputs[i]);
              auto p = inputs[i].getPayload();
              if (p.getRegion() != wp::input_region || p.getOffset() < wp::control_bytes ||
                  p.getOffset() > o.region_bytes || p.getSize() > o.region_bytes - p.getOffset()) {
                spdlog::error("[{}] worker: the node named bytes outside the input region", o.tag);
                return 1;
              }
              in.payload = payload_slice(buffer::view(region[0] + p.getOffset(), p.getSize(), nullptr));
              ctl.progress.store(i, std::memory_order_relaxed);
              if (serve(&in) == TROUPE_FATAL) break;  // the rest stay undone
            }
          }
          capnp::MallocMessageBuilder msg;
          msg.initRoot<wire::Reply>().setDone(ctl.committed.load(std::memory_order_relaxed));
          if (!wp::send_message(wp::socket_fd, msg)) return 1;
          break;
        }
      }
    }
  } catch (const std::bad_alloc&) {
    // Reported by the exit status: the node names the limit.
    if (memory_mb > 0) _exit(wp::exit_memory_limit);
    _exit(wp::exit_out_of_memory);
  } catch (const kj::Exception&) {
    // The node closed the socket (it stops or died): nothing is waiting for an answer.
    return 0;
  }
}

}  // namespace troupe::cli
