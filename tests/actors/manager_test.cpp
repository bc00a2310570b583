// The manager alone, step by step on CAF's deterministic test coordinator: its instances are
// stand-ins the test drives (they report only what the test makes them report), and time
// moves only when the test moves it. No sleeps, no polling, no threads.
#include "pipeline_runner.hpp"

#include <troupe/admission.hpp>

#include <caf/scheduler/test_coordinator.hpp>

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

using namespace troupe;
using namespace troupe::test;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

// What the stand-in instances saw, in order: "start f gen 1", "stop sink gen 1", ...
struct stand_ins {
  struct one {
    instance_setup setup;
    instance_actor actor;
  };
  std::vector<one> spawned;
  std::vector<std::string> events;
  // The routes each was given, newest last: per receiver "l" (live), "d" (draining) or "-"
  // (not running), e.g. "src gen 1 -> dl".
  std::vector<std::string> routes;
};

std::string name_of(const instance_setup& s) {
  auto& stage = s.plan->stages[s.stage].spec.name;
  return s.replica == 0 ? stage : stage + "#" + std::to_string(s.replica);
}

// What an instance of that setup reports to its manager.
instance_report report_of(const instance_setup& s, instance_state st, failure_class f = failure_class::none,
                          std::string error = {}) {
  instance_report r;
  r.slot = s.slot;
  r.generation = s.generation;
  r.state = st;
  r.failure = f;
  r.error = std::move(error);
  return r;
}

// An instance that does nothing by itself: the test makes it report. It takes the whole
// instance protocol, as the manager may say anything of it to a slot.
instance_actor::behavior_type stand_in(instance_actor::pointer self, instance_setup s, std::shared_ptr<stand_ins> log) {
  auto tag = name_of(s) + " gen " + std::to_string(s.generation);
  return {
      [=](start_atom) { log->events.push_back("start " + tag); },
      [=](stop_atom) {
        log->events.push_back("stop " + tag);
        s.stats->set_state(instance_state::stopped);
        self->send(s.manager, report_atom::value, report_of(s, instance_state::stopped));
        self->quit();
      },
      [=](drain_atom, std::vector<size_t>&) { log->events.push_back("drain " + tag); },
      [=](routes_atom, route_table& rt) {
        std::string to;
        for (auto& e : rt.edges)
          for (auto& r : *e.receivers) to += !r.handle ? '-' : r.draining ? 'd' : 'l';
        log->routes.push_back(tag + " -> " + to);
      },
      [=](upstream_done_atom) {},
      [=](end_atom) {},
      [=](skip_atom, frame_key&) {},
      [=](drained_atom, size_t) {},
      [=](pause_atom, bool on) { log->events.push_back((on ? "pause " : "resume ") + tag); },
      [=](frame_atom, frame&) {},
      [=](frames_atom, frame_batch&) {},
      [=](ack_atom, uint32_t) {},
  };
}

// Another node's share of a stage, as the manager runs it here: it reports running once
// started and stopped when stopped, as troupe::spawn_remote_stage does, and carries nothing.
instance_actor::behavior_type remote_stand_in(instance_actor::pointer self, remote_stage_setup s,
                                              std::shared_ptr<stand_ins> log) {
  auto tag = s.stage + "@" + s.node + " gen " + std::to_string(s.generation);
  auto tell = [=](instance_state st) {
    instance_report r;
    r.slot = s.slot;
    r.generation = s.generation;
    r.state = st;
    self->send(s.manager, report_atom::value, std::move(r));
  };
  return {
      [=](start_atom) {
        log->events.push_back("start " + tag);
        tell(instance_state::started);
        tell(instance_state::running);
      },
      [=](stop_atom) {
        log->events.push_back("stop " + tag);
        tell(instance_state::stopping);
        tell(instance_state::stopped);
        self->quit();
      },
      [=](drain_atom, std::vector<size_t>&) {},
      [=](routes_atom, route_table&) {},
      [=](upstream_done_atom) {},
      [=](end_atom) {},
      [=](skip_atom, frame_key&) {},
      [=](drained_atom, size_t) {},
      [=](pause_atom, bool) {},
      [=](frame_atom, frame&) {},
      [=](frames_atom, frame_batch&) {},
      [=](ack_atom, uint32_t) {},
  };
}

