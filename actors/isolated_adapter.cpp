#include <troupe/isolated_adapter.hpp>

#include <troupe/isolated_channel.hpp>
#include <troupe/worker_protocol.hpp>

#include <spdlog/spdlog.h>

#include <kj/exception.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

namespace troupe {

namespace wp = worker_protocol;

namespace {

// CPU seconds process p used, its threads and the children it waited for (utime, stime, cutime
// and cstime: fields 14 to 17 of /proc/PID/stat, after the command name in parentheses, which
// may hold spaces); negative if unknown.
double cpu_seconds_of(pid_t p) {
  std::ifstream st("/proc/" + std::to_string(p) + "/stat");
  std::string line;
  if (!std::getline(st, line) || line.rfind(')') == std::string::npos) return -1;
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  uint64_t ticks = 0;
  for (int i = 3; i <= 17 && rest >> field; ++i)
    if (i >= 14) ticks += std::strtoull(field.c_str(), nullptr, 10);
  return static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  const char* desc = sigdescr_np(sig);
  return std::string("SIG") + (abbrev ? abbrev : std::to_string(sig)) + " (" + (desc ? desc : "unknown") + ")";
}

}  // namespace

isolated_adapter::isolated_adapter(const manifest& m, uint64_t generation, std::string log_tag,
                                   std::shared_ptr<worker_launcher> launcher, size_t region_bytes)
    : manifest_(m),
      generation_(generation),
      log_tag_(std::move(log_tag)),
      region_bytes_(region_bytes),
      launcher_(std::move(launcher)) {}

isolated_adapter::~isolated_adapter() { reap(true); }

// The worker's process group is its own (its id is the worker's pid): killing it takes what
// the worker forked. Done before the worker is reaped, while its pid cannot be reused.
void isolated_adapter::kill_group(pid_t p) { ::kill(-p, SIGKILL); }

void isolated_adapter::terminate() {
  terminated_.store(true);
  std::lock_guard<std::mutex> lock(pid_mutex_);
  if (auto p = pid_.load(); p > 0) {
    ::kill(p, SIGKILL);
    kill_group(p);  // a child holding the worker's socket would keep a call waiting
  }
}

void isolated_adapter::reap(bool kill_first) {
  std::lock_guard<std::mutex> lock(pid_mutex_);
  auto p = pid_.load();
  if (p <= 0) return;
  if (kill_first) ::kill(p, SIGKILL);
  siginfo_t info{};
  while (waitid(P_PID, static_cast<id_t>(p), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
  }
  int status = 0;
  bury(p, status, true);
}

pid_t isolated_adapter::bury(pid_t p, int& status, bool wait) {
  kill_group(p);
  if (cg_) cg_->kill_all();
  pid_t got;
  while ((got = waitpid(p, &status, wait ? 0 : WNOHANG)) < 0 && errno == EINTR) {
  }
  if (got == p || wait) {  // (a worker that is no child of ours any more is gone too)
    pid_.store(-1);
    std::error_code ec;
    std::filesystem::remove_all(landlock::scratch_dir(p), ec);
  }
  return got;
}

std::string isolated_adapter::memory_limit_broken(const std::string& how) const {
  return "memory limit " + std::to_string(manifest_.resources.memory_mb) + " MiB exceeded (" + how + ")";
}

void isolated_adapter::sample_use(bool now) {
  auto at = std::chrono::steady_clock::now();
  if (!now && at - sampled_ < std::chrono::seconds(1)) return;
  sampled_ = at;
  // The worker's resident set, or what its cgroup is charged if more: the group counts what
  // the worker's children use, but not the pages the worker touched before it joined.
  uint64_t bytes = 0;
  if (auto p = pid_.load(); p > 0) {
    std::ifstream in("/proc/" + std::to_string(p) + "/statm");
    uint64_t size = 0, resident = 0;
    if (in >> size >> resident) bytes = resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    if (double t = cpu_seconds_of(p); t >= 0) cpu_seconds_.store(t, std::memory_order_relaxed);
  }
  if (cg_) bytes = std::max(bytes, cg_->memory_bytes());
  memory_bytes_.store(bytes, std::memory_order_relaxed);
  if (cg_) throttled_.store(cg_->cpu_throttled_seconds(), std::memory_order_relaxed);
}

std::string isolated_adapter::over_memory() {
  if (!cg_) return {};
  auto n = cg_->oom_kills();
  if (n <= oom_seen_) return {};
  oom_seen_ = n;
  return memory_limit_broken("the kernel's OOM killer ended a process of worker " + std::to_string(pid_.load()) +
                             " in its cgroup");
}

bool isolated_adapter::wait_for_reply() {
  for (;;) {
    pollfd p[2] = {{ch_->sock, POLLIN, 0}, {ch_->pidfd, POLLIN, 0}};
    int n = poll(p, ch_->pidfd >= 0 ? 2 : 1, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (p[0].revents != 0) return true;  // a reply, or the end of the socket
    if (p[1].revents != 0) return false;
  }
}

call_result isolated_adapter::worker_gone(const std::string& during) {
  // The worker closed its end: it is exiting. Give it a moment, then make sure.
  auto p = pid_.load();
  std::string what = "worker " + std::to_string(p);
  if (p <= 0) return {TROUPE_FATAL, "no worker process (" + during + ")"};
  int status = 0;
  pid_t got = 0;
  for (int i = 0; i < 200 && got == 0; ++i) {
    {
      std::lock_guard<std::mutex> lock(pid_mutex_);
      siginfo_t info{};
      if (waitid(P_PID, static_cast<id_t>(p), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
        got = -1;  // not a child of ours any more
      } else if (info.si_pid == p) {
        got = bury(p, status, false);  // it exited: what it forked goes with it
      }
    }
    if (got == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (got == 0) {
    reap(true);
    return {TROUPE_FATAL, what + " stopped answering during " + during + " and was killed"};
  }
  const auto& lim = manifest_.resources;
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && !terminated_.load())
    if (auto why = over_memory(); !why.empty()) return {TROUPE_FATAL, why};
  if (WIFEXITED(status) && WEXITSTATUS(status) == wp::exit_memory_limit)
    return {TROUPE_FATAL, memory_limit_broken(what)};
  if (WIFEXITED(status) && WEXITSTATUS(status) == wp::exit_out_of_memory)
    return {TROUPE_FATAL, what + " ran out of memory during " + during};
  if (WIFEXITED(status))
    return {TROUPE_FATAL, what + " exited with status " + std::to_string(WEXITSTATUS(status)) + " during " + during};
  if (!WIFSIGNALED(status)) return {TROUPE_FATAL, what + " ended during " + during};
  int sig = WTERMSIG(status);
  if (sig == SIGSYS)
    return {TROUPE_FATAL, std::string("a forbidden system call was made") +
                              (lim.network ? " (leaving the worker's process group)"
                                           : " (network access is not permitted: resources.network is false; "
                                             "nor is leaving the worker's process group)") +
                              " (" + what + " killed by seccomp, " + signal_name(sig) + ")"};
  if (sig == SIGKILL && terminated_.load())
    return {TROUPE_FATAL, what + " was killed (" + signal_name(sig) + ") during " + during};
  return {TROUPE_FATAL, what + " killed by " + signal_name(sig) + " during " + during};
}

call_result isolated_adapter::create(const config_values& config) {
  config_ = config;
  if (auto r = spawn(); !r.ok()) return r;
  capnp::MallocMessageBuilder msg;
  auto kv = msg.initRoot<wire::Request>().initCreate(static_cast<unsigned>(config.size()));
  for (unsigned i = 0; i < config.size(); ++i) {
    kv[i].setKey(config[i].first);
    kv[i].setValue(config[i].second);
  }
  return exchange("create", msg, plain_result);
}

call_result isolated_adapter::plain_result(wire::Result::Reader r) {
  return {static_cast<troupe_status>(r.getStatus()), r.getError().cStr()};
}

template <class Take>
call_result isolated_adapter::exchange(const char* during, capnp::MessageBuilder& msg, Take take) {
  if (!ch_ || pid_.load() <= 0) return {TROUPE_FATAL, std::string("no worker for ") + during};
  if (!wp::send_message(ch_->sock, msg)) return worker_gone(during);
  try {
    if (!wait_for_reply()) return worker_gone(during);
    capnp::StreamFdMessageReader reader(ch_->sock, wp::reader_options());
    auto reply = reader.getRoot<wire::Reply>();
    if (reply.getResults().size() != 1 || reply.getDone() != 1)
      return {TROUPE_FATAL, std::string("worker sent a malformed reply to ") + during};
    return take(reply.getResults()[0]);
  } catch (const kj::Exception&) {
    return worker_gone(during);
  }
}

call_result isolated_adapter::start() {
  capnp::MallocMessageBuilder msg;
  msg.initRoot<wire::Request>().setStart();
  return exchange("start", msg, plain_result);
}

call_result isolated_adapter::stop() {
  capnp::MallocMessageBuilder msg;
  msg.initRoot<wire::Request>().setStop();
  auto r = exchange("stop", msg, plain_result);
  sample_use(true);  // the final figures: all the worker used, also within the last second
  return r;
}

call_result isolated_adapter::health() {
  if (auto why = over_memory(); !why.empty()) {
    reap(true);
    return {TROUPE_FATAL, why};
  }
  capnp::MallocMessageBuilder msg;
  msg.initRoot<wire::Request>().setHealth();
  auto r = exchange("health", msg, plain_result);
  sample_use();
  return r;
}

void isolated_adapter::destroy() {
  if (!ch_ || pid_.load() <= 0) return;
  capnp::MallocMessageBuilder msg;
  msg.initRoot<wire::Request>().setDestroy();
  exchange("destroy", msg, plain_result);
  reap(false);  // the worker exits after destroy
  ch_.reset();
  cg_.reset();
}

call_result isolated_adapter::read_outputs(wire::Result::Reader r, size_t words, const frame* in, uint64_t in_offset,
                                           std::vector<frame>& out) {
  auto outputs = r.getOutputs();
  if (auto why = wp::check_output_count(outputs.size(), words)) return {TROUPE_FATAL, *why};
  for (auto o : outputs) {
    frame f = wp::read_header(o);
    auto p = o.getPayload();
    uint64_t off = p.getOffset(), size = p.getSize();
    if (in != nullptr && in->meta && f.meta && *f.meta == *in->meta) f.meta = in->meta;  // shared, as embedded
    if (size > 0) {
      wp::payload_place at;
      if (auto why = wp::locate_payload(p.getRegion(), off, size, in != nullptr, in_offset, in ? in->payload.size() : 0,
                                        region_bytes_, at))
        return {TROUPE_FATAL, *why};
      if (at.in_input) {
        // A view of the input: the node's own buffer serves, no copy.
        f.payload = in->payload.sub(at.at, size);
      } else {
        auto b = buffer::allocate(size);
        std::memcpy(b->data(), ch_->region[1] + at.at, size);  // the one copy out
        f.payload = payload_slice(std::move(b));
      }
    }
    out.push_back(std::move(f));
  }
  return plain_result(r);
}

call_result isolated_adapter::process(const frame* in, std::vector<frame>& out) {
  struct one final : batch_sink {
    std::vector<frame>& out;
    call_result result{TROUPE_FATAL, "no result"};
    explicit one(std::vector<frame>& o) : out(o) {}
    void begin(size_t, time_point) override {}
    bool done(size_t, call_result& r, std::vector<frame>& outs, std::chrono::nanoseconds) override {
      result = std::move(r);
      for (auto& f : outs) out.push_back(std::move(f));
      return true;
    }
  } sink(out);
  if (in == nullptr) {  // a source's turn
    if (!ch_ || pid_.load() <= 0) return {TROUPE_FATAL, "no worker for process"};
    capnp::MallocMessageBuilder msg;
    msg.initRoot<wire::Request>().initProcess(0);
    run_process(msg, nullptr, nullptr, 0, 0, sink);
  } else {
    process_batch(std::vector<frame>{*in}, sink);
  }
  return sink.result;
}

void isolated_adapter::process_batch(const std::vector<frame>& in, batch_sink& sink) {
  const size_t room = region_bytes_ - wp::control_bytes;
  size_t next = 0;
  while (next < in.size()) {
    std::vector<frame> none;
    if (!ch_ || pid_.load() <= 0) {
      sink.begin(next, std::chrono::steady_clock::now());
      call_result r{TROUPE_FATAL, "no worker for process"};
      sink.done(next, r, none, {});
      return;
    }
    if (in[next].payload.size() > room) {
      sink.begin(next, std::chrono::steady_clock::now());
      call_result r{TROUPE_ERROR, "frame of " + std::to_string(in[next].payload.size()) +
                                      " bytes is larger than the worker's input region (" + std::to_string(room) +
                                      " bytes)"};
      if (!sink.done(next, r, none, {})) return;
      ++next;
      continue;
    }
    // As many inputs as fit, each copied once into the input region.
    size_t end = next, used = 0;
    std::vector<uint64_t> offsets;
    for (; end < in.size() && end - next < max_request_frames; ++end) {
      size_t at = wp::aligned(used);
      if (in[end].payload.size() > room - std::min(room, at)) break;
      if (end > next && at + in[end].payload.size() > max_request_bytes) break;
      offsets.push_back(wp::control_bytes + at);
      used = at + in[end].payload.size();
    }
    const auto count = static_cast<unsigned>(end - next);
    capnp::MallocMessageBuilder msg;
    auto list = msg.initRoot<wire::Request>().initProcess(count);
    for (unsigned k = 0; k < count; ++k) {
      auto& f = in[next + k];
      if (f.payload.size() > 0)
        std::memcpy(ch_->region[0] + offsets[k], f.payload.data(), f.payload.size());  // the one copy in
      wp::write_header(list[k], f, wp::input_region, offsets[k]);
    }
    auto done = run_process(msg, &in[next], offsets.data(), count, next, sink);
    if (done == 0) return;
    next += done;
  }
}

size_t isolated_adapter::run_process(capnp::MessageBuilder& msg, const frame* in, const uint64_t* offsets,
                                     unsigned count, size_t base, batch_sink& sink) {
  std::vector<frame> outs;
  // Reports input k's result; false: the batch ends here.
  auto report = [&](unsigned k, call_result r, std::chrono::nanoseconds took) {
    bool go_on = sink.done(base + k, r, outs, took) && r.status != TROUPE_FATAL;
    outs.clear();
    return go_on;
  };
  wp::control ctl(ch_->region[0]);
  ctl.progress.store(0, std::memory_order_relaxed);
  ctl.committed.store(0, std::memory_order_relaxed);
  auto t0 = std::chrono::steady_clock::now();
  sink.begin(base, t0);
  bool gone = !wp::send_message(ch_->sock, msg);
  int64_t oom_at = -1;
  // cpu_seconds holds per input: the CPU time the worker used since it was first seen on the
  // input it is at (read each 10 ms an input takes; an input done sooner costs nothing).
  const auto cpu_limit = static_cast<double>(manifest_.resources.cpu_seconds);
  double cpu_from = -1;
  int64_t cpu_at = -1;
  std::string cpu_over;
  if (!gone) {
    // Wait for the reply, announcing each input the worker is seen to move on to.
    uint32_t seen = 0;
    for (;;) {
      pollfd pfd[2] = {{ch_->sock, POLLIN, 0}, {ch_->pidfd, POLLIN, 0}};
      int n = poll(pfd, ch_->pidfd >= 0 ? 2 : 1, 10);
      if (n > 0 && pfd[0].revents == 0) {
        gone = true;  // exited without a word (a child of it may hold the socket open)
        break;
      }
      if (n > 0 || (n < 0 && errno != EINTR)) break;
      uint32_t at = ctl.progress.load(std::memory_order_relaxed);
      if (cg_ && oom_at < 0 && cg_->oom_kills() > oom_seen_) oom_at = at;  // the input it broke its limit on
      if (at != seen && at < count) {
        seen = at;
        cpu_from = -1;
        sink.begin(base + at, std::chrono::steady_clock::now());
      }
      if (cpu_limit > 0 && at < std::max(1u, count)) {
        auto p = pid_.load();
        double used = p > 0 ? cpu_seconds_of(p) : -1;
        if (used >= 0 && cpu_from < 0) {
          cpu_from = used;
        } else if (used >= 0 && used - cpu_from > cpu_limit) {
          char took[32];
          std::snprintf(took, sizeof took, "%.2f", used - cpu_from);
          cpu_over = "cpu limit " + std::to_string(manifest_.resources.cpu_seconds) + " s per call exceeded (worker " +
                     std::to_string(p) + " used " + took + " s of CPU on one input and was killed)";
          cpu_at = at;
          reap(true);
          gone = true;
          break;
        }
      }
    }
    if (!gone) try {
        capnp::StreamFdMessageReader reader(ch_->sock, wp::reader_options());
        reader.getRoot<wire::Reply>();
      } catch (const kj::Exception&) {
        gone = true;
      }
  }
  // A process of the worker's group (a child of it) killed for memory while it worked on these,
  // or the worker past its CPU time on one input: it broke its limit on the input it was at
  // then. What it committed before that input stands; the worker goes. (A worker itself killed
  // for memory is gone, and named below.)
  std::string over = gone ? std::string() : over_memory();
  if (!cpu_over.empty()) {
    over = cpu_over;
    oom_at = cpu_at;
  }
  if (!over.empty()) {
    if (oom_at < 0) oom_at = static_cast<int64_t>(ctl.progress.load(std::memory_order_relaxed));
    reap(true);
  }
  // The results the worker committed, also if it died after.
  const unsigned expected = std::max(1u, count);
  uint32_t committed = ctl.committed.load(std::memory_order_acquire);
  if (committed > expected || (committed == 0 && !gone && over.empty())) {
    report(0,
           {TROUPE_FATAL,
            "worker counted " + std::to_string(committed) + " results for " + std::to_string(expected) + " calls"},
           {});
    return 0;
  }
  if (!over.empty()) committed = std::min(committed, static_cast<uint32_t>(std::min<int64_t>(oom_at, expected - 1)));
  const auto* words = reinterpret_cast<const capnp::word*>(ch_->region[1]);
  kj::ArrayPtr<const capnp::word> area(words, wp::results_bytes(region_bytes_) / sizeof(capnp::word));
  for (unsigned k = 0; k < committed; ++k) {
    call_result r;
    std::chrono::nanoseconds took{0};
    try {
      const size_t words = wp::message_words(area);
      capnp::FlatArrayMessageReader reader(area, wp::reader_options(words));
      auto res = reader.getRoot<wire::Result>();
      took = std::chrono::nanoseconds(res.getNanos());
      r = read_outputs(res, words, count > 0 ? &in[k] : nullptr, count > 0 ? offsets[k] : 0, outs);
      area = kj::arrayPtr(reader.getEnd(), area.end());
    } catch (const kj::Exception& e) {
      outs.clear();
      r = {TROUPE_FATAL, std::string("worker wrote a malformed result: ") + e.getDescription().cStr()};
    }
    if (!report(k, std::move(r), took)) return 0;
  }
  sample_use();
  if (!over.empty()) {
    report(committed, {TROUPE_FATAL, over}, std::chrono::steady_clock::now() - t0);
    return 0;
  }
  if (gone && committed < expected) {
    // The worker died working on the input after the last result it committed.
    report(committed, worker_gone("process"), std::chrono::steady_clock::now() - t0);
    return 0;
  }
  return committed;
}

}  // namespace troupe
