// Frames/s through a chain of three local pass-through plugin instances (the real instance
// actors, executor, router, credits and acknowledgements), next to a bare CAF chain of
// three forwarding actors carrying the same reference-counted payload, in the same run.
// Then frames/s through one pass-through stage, embedded against isolated (a worker
// process), through the same instance actors. Prints figures; asserts nothing.
// Usage: chain_bench [frames_small] [frames_large]
#include "bench_actors.hpp"

#include <troupe/catalog.hpp>
#include <troupe/executor.hpp>
#include <troupe/instance.hpp>
#include <troupe/isolated_adapter.hpp>
#include <troupe/manager.hpp>
#include <troupe/messages.hpp>
#include <troupe/pipeline.hpp>

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

using namespace troupe;
using namespace troupe::bench;

namespace {

// Isolated workers are served by the troupe executable, not by this benchmark.
std::shared_ptr<worker_launcher> launcher() {
  static const auto l = std::make_shared<worker_launcher>(TROUPE_EXE);
  return l;
}

struct payload_ref {
  std::shared_ptr<const buffer> bytes;
};

}  // namespace

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(payload_ref)

namespace {

// -- bare CAF -------------------------------------------------------------------------------

caf::behavior forwarder(caf::event_based_actor* self, caf::actor next) {
  return {[=](const payload_ref& p) { self->send(next, p); }};
}

caf::behavior counting_sink(caf::event_based_actor* self, uint64_t expected, caf::actor report) {
  auto count = std::make_shared<uint64_t>(0);
  return {[=](const payload_ref&) {
    if (++*count == expected) self->send(report, done_atom::value);
  }};
}

double bare_chain(caf::actor_system& sys, const std::shared_ptr<const buffer>& payload, uint64_t n) {
  caf::scoped_actor self{sys};
  auto sink = sys.spawn(counting_sink, n, caf::actor(self));
  auto a3 = sys.spawn(forwarder, sink);
  auto a2 = sys.spawn(forwarder, a3);
  auto a1 = sys.spawn(forwarder, a2);
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < n; ++i) self->send(a1, payload_ref{payload});
  self->receive([](done_atom) {});
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (auto& a : {a1, a2, a3, sink}) self->send_exit(a, caf::exit_reason::user_shutdown);
  return n / s;
}

// -- Troupe ---------------------------------------------------------------------------------