// Asks the manager to scale a stage, and keeps its answer (no error: yes). (Function-based
// actors here take an argument: CAF 0.17 binds a reference to a null empty tuple otherwise,
// which UBSan reports.)
void ask_scale(caf::event_based_actor* self, manager_actor manager, std::string stage, uint32_t n,
               std::optional<caf::error>* answer) {
  self->request(manager, caf::infinite, scale_atom::value, stage, n)
      .then([=]() { *answer = caf::error{}; }, [=](caf::error& e) { *answer = e; });
}

// Asks the manager to reload a stage, and keeps its answer (no error: the new version serves).
void ask_reload(caf::event_based_actor* self, manager_actor manager, reload_request req,
                std::optional<caf::error>* answer) {
  self->request(manager, caf::infinite, reload_atom::value, std::move(req))
      .then([=]() { *answer = caf::error{}; }, [=](caf::error& e) { *answer = e; });
}

struct manager_fixture;

// Hears how the pipeline ended.
listener_actor::behavior_type listen(listener_actor::pointer, manager_fixture* t);

struct manager_fixture : ::testing::Test {
  manager_fixture() : sys(config()), sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())) {}

  static caf::actor_system_config& config() {
    static caf::actor_system_config cfg = [] {
      caf::actor_system_config c;
      c.set("scheduler.policy", caf::atom("testing"));
      c.set("logger.verbosity", caf::atom("quiet"));
      return c;
    }();
    return cfg;
  }

  ~manager_fixture() override {
    if (manager) caf::anon_send_exit(manager, caf::exit_reason::kill);
    if (listener) caf::anon_send_exit(listener, caf::exit_reason::kill);
    for (auto& a : askers) caf::anon_send_exit(a, caf::exit_reason::kill);  // one left without an answer
    run();
    log->spawned.clear();  // the stand-ins' handles: each stand-in holds the log in turn
  }

  // src -> f -> sink with f's restart policy as given; placed across nodes as `where` says
  // (seen from node n1), or all here.
  std::shared_ptr<const troupe::plan> make_plan(const std::string& f_fields = "", const placement* where = nullptr) {
    std::string yaml =
        "pipeline: steps\n"
        "restart: {max_restarts: 2, period_s: 60, backoff_initial_ms: 100, backoff_max_ms: 400}\n"
        "stages:\n"
        "  - {name: src, plugin: testsrc, config: {count: 10}}\n"
        "  - {name: f, plugin: passthrough" +
        f_fields +
        "}\n"
        "  - {name: sink, plugin: checksum, config: {output: \"" +
        dir.path().string() +
        "/sum.txt\"}}\n"
        "edges: [\"src -> f -> sink\"]\n";
    auto spec = load_pipeline(dir.write("pipeline.yaml", yaml));
    EXPECT_TRUE(spec) << describe(spec.error());
    if (!spec) return nullptr;
    auto p = plan_pipeline(*spec, catalog::discover({plugin_dir()}), where);
    EXPECT_TRUE(p) << describe(p.error());
    if (!p) return nullptr;
    return std::make_shared<const troupe::plan>(std::move(*p));
  }

  void start(const std::string& f_fields = "") { launch(make_plan(f_fields)); }

  // f runs on node n2: this node (n1) sends to it there.
  void start_placed() {
    placement where{"n1", {{"f", {"n2"}}}};
    launch(make_plan("", &where));
  }

  void launch(std::shared_ptr<const troupe::plan> p) {
    ASSERT_TRUE(p);
    plan = p;
    registry = std::make_shared<slot_registry>(m, make_slots(*plan, m));
    manager_setup ms;
    ms.plan = plan;
    ms.slots = registry;
    ms.libraries.resize(plan->stages.size());  // stand-ins load nothing
    listener = sys.spawn(listen, this);
    ms.listener = listener;
    ms.spawn_instance = [log = log](caf::actor_system& s, instance_setup is) {
      auto setup = is;
      auto a = s.spawn(stand_in, std::move(is), log);
      log->spawned.push_back({std::move(setup), a});
      return a;
    };
    ms.spawn_remote_stage = [log = log](caf::actor_system& s, remote_stage_setup rs) {
      return s.spawn(remote_stand_in, std::move(rs), log);
    };
    manager = spawn_manager(sys, std::move(ms));
    run();
  }

  // The pipeline placed anew: `next` from the node, with the stages that moved and the
  // placement's revision.
  void place(std::shared_ptr<const troupe::plan> next, std::map<std::string, uint32_t> moves, uint64_t epoch,
             std::map<std::string, uint64_t> fences) {
    placement_update u;
    u.libraries.resize(next->stages.size());  // stand-ins load nothing
    u.plan = std::move(next);
    u.moves = std::move(moves);
    u.epoch = epoch;
    u.fences = std::move(fences);
    caf::anon_send(manager, place_atom::value, std::move(u));
    run();
  }

  // Runs every message due; timeouts only fire when the test moves time.
  void run() {
    while (sched.try_run_once()) {
    }
  }

  // The newest stand-in of that stage and replica.
  const stand_ins::one& newest(const std::string& stage, uint32_t replica = 0) {
    for (auto it = log->spawned.rbegin(); it != log->spawned.rend(); ++it)
      if (it->setup.plan->stages[it->setup.stage].spec.name == stage && it->setup.replica == replica) return *it;
    throw std::runtime_error("no instance of " + stage);
  }

  void report(const stand_ins::one& i, instance_state st, failure_class f = failure_class::none,
              std::string error = {}) {
    i.setup.stats->set_state(st);
    i.setup.stats->failure.store(f);
    caf::anon_send(manager, report_atom::value, report_of(i.setup, st, f, std::move(error)));
    run();
  }

  // The instance says it drained (it was told to drain, and holds nothing now).
  void drained(const stand_ins::one& i) {
    caf::anon_send(manager, drained_atom::value, instance_ref{i.setup.slot, i.setup.generation});
    run();
  }

  // Every stage of start() reports running, in start order.
  void all_running() { running("sink"), running("f"), running("src"); }

  void running(const std::string& stage, uint32_t replica = 0) {
    report(newest(stage, replica), instance_state::running);
  }

  // The instance is lost, as a crash would lose it: it reports, then its actor is gone (not
  // killed: a kill would take the linked manager with it).
  void lose(const std::string& stage) {
    auto& i = newest(stage);
    report(i, instance_state::failed, failure_class::lost, "boom");
    caf::anon_send_exit(i.actor, caf::exit_reason::user_shutdown);
    run();
  }

  std::string events() const { return ::testing::PrintToString(log->events); }

  size_t count(const std::string& prefix) const {
    size_t n = 0;
    for (auto& e : log->events) n += e.rfind(prefix, 0) == 0;
    return n;
  }

  const slot_stats& stats(const std::string& stage, uint32_t replica = 0) {
    for (auto& s : registry->snapshot())
      if (s->stage == stage && s->replica == replica) return *s;
    throw std::runtime_error("no slot " + stage);
  }

  temp_dir dir;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
  metrics m;
  std::shared_ptr<const troupe::plan> plan;
  std::shared_ptr<slot_registry> registry;
  std::shared_ptr<stand_ins> log = std::make_shared<stand_ins>();
  manager_actor manager;
  listener_actor listener;
  std::optional<pipeline_outcome> outcome;
  bool stopped = false;
  std::vector<caf::actor> askers;  // actors asking the manager (ask_scale, ask_reload)
};

