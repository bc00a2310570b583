// Isolated against embedded: frames/s through one pass-through plugin instance, called as
// the instance actor calls it (process_batch, up to `batch` inputs a call), embedded (in
// process) and isolated (in a worker process, across the socket and the shared regions),
// in the same run. For 6 MB frames, next to a
// plain loop that copies the payload twice with memcpy: the floor an isolated stage that
// copies in and out cannot beat. Then the time to start a worker with its limits in force
// (spawn, its cgroup, rlimits, Landlock, no capabilities, the seccomp allow list, the library
// loaded, create and start) beside starting the same executable bare (`troupe --version`),
// and what reading a worker's cgroup (its OOM count each call, its usage each second) costs.
//
//   build/tests/bench/isolated_bench [seconds per figure, default 1] [batch, default 32]
#include "bench_actors.hpp"

#include <troupe/catalog.hpp>
#include <troupe/embedded_adapter.hpp>
#include <troupe/isolated_adapter.hpp>
#include <troupe/plugin_library.hpp>
#include <troupe/worker_cgroup.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

using namespace troupe;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_per_figure = 1.0;
size_t batch = 32;

// Calls of `one` per second, run for about seconds_per_figure.
template <class F>
double rate(F&& one) {
  for (int i = 0; i < 3; ++i) one();  // warm up
  uint64_t n = 0;
  auto start = clock_type::now();
  double elapsed = 0;
  while (elapsed < seconds_per_figure) {
    for (int i = 0; i < 16; ++i) one();
    n += 16;
    elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
  }
  return static_cast<double>(n) / elapsed;
}

struct counting_sink final : batch_sink {
  size_t outputs = 0;
  std::string error;
  void begin(size_t, time_point) override {}
  bool done(size_t, call_result& r, std::vector<frame>& outs, std::chrono::nanoseconds) override {
    if (!r.ok()) error = r.error;
    outputs += outs.size();
    return r.ok();
  }
};

// Frames/s through a, in batches of n copies of f.
double through(plugin_adapter& a, const frame& f, size_t n) {
  std::vector<frame> inputs(n, f);
  return n * rate([&] {
           counting_sink sink;
           a.process_batch(inputs, sink);
           if (!sink.error.empty() || sink.outputs != n) {
             std::fprintf(stderr, "isolated_bench: process failed: %s\n", sink.error.c_str());
             std::exit(1);
           }
         });
}

