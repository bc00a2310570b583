// troupe run: a pipeline in this process, with live progress and a summary.
#include "commands.hpp"
#include "loading.hpp"

#include <cluster/metrics_endpoint.hpp>

#include <troupe/admission.hpp>
#include <troupe/dead_letters.hpp>
#include <troupe/events.hpp>
#include <troupe/executor.hpp>
#include <troupe/manager.hpp>
#include <troupe/messages.hpp>
#include <troupe/stats.hpp>
#include <troupe/system_config.hpp>

#include <prometheus/exposer.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <utility>

namespace troupe::cli {

namespace {

std::atomic<int> interrupted{0};    // the last SIGINT or SIGTERM
std::atomic<int> interrupts{0};     // how many of them
std::atomic<int> scale_signals{0};  // replicas to add (SIGUSR1) or remove (SIGUSR2), not yet asked for

void on_signal(int sig) {
  interrupted.store(sig);
  interrupts.fetch_add(1);
}

const char* signal_name(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal"; }
void on_scale_signal(int sig) { scale_signals.fetch_add(sig == SIGUSR1 ? 1 : -1); }

// Control commands typed on the terminal (or written to stdin), one per line.
class command_reader {
 public:
  command_reader() : thread_([this] { loop(); }) {}
  ~command_reader() {
    done_.store(true);
    thread_.join();
  }
  std::vector<std::string> take() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::exchange(lines_, {});
  }

 private:
  void loop() {
    std::string partial;
    char buf[512];
    while (!done_.load()) {
      pollfd pfd{STDIN_FILENO, POLLIN, 0};
      int n = poll(&pfd, 1, 100);
      if (n <= 0) continue;
      auto got = read(STDIN_FILENO, buf, sizeof buf);
      if (got <= 0) return;  // end of input: no more commands
      partial.append(buf, static_cast<size_t>(got));
      for (size_t nl; (nl = partial.find('\n')) != std::string::npos; partial.erase(0, nl + 1)) {
        std::lock_guard<std::mutex> lock(mutex_);
        lines_.push_back(partial.substr(0, nl));
      }
    }
  }
  std::atomic<bool> done_{false};
  std::mutex mutex_;
  std::vector<std::string> lines_;
  std::thread thread_;
};

using clock = std::chrono::steady_clock;

// Frames a slot has taken (or, for a source, made): what its rate is measured in.
double throughput_count(const slot_stats& s) {
  return s.frames_in.Value() > 0 ? s.frames_in.Value() : s.frames_out.Value();
}

struct rate_tracker {
  std::map<std::string, double> last_count;  // per line
  clock::time_point last = clock::now();
  size_t lines = 0;  // drawn last time (scaling changes the number of instances)
};

std::string state_text(const slot_stats& s) {
  auto st = status_of(s.state.load(), s.quarantined.load(), s.finished.load(), s.paused.load());
  std::string t = to_string(st);
  auto f = s.failure.load();
  if (st == instance_status::failed && f != failure_class::none) t += "(" + std::string(to_string(f)) + ")";
  return t;
}

// One line of the progress view or the summary: an instance, or a stage's instances together.
struct summary_row {
  std::string name, plugin, mode, state, last_error;
  uint64_t generation = 0;
  size_t instances = 0;
  double in = 0, done = 0, filtered = 0, failed = 0, dead = 0, resent = 0, held = 0, out = 0, restarts = 0, stale = 0,
         duplicates = 0, throughput = 0;
};

// Up to this many instances, the progress view and the summary show each; past it, one line per
// stage (`troupe run --instances` shows each whatever their number).
constexpr size_t instances_shown = 64;

// The lines to show of these slots: one per slot, or one per stage (in the order of their
// first slots) with the counts added up, the highest generation, and the state all share (else
// the most common one, with how many are in it).
std::vector<summary_row> summary_rows(const slot_table& slots, bool per_instance) {
  std::vector<summary_row> rows;
  std::map<std::string, size_t> row_of;
  std::map<std::string, std::map<std::string, size_t>> states;  // per row: instances per state
  for (auto& s : slots) {
    auto key = per_instance ? s->name() : s->stage;
    auto [it, fresh] = row_of.emplace(key, rows.size());
    if (fresh) {
      rows.emplace_back();
      rows.back().name = key;
      rows.back().plugin = s->plugin;
      rows.back().mode = to_string(s->mode);
    }
    auto& r = rows[it->second];
    ++r.instances;
    ++states[key][state_text(*s)];
    if (r.mode != to_string(s->mode)) r.mode = "mixed";
    r.generation = std::max(r.generation, s->generation.load());
    r.in += s->frames_in.Value();
    r.done += s->frames_completed.Value();
    r.filtered += s->frames_filtered.Value();
    r.failed += s->errors.Value();
    r.dead += s->dead_letters.Value();
    r.resent += s->frames_abandoned.Value();
    r.held += s->queue_depth.Value();
    r.out += s->frames_out.Value();
    r.restarts += s->restarts.Value();
    r.stale += s->stale_dropped.Value();
    r.duplicates += s->duplicates.Value();
    r.throughput += throughput_count(*s);
    auto err = s->last_error();
    if (r.last_error.empty() && !err.empty() && (s->failure.load() != failure_class::none || s->quarantined.load()))
      r.last_error = per_instance ? err : s->name() + ": " + err;
  }
  for (auto& r : rows) {
    auto& by_state = states[r.name];
    auto most =
        std::max_element(by_state.begin(), by_state.end(), [](auto& a, auto& b) { return a.second < b.second; });
    r.state = most->first;
    if (by_state.size() > 1) r.state += " " + std::to_string(most->second) + "/" + std::to_string(r.instances);
    if (!per_instance) r.name += " (" + std::to_string(r.instances) + ")";
  }
  return rows;
}

void print_progress(const slot_table& slots, rate_tracker& rt, double elapsed, bool redraw, bool per_instance) {
  auto now = clock::now();
  double dt = std::chrono::duration<double>(now - rt.last).count();
  rt.last = now;
  if (redraw) std::printf("\x1b[%zuA", rt.lines);
  auto rows = summary_rows(slots, per_instance || slots.size() <= instances_shown);
  rt.lines = rows.size() + 1;
  std::printf("\x1b[K%8.1fs  %-18s %-12s %4s %10s %10s %9s %8s\n", elapsed, "INSTANCE", "STATE", "GEN", "IN", "OUT",
              "FRAMES/s", "RESTARTS");
  for (auto& r : rows) {
    double rate = dt > 0 ? (r.throughput - rt.last_count[r.name]) / dt : 0;
    rt.last_count[r.name] = r.throughput;
    std::printf("\x1b[K          %-18s %-12s %4llu %10.0f %10.0f %9.1f %8.0f\n", r.name.c_str(), r.state.c_str(),
                static_cast<unsigned long long>(r.generation), r.in, r.out, rate, r.restarts);
  }
  std::fflush(stdout);
}

// How a run ended, for the summary, the report and the exit status.
struct run_end {
  bool ok = false;        // finished, and every instance stopped cleanly
  bool finished = false;  // the pipeline completed (its sinks finished)
  std::string reason;     // why not ok, or how an interrupted run ended
  std::string drained;    // "SIGINT" if the run was drained on a signal
  int cut_by = 0;         // the signal that stopped it without a drain
};

// Input frames the sinks took: the pipeline's throughput.
double sinks_took(const plan& p, const slot_table& slots) {
  double n = 0;
  for (auto& s : slots)
    if (auto* st = p.find(s->stage); st && st->downstream.empty()) n += s->frames_in.Value();
  return n;
}

// Frames that failed or were given up on: what --fail-on-errors counts.
double failed_frames(const slot_table& slots) {
  double n = 0;
  for (auto& s : slots) n += s->errors.Value() + s->dead_letters.Value();
  return n;
}

void print_summary(const plan& p, const slot_table& slots, double wall, const run_end& end,
                   const std::vector<dead_letter>& dead, bool per_instance) {
  std::string how = end.drained.empty() ? "" : " (drained on " + end.drained + ")";
  std::printf("\npipeline '%s' %s in %.2f s%s%s%s\n", p.name.c_str(), end.ok ? "finished" : "FAILED", wall, how.c_str(),
              end.reason.empty() ? "" : ": ", end.reason.c_str());
  // The books per instance (or stage): IN = DONE + FILT + FAIL + DEAD + RESENT + HELD. OUT
  // counts outputs.
  per_instance = per_instance || slots.size() <= instances_shown;
  std::printf("%-18s %-12s %-9s %-13s %4s %8s %8s %6s %5s %5s %6s %5s %8s %8s %6s %5s %9s\n",
              per_instance ? "INSTANCE" : "STAGE (INSTANCES)", "PLUGIN", "MODE", "STATE", "GEN", "IN", "DONE", "FILT",
              "FAIL", "DEAD", "RESENT", "HELD", "OUT", "RESTARTS", "STALE", "DUPS", "FRAMES/s");
  for (auto& r : summary_rows(slots, per_instance)) {
    std::printf(
        "%-18s %-12s %-9s %-13s %4llu %8.0f %8.0f %6.0f %5.0f %5.0f %6.0f %5.0f %8.0f %8.0f %6.0f %5.0f %9.1f\n",
        r.name.c_str(), r.plugin.c_str(), r.mode.c_str(), r.state.c_str(),
        static_cast<unsigned long long>(r.generation), r.in, r.done, r.filtered, r.failed, r.dead, r.resent, r.held,
        r.out, r.restarts, r.stale, r.duplicates, wall > 0 ? r.throughput / wall : 0.0);
    if (!r.last_error.empty()) std::printf("%-18s last error: %s\n", "", r.last_error.c_str());
  }
  if (!per_instance)
    std::printf("%zu instances, one line per stage (troupe run --instances shows each)\n", slots.size());
  double sink_in = sinks_took(p, slots);
  std::printf("sinks took %.0f frames: %.1f frames/s\n", sink_in, wall > 0 ? sink_in / wall : 0.0);
  if (!dead.empty()) {
    std::printf("%zu dead letter%s%s%s:\n", dead.size(), dead.size() == 1 ? "" : "s",
                p.dead_letters.empty() ? "" : ", recorded in ", p.dead_letters.c_str());
    for (auto& d : dead)
      std::printf("  stage %s (%s): stream %llu seq %llu part %u, %s %u times: %s\n", d.stage.c_str(), d.plugin.c_str(),
                  static_cast<unsigned long long>(d.frame.stream), static_cast<unsigned long long>(d.frame.seq),
                  d.frame.part, d.failure.c_str(), d.losses, d.error.c_str());
  }
  std::fflush(stdout);
}

// The summary as JSON: the table's columns under their own names (lower case; FRAMES/s is
// frames_per_s), counts as integers.
expected<void> write_report(const std::string& path, const plan& p, const slot_table& slots, double wall,
                            const run_end& end, const std::vector<dead_letter>& dead) {
  using json = nlohmann::ordered_json;
  auto total = [](const auto& metric) { return static_cast<int64_t>(metric.Value()); };
  json instances = json::array();
  for (auto& sp : slots) {
    auto& s = *sp;
    instances.push_back({{"instance", s.name()},
                         {"stage", s.stage},
                         {"replica", s.replica},
                         {"plugin", s.plugin},
                         {"mode", to_string(s.mode)},
                         {"state", state_text(s)},
                         {"failure", to_string(s.failure.load())},
                         {"quarantined", s.quarantined.load()},
                         {"gen", s.generation.load()},
                         {"in", total(s.frames_in)},
                         {"done", total(s.frames_completed)},
                         {"filt", total(s.frames_filtered)},
                         {"fail", total(s.errors)},
                         {"dead", total(s.dead_letters)},
                         {"resent", total(s.frames_abandoned)},
                         {"held", total(s.queue_depth)},
                         {"out", total(s.frames_out)},
                         {"restarts", total(s.restarts)},
                         {"stale", total(s.stale_dropped)},
                         {"dups", total(s.duplicates)},
                         {"frames_per_s", wall > 0 ? throughput_count(s) / wall : 0.0},
                         {"bytes_in", total(s.bytes_in)},
                         {"bytes_out", total(s.bytes_out)},
                         {"processing_seconds", s.processing.sum()},
                         {"last_error", s.last_error()}});
  }
  json letters = json::array();
  for (auto& d : dead)
    letters.push_back({{"stage", d.stage},
                       {"plugin", d.plugin},
                       {"stream", d.frame.stream},
                       {"seq", d.frame.seq},
                       {"part", d.frame.part},
                       {"failure", d.failure},
                       {"losses", d.losses},
                       {"error", d.error}});
  json report = {{"pipeline", p.name},
                 {"ok", end.ok},
                 {"finished", end.finished},
                 {"reason", end.reason},
                 {"drained_on", end.drained.empty() ? json(nullptr) : json(end.drained)},
                 {"cut_by", end.cut_by ? json(signal_name(end.cut_by)) : json(nullptr)},
                 {"wall_seconds", wall},
                 {"sinks_took", static_cast<int64_t>(sinks_took(p, slots))},
                 {"instances", std::move(instances)},
                 {"dead_letters", std::move(letters)}};
  // Replace the file whole: a reader never sees half a report.
  auto tmp = path + ".part";
  {
    std::ofstream out(tmp);
    out << report.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    out.close();
    if (!out)
      return make_error(errc::io_error, "--report " + path + ": cannot write " + tmp + ": " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return make_error(errc::io_error, "--report " + path + ": cannot replace it: " + std::strerror(errno));
  return {};
}

}  // namespace

int run(const common_options& common, const run_options& opts) {
  // From the start: a signal while the pipeline loads drains it as soon as it runs.
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  auto lp = load(common, opts.pipeline);
  if (!lp) {
    std::fprintf(stderr, "troupe: %s\n", describe(lp.error()).c_str());
    return 1;
  }
  auto plan = lp->plan;
  // What the stages ask for must fit this machine.
  const auto capacity = machine_capacity();
  {
    resources_amount held;
    if (auto r = admit(capacity, held, *plan, "local"); !r) {
      std::fprintf(stderr, "troupe: %s: %s\n", opts.pipeline.c_str(), describe(r.error()).c_str());
      return 1;
    }
  }
  if (!opts.report_path.empty()) {
    // A report that cannot be written is said now, not after the run.
    std::ofstream probe(opts.report_path, std::ios::app);
    if (!probe) {
      std::fprintf(stderr, "troupe: --report %s: cannot write it: %s\n", opts.report_path.c_str(),
                   std::strerror(errno));
      return 1;
    }
  }
  auto cores = std::max(2u, std::thread::hardware_concurrency());

  metrics m;
  auto registry = std::make_shared<slot_registry>(m, make_slots(*plan, m));
  std::unique_ptr<prometheus::Exposer> exposer;
  if (!opts.metrics_address.empty()) {
    try {
      exposer = cluster::serve_metrics(opts.metrics_address);
      exposer->RegisterCollectable(m.collectable());
      spdlog::info("serving metrics on http://{}/metrics", cluster::metrics_bind_address(opts.metrics_address));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "troupe: --metrics %s: cannot listen: %s\n", opts.metrics_address.c_str(), e.what());
      return 1;
    }
  }

  auto dead = std::make_shared<dead_letter_log>(plan->dead_letters);
  auto events = std::make_shared<event_log>();
  if (!opts.events_path.empty())
    if (auto why = events->write_to(opts.events_path); !why.empty()) {
      std::fprintf(stderr, "troupe: --events %s\n", why.c_str());
      return 1;
    }
  caf::actor_system_config cfg;
  configure_actor_system(cfg, cores);
  run_end end;
  pipeline_outcome outcome;
  double wall = 0;
  {
    caf::actor_system sys{cfg};
    executor ex(cores);
    caf::scoped_actor self{sys};
    manager_setup ms;
    ms.plan = plan;
    ms.slots = registry;
    ms.libraries = lp->libraries;
    ms.executor = &ex;
    ms.launcher = lp->launcher;
    ms.dead_letters = dead;
    ms.events = events;
    ms.listener = caf::actor_cast<listener_actor>(self);  // this thread hears the outcome
    auto start = clock::now();
    auto manager = spawn_manager(sys, std::move(ms));

    if (!opts.scale_stage.empty()) {
      std::signal(SIGUSR1, on_scale_signal);
      std::signal(SIGUSR2, on_scale_signal);
    }
    command_reader commands;
    // Asks the manager for n replicas of stage and says what came of it.
    auto scale = [&](const std::string& stage, uint32_t n) {
      if (auto* s = plan->find(stage)) {
        auto slots = registry->snapshot();
        auto serving = serving_replicas(slots, stage);
        if (n > serving)
          if (auto r = admit_replicas(capacity, held_by(*plan, slots), *s, n - serving, "local"); !r) {
            spdlog::error("cannot scale stage '{}' to {}: {}", stage, n, describe(r.error()));
            return;
          }
      }
      if (auto answer = scale_stage(sys, manager, stage, n))
        spdlog::info("scaling stage '{}' to {} replicas", stage, n);
      else
        spdlog::error("cannot scale stage '{}' to {}: {}", stage, n, describe(answer.error()));
    };
    // A reload answers once the new version serves (or failed): it waits on a thread of
    // its own, so the run goes on meanwhile. A finished thread is joined at the next reload
    // (until then it keeps its stack: a run reloaded a thousand times would keep a thousand).
    struct reload_thread {
      std::thread thread;
      std::shared_ptr<std::atomic<bool>> done;
    };
    std::vector<reload_thread> reloads;
    auto reload = [&](reload_request req) {
      reloads.erase(std::remove_if(reloads.begin(), reloads.end(),
                                   [](reload_thread& t) {
                                     if (!t.done->load()) return false;
                                     t.thread.join();
                                     return true;
                                   }),
                    reloads.end());
      auto done = std::make_shared<std::atomic<bool>>(false);
      reloads.push_back({std::thread([&sys, manager, done, req = std::move(req)]() mutable {
                           auto stage = req.stage;
                           if (auto answer = reload_stage(sys, manager, std::move(req)))
                             spdlog::info("stage '{}' reloaded", stage);
                           else
                             spdlog::error("stage '{}' not reloaded: {}", stage, describe(answer.error()));
                           done->store(true);
                         }),
                         done});
    };
    bool live = opts.progress && isatty(STDOUT_FILENO);
    bool drawn = false, stop_sent = false, stopped = false;
    rate_tracker rt;
    auto next_draw = clock::now();
    while (!stopped) {
      self->receive(
          [&](completed_atom, pipeline_outcome& o) {
            if (end.cut_by == 0) outcome = std::move(o);
            end.finished = outcome.ok;
            if (!stop_sent) self->send(manager, stop_atom::value);
            stop_sent = true;
          },
          [&](stopped_atom) { stopped = true; }, caf::after(std::chrono::milliseconds(100)) >> [] {});
      auto now = clock::now();
      double elapsed = std::chrono::duration<double>(now - start).count();
      // The first SIGINT or SIGTERM drains: the sources end their streams and what they
      // made flows through. A second one stops at once; what is in flight is not delivered.
      if (int n = interrupts.load(); n > 0 && !stop_sent) {
        auto sig = signal_name(interrupted.load());
        if (n == 1 && end.drained.empty()) {
          end.drained = sig;
          spdlog::warn("{}: draining pipeline '{}' (the sources end their streams); {} again stops it at once", sig,
                       plan->name, sig == std::string("SIGINT") ? "Ctrl-C" : sig);
          self->send(manager, end_atom::value);
        } else if (n > 1) {
          end.cut_by = interrupted.load();
          end.drained.clear();
          outcome = {false, std::string("stopped on a second ") + sig + ", without draining"};
          self->send(manager, stop_atom::value);
          stop_sent = true;
        }
      }
      if (!stop_sent && opts.timeout_s > 0 && elapsed > opts.timeout_s) {
        outcome = {false, "timed out after " + std::to_string(opts.timeout_s) + " s (--timeout)"};
        self->send(manager, stop_atom::value);
        stop_sent = true;
      }
      for (auto& line : commands.take()) {
        std::istringstream in(line);
        std::string word, stage, extra;
        long n = -1;
        in >> word;
        if (word.empty()) continue;
        if (word == "scale" && (in >> stage >> n) && !(in >> extra) && n >= 0) {
          scale(stage, static_cast<uint32_t>(n));
        } else if ((word == "pause" || word == "resume") && (in >> stage) && !(in >> extra)) {
          if (auto answer = pause_stage(sys, manager, stage, word == "pause"))
            spdlog::info("stage '{}' {}", stage, word == "pause" ? "paused" : "resumed");
          else
            spdlog::error("cannot {} stage '{}': {}", word, stage, describe(answer.error()));
        } else if (word == "reload" && (in >> stage)) {
          reload_request req;
          req.stage = stage;
          bool ok = true;
          for (std::string arg; in >> arg;) {
            auto eq = arg.find('=');
            if (eq != std::string::npos)
              req.config.emplace_back(arg.substr(0, eq), arg.substr(eq + 1));
            else if (req.manifest.empty())
              req.manifest = arg;
            else
              ok = false;
          }
          if (ok)
            reload(std::move(req));
          else
            spdlog::error("reload: one manifest at most (expected: reload STAGE [PLUGIN_YAML] [KEY=VALUE...])");
        } else {
          spdlog::error(
              "unknown command '{}' (expected: scale STAGE REPLICAS, pause STAGE, resume STAGE, or reload STAGE "
              "[PLUGIN_YAML] [KEY=VALUE...])",
              line);
        }
      }
      if (int k = scale_signals.exchange(0); k != 0 && !stop_sent) {
        auto now_serving = static_cast<int>(serving_replicas(registry->snapshot(), opts.scale_stage));
        scale(opts.scale_stage, static_cast<uint32_t>(std::max(0, now_serving + k)));
      }
      if (live && now >= next_draw) {
        print_progress(registry->snapshot(), rt, elapsed, drawn, opts.instances);
        drawn = true;
        next_draw = now + std::chrono::milliseconds(500);
      }
    }
    for (auto& t : reloads) t.thread.join();
    wall = std::chrono::duration<double>(clock::now() - start).count();
    if (live) print_progress(registry->snapshot(), rt, wall, drawn, opts.instances);
    end.ok = end.finished;
    auto slots = registry->snapshot();
    for (auto& s : slots)
      if (s->quarantined.load() || s->failure.load() == failure_class::teardown_failed) end.ok = false;
    if (end.finished && !end.ok && outcome.reason.empty()) outcome.reason = "an instance failed to stop cleanly";
  }
  end.reason = outcome.reason;
  auto slots = registry->snapshot();
  auto dead_letters = dead->records();
  print_summary(*plan, slots, wall, end, dead_letters, opts.instances);
  int status = end.cut_by ? 128 + end.cut_by : end.ok ? 0 : 1;
  if (status == 0 && opts.fail_on_errors && failed_frames(slots) > 0) {
    std::fprintf(stderr, "troupe: %.0f frames failed or were given up on (--fail-on-errors)\n", failed_frames(slots));
    status = 3;
  }
  if (!opts.report_path.empty()) {
    if (auto written = write_report(opts.report_path, *plan, slots, wall, end, dead_letters); !written) {
      std::fprintf(stderr, "troupe: %s\n", describe(written.error()).c_str());
      if (status == 0) status = 1;
    }
  }
  return status;
}

}  // namespace troupe::cli