listener_actor::behavior_type listen(listener_actor::pointer, manager_fixture* t) {
  return {
      [t](completed_atom, pipeline_outcome& o) { t->outcome = o; },
      [t](stopped_atom) { t->stopped = true; },
  };
}

}  // namespace

TEST_F(manager_fixture, starts_consumers_first_one_stage_at_a_time) {
  start();
  EXPECT_EQ(log->events, (std::vector<std::string>{"start sink gen 1"}));
  running("sink");
  EXPECT_EQ(log->events, (std::vector<std::string>{"start sink gen 1", "start f gen 1"}));
  running("f");
  running("src");
  EXPECT_EQ(log->events, (std::vector<std::string>{"start sink gen 1", "start f gen 1", "start src gen 1"}));
  EXPECT_FALSE(outcome);
}

TEST_F(manager_fixture, restarts_a_lost_instance_after_its_backoff_as_the_next_generation) {
  start();
  all_running();
  lose("f");
  EXPECT_EQ(count("start f"), 1u) << "restarted before its backoff";
  EXPECT_EQ(stats("f").generation.load(), 1u);
  // The first backoff is drawn from [50, 100) ms.
  sched.advance_time(49ms);
  run();
  EXPECT_EQ(count("start f"), 1u);
  sched.advance_time(51ms);
  run();
  EXPECT_EQ(count("start f gen 2"), 1u);
  EXPECT_EQ(stats("f").generation.load(), 2u);
  EXPECT_EQ(stats("f").restarts.Value(), 1);
  // Lost again before it ran: the second backoff doubles, drawn from [100, 200) ms.
  lose("f");
  sched.advance_time(99ms);
  run();
  EXPECT_EQ(count("start f gen 3"), 0u);
  sched.advance_time(101ms);
  run();
  EXPECT_EQ(count("start f gen 3"), 1u);
  EXPECT_FALSE(outcome);
}

