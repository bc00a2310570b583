// Runs a pipeline in-process for tests: real plugins, real actors, real executor.
#pragma once

#include "../test_util.hpp"

#include <troupe/catalog.hpp>
#include <troupe/executor.hpp>
#include <troupe/instance.hpp>
#include <troupe/manager.hpp>
#include <troupe/messages.hpp>
#include <troupe/pipeline.hpp>
#include <troupe/stats.hpp>
#include <troupe/worker_launcher.hpp>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include <algorithm>
#include <thread>

#include <unistd.h>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>

namespace troupe::test {

/// Starts this test binary's isolated workers: they are served by the troupe executable, not
/// by the test binary.
inline std::shared_ptr<worker_launcher> test_launcher() {
  static const auto launcher = std::make_shared<worker_launcher>(TROUPE_EXE);
  return launcher;
}

inline caf::actor_system_config& test_config() {
  static caf::actor_system_config cfg = [] {
    caf::actor_system_config c;
    c.set("scheduler.max-threads", size_t{2});
    c.set("logger.verbosity", caf::atom("quiet"));
    return c;
  }();
  return cfg;
}

/// Plans a pipeline written as YAML (paths like {dir} are replaced by the temp dir) with the
/// example plugins; plugins found in `first` shadow them.
inline expected<std::shared_ptr<const plan>> plan_yaml(const temp_dir& dir, std::string yaml,
                                                       const std::string& first = {}) {
  for (size_t p; (p = yaml.find("{dir}")) != std::string::npos;) yaml.replace(p, 5, dir.path().string());
  auto path = dir.write("pipeline.yaml", yaml);
  auto spec = load_pipeline(path);
  if (!spec) return spec.error();
  std::vector<std::string> dirs = {plugin_dir()};
  if (!first.empty()) dirs.insert(dirs.begin(), first);
  auto cat = catalog::discover(dirs);
  auto p = plan_pipeline(*spec, cat);
  if (!p) return p.error();
  return std::make_shared<const plan>(std::move(*p));
}

struct run_result {
  bool completed = false;  // the manager reported an outcome before the deadline
  pipeline_outcome outcome;
  bool stopped = false;
  slot_table slots;
  std::shared_ptr<metrics> m;
  std::shared_ptr<dead_letter_log> dead_letters;
  std::shared_ptr<event_log> events;
  const slot_stats& slot(const std::string& stage, uint32_t replica = 0) const {
    for (auto& s : slots)
      if (s->stage == stage && s->replica == replica) return *s;
    throw std::runtime_error("no slot " + stage);
  }
};

/// What a test can ask of a running pipeline's manager; each answers empty, or why not.
/// The manager's answer to a change: no error (done, or under way), or why not.
inline caf::error answer_of(const expected<void>& e) { return e ? caf::error{} : e.error(); }

struct pipeline_controls {
  std::function<caf::error(const std::string& stage, uint32_t n)> scale;
  std::function<caf::error(reload_request)> reload;
  std::function<caf::error(const std::string& stage, bool paused)> pause;
};

/// What the runtime logs while it lives.
class log_capture {
 public:
  log_capture() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(512)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~log_capture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  /// Whether a line containing text was logged within about two seconds.
  bool saw(const std::string& text) {
    for (int i = 0; i < 200; ++i) {
      for (auto& line : sink_->last_formatted())
        if (line.find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  /// The lines logged so far that contain text, one per line.
  std::string lines_with(const std::string& text) {
    std::string all;
    for (auto& line : sink_->last_formatted())
      if (line.find(text) != std::string::npos) all += line + "\n";
    return all;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
};

/// The node name the tests' managers run as: unique to this test process, so that what a
/// test finds by its workers' tags ("node=... stage=...") is never another test's.
inline const std::string& test_node() {
  static const std::string name = "test-" + std::to_string(::getpid());
  return name;
}

/// Runs until the pipeline completes, `stop_when` returns true or `limit` passes, then
/// stops it. `while_running` is polled every 20 ms with the slots until it returns false
/// (`control`, likewise, with a way to scale and reload stages); `while_stopping` every 2 ms
/// until the manager has stopped.
inline run_result run_pipeline(std::shared_ptr<const plan> p, std::chrono::seconds limit = std::chrono::seconds(30),
                               std::function<bool(const slot_table&)> while_running = {},
                               std::function<void(const slot_table&)> while_stopping = {},
                               std::function<bool(const slot_table&)> stop_when = {},
                               std::function<bool(const slot_table&, const pipeline_controls&)> control = {}) {
  run_result r;
  r.m = std::make_shared<metrics>();
  auto registry = std::make_shared<slot_registry>(*r.m, make_slots(*p, *r.m));
  r.slots = registry->snapshot();
  r.dead_letters = std::make_shared<dead_letter_log>(p->dead_letters);
  r.events = std::make_shared<event_log>();
  caf::actor_system sys{test_config()};
  {
    executor ex(2);
    caf::scoped_actor self{sys};
    manager_setup ms;
    ms.node = test_node();
    ms.plan = p;
    ms.slots = registry;
    auto libs = load_libraries(*p, test_launcher());
    if (!libs) throw std::runtime_error(describe(libs.error()));
    ms.libraries = *libs;
    ms.executor = &ex;
    ms.launcher = test_launcher();
    ms.dead_letters = r.dead_letters;
    ms.events = r.events;
    ms.listener = caf::actor_cast<listener_actor>(self);
    auto mgr = spawn_manager(sys, std::move(ms));
    auto deadline = std::chrono::steady_clock::now() + limit;
    bool polling = static_cast<bool>(while_running), controlling = static_cast<bool>(control);
    pipeline_controls controls{
        [&](const std::string& stage, uint32_t n) { return answer_of(scale_stage(sys, mgr, stage, n)); },
        [&](reload_request req) { return answer_of(reload_stage(sys, mgr, std::move(req))); },
        [&](const std::string& stage, bool paused) { return answer_of(pause_stage(sys, mgr, stage, paused)); }};
    while (!r.completed && std::chrono::steady_clock::now() < deadline) {
      self->receive([&](completed_atom, pipeline_outcome& o) { r.outcome = o, r.completed = true; },
                    caf::after(std::chrono::milliseconds(20)) >> [] {});
      r.slots = registry->snapshot();
      if (polling) polling = while_running(r.slots);
      if (controlling) controlling = control(r.slots, controls);
      if (stop_when && stop_when(r.slots)) break;
    }
    self->send(mgr, stop_atom::value);
    auto stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    bool waiting = true;
    while (waiting && std::chrono::steady_clock::now() < stop_deadline) {
      self->receive([&](stopped_atom) { r.stopped = true, waiting = false; }, [&](completed_atom, pipeline_outcome&) {},
                    caf::after(std::chrono::milliseconds(2)) >> [] {});
      if (while_stopping) while_stopping(r.slots);
    }
    // A manager that did not stop is a failure the test reports; killing it (and, through
    // their links, its instances) keeps the actor system from waiting on it forever.
    EXPECT_TRUE(r.stopped) << "the manager did not stop within 10 s of (stop_atom)";
    if (!r.stopped) self->send_exit(mgr, caf::exit_reason::kill);
  }
  r.slots = registry->snapshot();
  return r;
}

/// One instance of `stage`, outside any manager: it reports to `manager` and sends its
/// outputs to `next` as if that were the only replica of `next_stage`. Started. Either may be
/// the test's own actor, standing in for a manager or a receiver.
template <class Manager, class Next>
instance_actor spawn_started_instance(caf::actor_system& sys, std::shared_ptr<const plan> p,
                                      const std::vector<std::shared_ptr<plugin_library>>& libs, const slot_table& slots,
                                      executor& ex, size_t stage, const Manager& manager, const Next& next) {
  instance_setup s;
  s.slot = stage;
  s.stage = stage;
  s.plan = p;
  s.stats = slots[stage];
  s.library = libs[stage];
  s.executor = &ex;
  s.launcher = test_launcher();
  s.manager = caf::actor_cast<supervisor_actor>(manager);
  s.routes.edges.push_back(make_edge(stage + 1, route_policy::round_robin, {{caf::actor_cast<receiver_actor>(next)}}));
  auto a = spawn_instance(sys, std::move(s));
  caf::anon_send(a, start_atom::value);
  return a;
}

/// Every input a slot took is accounted for exactly once.
inline void expect_books_balance(const slot_stats& s) {
  EXPECT_EQ(s.frames_in.Value(), s.frames_completed.Value() + s.frames_filtered.Value() + s.errors.Value() +
                                     s.dead_letters.Value() + s.frames_abandoned.Value() + s.queue_depth.Value())
      << s.name() << ": in " << s.frames_in.Value() << " completed " << s.frames_completed.Value() << " filtered "
      << s.frames_filtered.Value() << " failed " << s.errors.Value() << " dead " << s.dead_letters.Value()
      << " abandoned " << s.frames_abandoned.Value() << " held " << s.queue_depth.Value();
}

/// The checksum plugin's frames log: (stream, seq, part) -> payload hash, and how many
/// lines named a frame already named.
struct frames_log {
  std::map<std::tuple<uint64_t, uint64_t, uint32_t>, std::string> hashes;
  size_t repeated = 0;
};
inline frames_log read_frames_log(const std::string& path) {
  frames_log log;
  std::ifstream in(path);
  uint64_t stream, seq;
  uint32_t part;
  std::string hash;
  while (in >> stream >> seq >> part >> hash)
    if (!log.hashes.emplace(std::make_tuple(stream, seq, part), hash).second) ++log.repeated;
  return log;
}

/// Reads "key value" pairs of the checksum plugin's summary line that starts with `first`.
inline std::map<std::string, std::string> checksum_line(const std::string& path, const std::string& first) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(first, 0) != 0) continue;
    std::istringstream words(line);
    std::map<std::string, std::string> kv;
    std::string k, v;
    if (first == "total") words >> k;  // "total frames N bytes B duplicates D"
    while (words >> k >> v) kv[k] = v;
    return kv;
  }
  return {};
}

}  // namespace troupe::test