// Milliseconds `one` takes, the median of `runs`.
template <class F>
double median_ms(int runs, F&& one) {
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    auto t0 = clock_type::now();
    one();
    ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// The troupe executable started bare: `troupe --version`, its output dropped.
void start_bare() {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  char exe[] = TROUPE_EXE, flag[] = "--version";
  char* args[] = {exe, flag, nullptr};
  pid_t pid = -1;
  if (posix_spawn(&pid, exe, &fa, nullptr, args, environ) != 0) {
    std::perror("isolated_bench: posix_spawn");
    std::exit(1);
  }
  posix_spawn_file_actions_destroy(&fa);
  int status = 0;
  waitpid(pid, &status, 0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) seconds_per_figure = std::atof(argv[1]);
  if (argc > 2) batch = std::max(1, std::atoi(argv[2]));
  auto launcher = std::make_shared<worker_launcher>(TROUPE_EXE);  // workers run the troupe executable
  auto cat = catalog::discover({TROUPE_PLUGIN_OUTPUT_DIR});
  auto m = cat.lookup("passthrough");
  if (!m) {
    std::fprintf(stderr, "isolated_bench: %s\n", describe(m.error()).c_str());
    return 1;
  }
  auto lib = plugin_library::open(**m);
  if (!lib) {
    std::fprintf(stderr, "isolated_bench: %s\n", describe(lib.error()).c_str());
    return 1;
  }
  embedded_adapter embedded(*lib, 1, "bench embedded");
  isolated_adapter isolated(**m, 1, "bench isolated", launcher);
  for (plugin_adapter* a : {static_cast<plugin_adapter*>(&embedded), static_cast<plugin_adapter*>(&isolated)}) {
    auto r = a->create({});
    if (r.ok()) r = a->start();
    if (!r.ok()) {
      std::fprintf(stderr, "isolated_bench: start failed: %s\n", r.error.c_str());
      return 1;
    }
  }

  std::printf("one pass-through stage, frames/s (%.1f s per figure, up to %zu inputs per call)\n", seconds_per_figure,
              batch);
  std::printf("%-8s %14s %14s %8s %16s %8s\n", "payload", "embedded", "isolated", "ratio", "2x memcpy loop",
              "iso/loop");
  double iso_small = 0;  // 64 B frames/s isolated
  for (size_t size : {size_t{64}, size_t{6} << 20}) {
    auto b = buffer::allocate(size);
    std::memset(b->data(), 7, size);
    auto f = bench::frame_over(b);
    // A stage takes up to `batch` small frames per call; large ones come one at a time
    // when they come slower than they are processed.
    size_t n = size == 64 ? batch : 1;
    double emb = through(embedded, f, n);
    double iso = through(isolated, f, n);
    const char* label = size == 64 ? "64 B" : "6 MB";
    if (size == 64) {
      iso_small = iso;
      std::printf("%-8s %14.0f %14.0f %7.1f%% %16s %8s\n", label, emb, iso, 100 * iso / emb, "-", "-");
      continue;
    }
    // The same bytes copied in and out, as an isolated call must at least do.
    auto mid = buffer::allocate(size), out = buffer::allocate(size);
    double loop = rate([&] {
      std::memcpy(mid->data(), f.payload.data(), size);
      std::memcpy(out->data(), mid->data(), size);
      asm volatile("" : : "r"(out->data()) : "memory");
    });
    std::printf("%-8s %14.0f %14.0f %7.1f%% %16.0f %7.1f%%\n", label, emb, iso, 100 * iso / emb, loop,
                100 * iso / loop);
  }
  isolated.stop();
  isolated.destroy();
  embedded.stop();

  // A worker's start, with every limit of its manifest in force, and its end.
  constexpr int runs = 15;
  double bare = median_ms(runs, start_bare);
  double worker = median_ms(runs, [&] {
    isolated_adapter a(**m, 1, "bench start", launcher);
    auto r = a.create({});
    if (r.ok()) r = a.start();
    if (!r.ok()) {
      std::fprintf(stderr, "isolated_bench: worker start failed: %s\n", r.error.c_str());
      std::exit(1);
    }
    a.stop();
    a.destroy();
  });
  std::printf(
      "\nstarting a worker and ending it (median of %d): %.2f ms; the executable started bare: %.2f ms "
      "(%.1fx)\n",
      runs, worker, bare, worker / bare);

  // What watching a worker's cgroup costs the node: each call reads the group's OOM count
  // (memory.oom_control or memory.events, kept open), and once a second its usage (memory,
  // CPU throttling). Timed on a group with the limits of a worker, beside a 64 B frame's time.
  worker_cgroup::limits cl;
  cl.memory_bytes = uint64_t{256} << 20;
  cl.max_tasks = 64;
  cl.cpu_cores = 0.5;
  std::string why;
  auto cg = worker_cgroup::make("bench-accounting", cl, why);
  if (!cg) {
    std::printf("cgroup accounting: not measured here: %s\n", why.c_str());
    return 0;
  }
  uint64_t sink_value = 0;
  double per_call_ns = 1e9 / rate([&] { sink_value += cg->oom_kills(); });
  double per_sample_ns =
      1e9 / rate([&] { sink_value += cg->memory_bytes() + static_cast<uint64_t>(cg->cpu_throttled_seconds()); });
  asm volatile("" : : "r"(sink_value) : "memory");
  double frame_ns = 1e9 / iso_small;
  double per_frame_ns = per_call_ns / static_cast<double>(batch);
  std::printf(
      "cgroup accounting: %.0f ns a call (the OOM count), %.1f us a usage sample (once a second); "
      "per 64 B frame at %zu a call: %.1f ns, %.2f%% of an isolated frame's %.0f ns\n",
      per_call_ns, per_sample_ns / 1e3, batch, per_frame_ns, 100 * per_frame_ns / frame_ns, frame_ns);
  return 0;
}