TEST_F(manager_fixture, quarantines_past_max_restarts_and_the_pipeline_fails) {
  start();
  all_running();
  for (int i = 0; i < 2; ++i) {
    lose("f");
    sched.advance_time(500ms);
    run();
  }
  EXPECT_EQ(count("start f"), 3u);
  lose("f");  // the third failure within 60 s, past max_restarts 2
  sched.advance_time(10s);
  run();
  EXPECT_EQ(count("start f"), 3u) << "a quarantined slot is never restarted";
  EXPECT_TRUE(stats("f").quarantined.load());
  ASSERT_TRUE(outcome);
  EXPECT_FALSE(outcome->ok);
  EXPECT_NE(outcome->reason.find("stage 'f' has no running instance left"), std::string::npos) << outcome->reason;
}

TEST_F(manager_fixture, a_stop_reaches_producers_first_and_waits_for_each_stage) {
  start();
  all_running();
  log->events.clear();
  caf::anon_send(manager, stop_atom::value);
  run();
  // Each stand-in stops at once when told; the next stage is told only then.
  EXPECT_EQ(log->events, (std::vector<std::string>{"stop src gen 1", "stop f gen 1", "stop sink gen 1"}));
  EXPECT_TRUE(stopped);
}

TEST_F(manager_fixture, a_stop_during_a_backoff_stops_without_restarting) {
  start();
  all_running();
  lose("f");
  caf::anon_send(manager, stop_atom::value);
  run();
  sched.advance_time(1s);
  run();
  EXPECT_EQ(count("start f"), 1u);
  EXPECT_TRUE(stopped);
}

TEST_F(manager_fixture, a_replica_scaled_away_drains_then_stops_then_leaves) {
  start(", replicas: 2");
  running("sink"), running("f", 0), running("f", 1), running("src");
  std::optional<caf::error> answer;
  askers.push_back(sys.spawn(ask_scale, manager, std::string("f"), uint32_t{1}, &answer));
  run();
  ASSERT_TRUE(answer);
  EXPECT_FALSE(*answer) << describe(*answer);
  EXPECT_EQ(count("drain f#1"), 1u);
  EXPECT_EQ(count("stop f#1"), 0u) << "stopped before it drained";
  // It says it drained: only then is it stopped, and it leaves its stage.
  drained(newest("f", 1));
  EXPECT_EQ(count("stop f#1 gen 1"), 1u);
  EXPECT_EQ(count("stop f gen 1"), 0u);
  // Asked again while nothing drains: the count is already 1.
  answer.reset();
  askers.push_back(sys.spawn(ask_scale, manager, std::string("src"), uint32_t{2}, &answer));
  run();
  ASSERT_TRUE(answer);
  EXPECT_EQ(code_of(*answer), errc::refused) << describe(*answer);
}