double troupe_chain(caf::actor_system& sys, const std::shared_ptr<const plan>& p,
                    const std::vector<std::shared_ptr<plugin_library>>& libs, executor& ex,
                    const std::shared_ptr<const buffer>& payload, uint64_t n) {
  metrics m;
  auto slots = make_slots(*p, m);
  caf::scoped_actor self{sys};
  auto count = std::make_shared<uint64_t>(0);
  auto sink = sys.spawn(acking_sink, std::function<void(uint64_t)>([count, n, report = caf::actor(self)](uint64_t k) {
                          if (*count < n && (*count += k) >= n) caf::anon_send(report, done_atom::value);
                        }));
  // Stages: 0 source (driven by the feeder instead), 1..k pass-through, k+1 sink.
  const size_t k = p->stages.size() - 2;
  auto next = caf::actor_cast<receiver_actor>(sink);
  std::vector<instance_actor> instances;
  for (size_t stage = k; stage >= 1; --stage) {
    instance_setup s;
    s.slot = stage;
    s.stage = stage;
    s.plan = p;
    s.stats = slots[stage];
    s.library = libs[stage];
    s.executor = &ex;
    s.launcher = launcher();
    s.manager = caf::actor_cast<supervisor_actor>(self);
    s.routes.edges.push_back(make_edge(stage + 1, route_policy::round_robin, {{next}}));
    auto a = spawn_instance(sys, std::move(s));
    self->send(a, start_atom::value);
    instances.push_back(a);
    next = a;
  }
  int reports = 0;
  self->receive_for(reports, static_cast<int>(2 * k))([](report_atom, instance_report&) {});  // started + running
  auto feed = sys.spawn(feeder, next, payload, p->window, n);
  auto t0 = std::chrono::steady_clock::now();
  self->send(feed, go_atom::value);
  self->receive([](done_atom) {});
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Stopped, not killed: no plugin call may still run when the metrics go away.
  for (auto& a : instances) self->send(a, stop_atom::value);
  for (auto& a : instances) self->wait_for(a);
  self->send_exit(sink, caf::exit_reason::user_shutdown);
  self->send_exit(feed, caf::exit_reason::user_shutdown);
  return n / s;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t n_small = argc > 1 ? std::stoull(argv[1]) : 200000;
  uint64_t n_large = argc > 2 ? std::stoull(argv[2]) : 20000;
  spdlog::set_level(spdlog::level::warn);
  auto dir = std::filesystem::temp_directory_path() / "troupe-bench";
  std::filesystem::create_directories(dir);
  auto cat = catalog::discover({TROUPE_PLUGIN_OUTPUT_DIR});
  struct loaded {
    std::shared_ptr<const plan> p;
    std::vector<std::shared_ptr<plugin_library>> libs;
  };
  auto load = [&](const std::string& name, const std::string& middle, const std::string& edges,
                  const std::string& head = "") -> std::optional<loaded> {
    auto path = (dir / (name + ".yaml")).string();
    std::ofstream(path) << "pipeline: bench\n"
                        << head << "stages:\n  - {name: src, plugin: testsrc}\n"
                        << middle << "  - {name: sink, plugin: checksum, config: {output: /dev/null}}\nedges: [\""
                        << edges << "\"]\n";
    auto spec = load_pipeline(path);
    auto planned = spec ? plan_pipeline(*spec, cat) : expected<plan>(spec.error());
    if (!planned) {
      std::fprintf(stderr, "chain_bench: %s\n", describe(planned.error()).c_str());
      return std::nullopt;
    }
    auto p = std::make_shared<const plan>(std::move(*planned));
    auto libs = load_libraries(*p, launcher());
    if (!libs) {
      std::fprintf(stderr, "chain_bench: %s\n", describe(libs.error()).c_str());
      return std::nullopt;
    }
    return loaded{p, std::move(*libs)};
  };
  const std::string three =
      "  - {name: p1, plugin: passthrough}\n  - {name: p2, plugin: passthrough}\n"
      "  - {name: p3, plugin: passthrough}\n";
  auto chain = load("chain", three, "src -> p1 -> p2 -> p3 -> sink");  // the default credits
  // The same frame window with the byte limit lifted: 6 MB frames get as many credits as
  // 64 B ones, so the two rates compare the cost per frame, not the limit.
  auto unlimited = load("unlimited", three, "src -> p1 -> p2 -> p3 -> sink", "window_bytes: 2GiB\n");
  auto one_embedded = load("embedded", "  - {name: p1, plugin: passthrough}\n", "src -> p1 -> sink");
  auto one_isolated = load("isolated", "  - {name: p1, plugin: passthrough, mode: isolated}\n", "src -> p1 -> sink");
  // Narrower frame windows, to show what the batch a window allows is worth.
  std::vector<std::pair<uint32_t, std::optional<loaded>>> narrow;
  for (uint32_t w : {16u, 64u, 128u})
    narrow.emplace_back(w, load("window" + std::to_string(w), three, "src -> p1 -> p2 -> p3 -> sink",
                                "window: " + std::to_string(w) + "\n"));
  for (auto& [w, l] : narrow)
    if (!l) return 1;
  if (!chain || !unlimited || !one_embedded || !one_isolated) return 1;
  auto cores = std::max(2u, std::thread::hardware_concurrency());
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", static_cast<size_t>(cores));
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  executor ex(cores);

  auto median_of_3 = [](auto&& run) {
    std::vector<double> v;
    for (int i = 0; i < 3; ++i) v.push_back(run());
    std::sort(v.begin(), v.end());
    return v[1];
  };
  const std::tuple<const char*, size_t, uint64_t> sizes[] = {{"64 B", size_t{64}, n_small},
                                                             {"6 MB", size_t{6} << 20, n_large}};
  auto filled = [](size_t size) {
    auto buf = buffer::allocate(size);
    std::fill(buf->data(), buf->data() + size, uint8_t{1});
    return std::shared_ptr<const buffer>(buf);
  };
  std::printf("3-stage local chain, %u cores, window %u frames, median of 5 runs in turns with the bare chain\n", cores,
              chain->p->window);
  std::printf("%-8s %11s %14s %14s %8s\n", "payload", "byte limit", "bare CAF fr/s", "troupe fr/s", "ratio");
  auto mib = [](const loaded& l) { return std::to_string(l.p->window_bytes >> 20) + " MiB"; };
  double same_credits[2] = {0, 0};
  double bare_small = 0;
  for (size_t k = 0; k < 2; ++k) {
    auto [label, size, n] = sizes[k];
    auto payload = filled(size);
    auto& l = k == 0 ? *chain : *unlimited;
    // Taken in turns, five of each, so that a slow or fast spell of the machine falls on both.
    std::vector<double> bares, ourses;
    for (int i = 0; i < 5; ++i) {
      bares.push_back(bare_chain(sys, payload, n));
      ourses.push_back(troupe_chain(sys, l.p, l.libs, ex, payload, n));
    }
    std::sort(bares.begin(), bares.end());
    std::sort(ourses.begin(), ourses.end());
    double bare = bares[2], ours = ourses[2];
    same_credits[k] = ours;
    if (k == 0) bare_small = bare;
    std::printf("%-8s %11s %14.0f %14.0f %7.1f%%\n", label, mib(l).c_str(), bare, ours, 100 * ours / bare);
  }
  {
    auto payload = filled(std::get<1>(sizes[1]));
    double ours = median_of_3([&] { return troupe_chain(sys, chain->p, chain->libs, ex, payload, n_large); });
    std::printf("%-8s %11s %14s %14.0f  (%.0f GB/s of payload handed on)\n", "6 MB", mib(*chain).c_str(), "", ours,
                ours * static_cast<double>(std::get<1>(sizes[1])) / 1e9);
  }
  std::printf("6 MB frames/s at the 64 B frames' credits: %.1f%% of the 64 B rate\n",
              100 * same_credits[1] / same_credits[0]);
  {
    auto payload = filled(std::get<1>(sizes[0]));
    for (auto& [w, l] : narrow) {
      double ours = median_of_3([&] { return troupe_chain(sys, l->p, l->libs, ex, payload, n_small); });
      std::printf("64 B, window %3u frames: %8.0f fr/s, %5.1f%% of the bare chain above\n", w, ours,
                  100 * ours / bare_small);
    }
  }
  std::printf("\none pass-through stage, embedded and isolated (worker process), median of 3 runs\n");
  std::printf("%-8s %14s %14s %8s\n", "payload", "embedded fr/s", "isolated fr/s", "ratio");
  for (auto [label, size, n] : sizes) {
    auto buf = buffer::allocate(size);
    std::fill(buf->data(), buf->data() + size, uint8_t{1});
    std::shared_ptr<const buffer> payload = buf;
    double emb = median_of_3([&] { return troupe_chain(sys, one_embedded->p, one_embedded->libs, ex, payload, n); });
    double iso = median_of_3([&] { return troupe_chain(sys, one_isolated->p, one_isolated->libs, ex, payload, n); });
    std::printf("%-8s %14.0f %14.0f %7.1f%%\n", label, emb, iso, 100 * iso / emb);
  }
  return 0;
}