TEST_F(manager_fixture, a_reload_starts_the_new_version_beside_the_old_then_switches_and_drains_the_old) {
  start();
  all_running();
  auto& old = newest("f");
  std::optional<caf::error> answer;
  askers.push_back(sys.spawn(ask_reload, manager, reload_request{"f", "", {}}, &answer));
  run();
  // Its own replica (f#1: its own series), as the old one's next generation.
  EXPECT_EQ(count("start f#1 gen 2"), 1u) << "the new version starts beside the old one; " << events();
  EXPECT_FALSE(answer) << "answered before the new version runs";
  EXPECT_EQ(count("drain f gen 1"), 0u);
  // The new version runs: the answer comes, and the old version drains (it is not stopped).
  running("f", 1);
  ASSERT_TRUE(answer);
  EXPECT_FALSE(*answer) << describe(*answer);
  // src sends to the new version only; the old one, still in its routes, drains.
  EXPECT_EQ(log->routes.back(), "src gen 1 -> dl");
  EXPECT_EQ(count("drain f gen 1"), 1u);
  EXPECT_EQ(count("stop f gen 1"), 0u) << "stopped before it drained";
  drained(old);
  EXPECT_EQ(count("stop f gen 1"), 1u);
  EXPECT_EQ(count("stop f#1"), 0u);
  EXPECT_FALSE(outcome) << "a reload is no end of the pipeline";
}

TEST_F(manager_fixture, a_new_version_that_does_not_start_is_stopped_and_the_old_one_serves_on) {
  start();
  all_running();
  std::optional<caf::error> answer;
  askers.push_back(sys.spawn(ask_reload, manager, reload_request{"f", "", {}}, &answer));
  run();
  ASSERT_EQ(count("start f#1 gen 2"), 1u) << events();
  report(newest("f", 1), instance_state::failed, failure_class::start_failed, "no such device");
  ASSERT_TRUE(answer);
  EXPECT_EQ(code_of(*answer), errc::start_failed) << describe(*answer);
  EXPECT_THAT(describe(*answer), HasSubstr("no such device"));
  EXPECT_EQ(count("drain f gen 1"), 0u);
  EXPECT_EQ(count("stop f gen 1"), 0u);
  EXPECT_EQ(count("start f#1 gen 3"), 0u) << "a new version that failed is not restarted; " << events();
  // The next reload is taken, as a replica of its own again.
  answer.reset();
  askers.push_back(sys.spawn(ask_reload, manager, reload_request{"f", "", {}}, &answer));
  run();
  EXPECT_FALSE(answer);
  EXPECT_EQ(count("start f#2 gen 2"), 1u) << events();
  running("f", 2);
  ASSERT_TRUE(answer);
  EXPECT_FALSE(*answer) << describe(*answer);
}

TEST_F(manager_fixture, a_stage_whose_node_is_lost_moves_here_past_the_generations_it_ran_there) {
  start_placed();
  // Consumers first: the sink here, then f's share on n2 (it runs once started), then src.
  EXPECT_EQ(count("start f@n2 gen 1"), 0u) << "started before its consumer runs; " << events();
  running("sink");
  EXPECT_EQ(count("start f@n2 gen 1"), 1u) << events();
  running("src");
  // n2 is lost; f is placed here at a generation past any n2 ran (it moved 3 times).
  place(make_plan(), {{"f", 3}}, 2, {{"n2", 2}});
  EXPECT_EQ(count("stop f@n2 gen 1"), 1u) << events();
  EXPECT_EQ(count("start f gen 4"), 1u) << events();
  // src sends to the new instance once it runs; nothing is sent to n2 any more.
  EXPECT_EQ(log->routes.back(), "src gen 1 -> -");
  running("f");
  EXPECT_EQ(log->routes.back(), "src gen 1 -> l");
  EXPECT_EQ(stats("f").generation.load(), 4u);
  EXPECT_FALSE(outcome) << "a move is no end of the pipeline";
}

TEST_F(manager_fixture, a_stage_placed_elsewhere_stops_here_and_its_senders_send_to_its_new_node) {
  start();
  all_running();
  placement on_n2{"n1", {{"f", {"n2"}}}};
  place(make_plan("", &on_n2), {}, 2, {});
  EXPECT_EQ(count("stop f gen 1"), 1u) << events();
  EXPECT_EQ(count("start f@n2 gen 1"), 1u) << events();
  // The share on n2 runs as soon as it starts: src sends there.
  EXPECT_EQ(log->routes.back(), "src gen 1 -> l");
  EXPECT_EQ(count("stop src"), 0u);
  EXPECT_EQ(count("stop sink"), 0u);
  // And back: n2's share stops, and f starts here again as a replica of its own (its own
  // series), a newer generation than both.
  place(make_plan(), {{"f", 1}}, 3, {{"n2", 3}});
  EXPECT_EQ(count("stop f@n2 gen 1"), 1u) << events();
  EXPECT_EQ(count("start f#1 gen 2"), 1u) << events();
  EXPECT_FALSE(outcome);
}

// Messages that carry only values are inspectable (printed in logs and by CAF as values, and
// checked by CAF's type system), not passed as opaque unsafe types.
TEST(messages, outcomes_reload_requests_and_frame_keys_print_as_values) {
  EXPECT_EQ(caf::deep_to_string(pipeline_outcome{false, "stage 'f' has no running instance left"}),
            "pipeline_outcome(false, \"stage 'f' has no running instance left\")");
  EXPECT_EQ(caf::deep_to_string(reload_request{"f", "", {{"delay_ms", "5"}}}),
            "reload_request(\"f\", \"\", [(\"delay_ms\", \"5\")])");
  EXPECT_EQ(caf::deep_to_string(frame_key{1, 2, 3}), "frame_key(1, 2, 3)");
}

// What a node admits: each stage asks for its manifest's memory_mb and cpu_cores per replica
// (testsrc 1024 MiB, passthrough 256 MiB, checksum 512 MiB), and a pipeline, or more replicas,
// fit beside what the node holds or are refused, naming the node, the stage and the shortfall.
namespace {

// What an admission refused, and that it was for want of room; "" if it admitted.
std::string refusal(const caf::error& e) {
  if (!e) return "";
  EXPECT_EQ(code_of(e), errc::no_room);
  return describe(e);
}
std::string refusal(const expected<void>& r) { return r ? "" : refusal(r.error()); }

}  // namespace

TEST(admission, a_pipeline_or_more_replicas_fit_beside_what_runs_or_are_refused_by_name) {
  temp_dir d;
  auto p = plan_yaml(d,
                     "pipeline: sized\nstages:\n"
                     "  - {name: src, plugin: testsrc, config: {count: 1}}\n"
                     "  - {name: f, plugin: passthrough, mode: isolated, replicas: 3, resources: {cpu_cores: 0.5}}\n"
                     "  - {name: sink, plugin: checksum, config: {output: \"{dir}/sum.txt\"}}\n"
                     "edges: [\"src -> f -> sink\"]\n");
  ASSERT_TRUE(p) << describe(p.error());
  node_capacity cap{{2, 2304}, "capacity in n1.yaml"};
  resources_amount held;
  EXPECT_EQ(refusal(admit(cap, held, **p, "n1")), "");
  EXPECT_EQ(held.memory_mb, 2304u);
  EXPECT_DOUBLE_EQ(held.cpu_cores, 1.5);
  // One MiB short: the stage that does not fit is named.
  cap.total.memory_mb = 2303;
  held = {};
  EXPECT_EQ(refusal(admit(cap, held, **p, "n1")),
            "node n1 cannot take pipeline 'sized': stage 'sink' (1 replica of 512 MiB): it needs 512 MiB of memory, "
            "511 MiB free of 2303 MiB (capacity in n1.yaml)");
  // Beside what runs already.
  cap.total = {4, 4096};
  held = {0, 2000};
  EXPECT_THAT(refusal(admit(cap, held, **p, "n1")),
              HasSubstr("stage 'sink' (1 replica of 512 MiB): it needs 512 MiB of memory, 304 MiB free of 4096 MiB"));
  // Cores count as memory does.
  cap.total = {1, 0};  // memory not counted
  held = {};
  EXPECT_EQ(refusal(admit(cap, held, **p, "n1")),
            "node n1 cannot take pipeline 'sized': stage 'f' (3 replicas of 256 MiB and 0.5 cores): it needs 1.5 "
            "cores, 1 free of 1 (capacity in n1.yaml)");
  // More replicas.
  cap.total = {8, 3000};
  auto* f = (*p)->find("f");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(refusal(admit_replicas(cap, {1.5, 2304}, *f, 3, "n1")),
            "node n1 cannot take 3 more replicas of stage 'f' (256 MiB and 0.5 cores each): it needs 768 MiB of "
            "memory, 696 MiB free of 3000 MiB (capacity in n1.yaml)");
  EXPECT_EQ(refusal(admit_replicas(cap, {1.5, 2304}, *f, 2, "n1")), "");
  // The machine's own capacity: its processors and memory.
  auto here = machine_capacity();
  EXPECT_GE(here.total.cpu_cores, 1);
  EXPECT_GT(here.total.memory_mb, 0u);
  EXPECT_EQ(here.source, "this machine");
}

// A pipeline that does not fit takes room from pipelines of lower priority: their stages give
// back replicas, lowest priority first, never below one, and only where they hold what is
// short; if even that is not enough, it is refused and nothing is evicted.
TEST(admission, a_higher_priority_takes_room_from_lower_ones_or_is_refused_with_what_they_could_give) {
  temp_dir d;
  auto plan_of = [&](const std::string& name, int priority, const std::string& f) {
    return plan_yaml(d, "pipeline: " + name + "\npriority: " + std::to_string(priority) +
                            "\nstages:\n"
                            "  - {name: src, plugin: testsrc, config: {count: 1}}\n" +
                            f + "  - {name: sink, plugin: checksum, config: {output: \"{dir}/" + name +
                            ".txt\"}}\nedges: [\"src -> f -> sink\"]\n");
  };
  // Two running pipelines: 'batch' (priority 0, f: 4 replicas of 256 MiB) and 'low'
  // (priority -5, f: 3 replicas of 256 MiB and 0.5 cores).
  auto batch = plan_of("batch", 0, "  - {name: f, plugin: passthrough, replicas: 4}\n");
  auto low = plan_of("low", -5,
                     "  - {name: f, plugin: passthrough, mode: isolated, replicas: 3, resources: {cpu_cores: 0.5}}\n");
  ASSERT_TRUE(batch && low);
  std::vector<replica_holder> holders;
  for (auto* p : {&**batch, &**low})
    for (auto& s : p->stages) holders.push_back({p->name, p->priority, &s, s.spec.replicas});
  resources_amount held;
  for (auto& h : holders) {
    auto r = request_of(*h.stage);
    held.memory_mb += r.memory_mb * h.serving;
    held.cpu_cores += r.cpu_cores * h.serving;
  }
  ASSERT_EQ(held.memory_mb, 2 * 1536 + 7 * 256u);  // 4864
  node_capacity cap{{8, 5000}, "capacity in n1.yaml"};
  // 'urgent' (priority 10) asks for 1024 + 256 + 512 MiB, 1656 more than the 136 free: 'low'
  // gives back two replicas (512 MiB), 'batch' three (768): 1280, not enough.
  auto urgent = plan_of("urgent", 10, "  - {name: f, plugin: passthrough}\n");
  ASSERT_TRUE(urgent);
  auto a = admit_evicting(cap, held, **urgent, "n1", holders);
  EXPECT_EQ(refusal(a.refused),
            "node n1 cannot take pipeline 'urgent': stage 'src' (1 replica of 1024 MiB): it needs 1024 MiB of memory, "
            "136 MiB free of 5000 MiB (capacity in n1.yaml); pipelines of lower priority than 10 here could give back "
            "only memory 1280 MiB, 1 cores (down to one replica of each stage): not enough");
  EXPECT_TRUE(a.evictions.empty());
  // With 6000 MiB, 1136 free: 'low' first (two replicas, 512 MiB), then 'batch' only as much
  // as is still short (one of its three spare replicas, 256 MiB); sources and sinks stay.
  cap.total.memory_mb = 6000;
  a = admit_evicting(cap, held, **urgent, "n1", holders);
  EXPECT_EQ(refusal(a.refused), "");
  ASSERT_EQ(a.evictions.size(), 2u);
  EXPECT_EQ(a.evictions[0].pipeline, "low");
  EXPECT_EQ(a.evictions[0].stage, "f");
  EXPECT_EQ(a.evictions[0].from, 3u);
  EXPECT_EQ(a.evictions[0].to, 1u);
  EXPECT_EQ(a.evictions[0].frees.memory_mb, 512u);
  EXPECT_EQ(a.evictions[1].pipeline, "batch");
  EXPECT_EQ(a.evictions[1].from, 4u);
  EXPECT_EQ(a.evictions[1].to, 3u);
  EXPECT_EQ(a.evictions[1].frees.memory_mb, 256u);
  // Short only of cores: only replicas that hold cores give back ('low's), as few as needed.
  cap.total = {1.6, 0};
  a = admit_evicting(cap, held,
                     **plan_of("cpu", 1,
                               "  - {name: f, plugin: passthrough, mode: isolated, resources: "
                               "{cpu_cores: 0.5}}\n"),
                     "n1", holders);
  EXPECT_EQ(refusal(a.refused), "");
  ASSERT_EQ(a.evictions.size(), 1u);
  EXPECT_EQ(a.evictions[0].pipeline, "low");
  EXPECT_EQ(a.evictions[0].to, 2u);
  // The same priority takes nothing: refused as admit() refuses ('low' is -5, 'batch' 0).
  cap.total = {8, 5000};
  a = admit_evicting(cap, held, **plan_of("peer", -5, "  - {name: f, plugin: passthrough}\n"), "n1", holders);
  EXPECT_THAT(refusal(a.refused), HasSubstr("136 MiB free of 5000 MiB (capacity in n1.yaml)"));
  EXPECT_THAT(refusal(a.refused), Not(HasSubstr("lower priority")));
  EXPECT_TRUE(a.evictions.empty());
}

// GPUs are counted whole, and a node has as many as it says (or the machine has): none means a
// stage that needs one does not fit there. Replicas that hold GPUs give them back to a higher
// priority as they give back memory.
TEST(admission, gpus_are_counted_whole_and_none_take_no_stage_that_needs_one) {
  temp_dir d;
  auto plan_of = [&](const std::string& name, int priority, uint32_t replicas) {
    auto p = plan_yaml(d, "pipeline: " + name + "\npriority: " + std::to_string(priority) +
                              "\nstages:\n"
                              "  - {name: src, plugin: testsrc, config: {count: 1}}\n"
                              "  - {name: f, plugin: passthrough, replicas: " +
                              std::to_string(replicas) + "}\n" +
                              "  - {name: sink, plugin: checksum, config: {output: \"{dir}/" + name +
                              ".txt\"}}\nedges: [\"src -> f -> sink\"]\n");
    EXPECT_TRUE(p) << describe(p.error());
    auto copy = **p;
    copy.stages[1].manifest.resources.gpus = 1;  // as a manifest saying resources: {gpus: 1}
    return copy;
  };
  auto vision = plan_of("vision", 0, 2);
  EXPECT_EQ(asks_of(vision).gpus, 2u);
  node_capacity cap{{8, 100000, 0}, "this machine"};
  resources_amount held;
  EXPECT_EQ(refusal(admit(cap, held, vision, "local")),
            "node local cannot take pipeline 'vision': stage 'f' (2 replicas of 256 MiB and 1 GPU): it needs 2 GPUs, "
            "0 free of 0 (this machine)");
  cap.total.gpus = 2;
  held = {};
  EXPECT_EQ(refusal(admit(cap, held, vision, "local")), "");
  EXPECT_EQ(held.gpus, 2u);
  EXPECT_EQ(refusal(admit_replicas(cap, held, vision.stages[1], 1, "local")),
            "node local cannot take 1 more replica of stage 'f' (256 MiB and 1 GPU each): it needs 1 GPU, 0 free of 2 "
            "(this machine)");
  EXPECT_EQ(describe(held), "memory 2048 MiB, 2 GPUs");
  EXPECT_EQ(describe_capacity({2, 1024, 0}), "memory 1024 MiB, 2 cores, no GPUs");
  // 'urgent' (priority 5) needs one GPU: 'vision' (0) gives back one replica, not both.
  auto urgent = plan_of("urgent", 5, 1);
  std::vector<replica_holder> holders;
  for (auto& s : vision.stages) holders.push_back({vision.name, vision.priority, &s, s.spec.replicas});
  auto a = admit_evicting(cap, held, urgent, "local", holders);
  EXPECT_EQ(refusal(a.refused), "");
  ASSERT_EQ(a.evictions.size(), 1u);
  EXPECT_EQ(a.evictions[0].stage, "f");
  EXPECT_EQ(a.evictions[0].to, 1u);
  EXPECT_EQ(a.evictions[0].frees.gpus, 1u);
}
