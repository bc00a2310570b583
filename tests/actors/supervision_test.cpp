// The runtime end to end: real plugin libraries, real actors, real faults.
#include "pipeline_runner.hpp"

#include <fstream>
#include <set>
#include <thread>

using namespace troupe;
using namespace troupe::test;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

namespace {

// testsrc -> faulty -> checksum, with the faulty config and restart policy given.
std::string faulty_chain(const std::string& faulty_config, const std::string& extra_stage_fields = "", int count = 20,
                         int streams = 1) {
  return "pipeline: faulty\n"
         "restart: {max_restarts: 10, period_s: 60, backoff_initial_ms: 5, backoff_max_ms: 20}\n"
         "stages:\n"
         "  - {name: src, plugin: testsrc, config: {width: 16, height: 8, count: " +
         std::to_string(count) + ", streams: " + std::to_string(streams) +
         "}}\n"
         "  - {name: f, plugin: faulty, config: {" +
         faulty_config + "}" + extra_stage_fields +
         "}\n"
         "  - {name: sink, plugin: checksum, config: {output: \"{dir}/sum.txt\"}}\n"
         "edges: [\"src -> f -> sink\"]\n";
}

}  // namespace

TEST(runtime, chain_of_example_plugins_finishes_and_counts_every_frame) {
  temp_dir d;
  auto p = plan_yaml(d, R"(pipeline: demo
stages:
  - {name: src, plugin: testsrc, config: {width: 64, height: 48, count: 25, streams: 2}}
  - {name: inv, plugin: invert}
  - {name: blur, plugin: blur, config: {radius: 1}, replicas: 2, routing: by_stream}
  - {name: mark, plugin: watermark}
  - {name: sink, plugin: checksum, config: {output: "{dir}/sum.txt"}}
edges: ["src -> inv -> blur -> mark -> sink"]
)");
  ASSERT_OK(p);
  auto r = run_pipeline(*p);
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.slot("src").frames_out.Value(), 50);
  EXPECT_EQ(r.slot("blur", 0).frames_in.Value() + r.slot("blur", 1).frames_in.Value(), 50);
  EXPECT_EQ(r.slot("sink").frames_in.Value(), 50);
  EXPECT_EQ(r.slot("sink").bytes_in.Value(), 50 * 64 * 48 * 3);
  for (auto& s : r.slots) {
    EXPECT_EQ(s->state.load(), instance_state::stopped) << s->name();
    EXPECT_EQ(s->generation.load(), 1u) << s->name();
  }
  auto total = checksum_line((d.path() / "sum.txt").string(), "total");
  EXPECT_EQ(total["frames"], "50");
  EXPECT_EQ(total["duplicates"], "0");
}

TEST(runtime, start_failed_is_retried_then_quarantined) {
  temp_dir d;
  auto p = plan_yaml(
      d, faulty_chain("fail_start: true", ", restart: {max_restarts: 2, backoff_initial_ms: 5, backoff_max_ms: 10}"));
  ASSERT_OK(p);
  auto r = run_pipeline(*p, 20s);
  ASSERT_TRUE(r.completed);
  EXPECT_FALSE(r.outcome.ok);
  EXPECT_THAT(r.outcome.reason, HasSubstr("stage 'f'"));
  auto& f = r.slot("f");
  EXPECT_TRUE(f.quarantined.load());
  EXPECT_EQ(f.quarantined_gauge.Value(), 1);  // troupe_instance_quarantined, which alerts watch
  EXPECT_EQ(f.failure.load(), failure_class::start_failed);
  EXPECT_EQ(f.restarts.Value(), 2);
  EXPECT_EQ(f.generation.load(), 3u);
  EXPECT_THAT(f.last_error(), HasSubstr("configured to fail start"));
}

TEST(runtime, fatal_error_is_lost_restarted_with_new_generation_and_loses_no_frame) {
  temp_dir d;
  // Each generation fails on the 5th frame it sees; the failed frame is sent again to the next.
  auto p = plan_yaml(d, faulty_chain("action: fatal, every: 5"));
  ASSERT_OK(p);
  auto r = run_pipeline(*p);
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  auto& f = r.slot("f");
  EXPECT_EQ(f.restarts.Value(), 4);  // frames 4, 8, 12, 16 each cost one generation
  EXPECT_EQ(f.generation.load(), 5u);
  EXPECT_EQ(f.failure.load(), failure_class::none);  // the current generation is healthy
  auto total = checksum_line((d.path() / "sum.txt").string(), "total");
  EXPECT_EQ(total["frames"], "20");
  EXPECT_EQ(total["duplicates"], "0");
  for (auto& slot : r.slots) expect_books_balance(*slot);
  // Whatever a lost generation held, the next one took again: at least the four culprits.
  EXPECT_EQ(f.frames_abandoned.Value(), f.frames_in.Value() - 20);
  EXPECT_GE(f.frames_abandoned.Value(), 4);
}

TEST(runtime, exception_escaping_the_plugin_is_lost) {
  temp_dir d;
  auto p = plan_yaml(d, faulty_chain("action: throw, every: 7"));
  ASSERT_OK(p);
  auto r = run_pipeline(*p);
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  EXPECT_EQ(r.slot("f").restarts.Value(), 3);  // frames 6, 12, 18
  auto total = checksum_line((d.path() / "sum.txt").string(), "total");
  EXPECT_EQ(total["frames"], "20");
}

TEST(runtime, plugin_error_fails_one_frame_and_the_instance_goes_on) {
  temp_dir d;
  auto p = plan_yaml(d, faulty_chain("action: error, on_seq: 3", "", 10, 2));
  ASSERT_OK(p);
  auto r = run_pipeline(*p);
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  auto& f = r.slot("f");
  EXPECT_EQ(f.errors.Value(), 2);  // seq 3 of each stream
  EXPECT_EQ(f.restarts.Value(), 0);
  EXPECT_EQ(f.frames_in.Value(), 20);
  EXPECT_EQ(f.frames_out.Value(), 18);
  EXPECT_EQ(r.slot("sink").frames_in.Value(), 18);
}

TEST(runtime, lost_on_every_frame_is_quarantined_with_last_error) {
  temp_dir d;
  auto p = plan_yaml(d, faulty_chain("action: fatal, every: 1",
                                     ", restart: {max_restarts: 3, backoff_initial_ms: 5, backoff_max_ms: 10}"));
  ASSERT_OK(p);
  auto r = run_pipeline(*p);
  ASSERT_TRUE(r.completed);
  EXPECT_FALSE(r.outcome.ok);
  auto& f = r.slot("f");
  EXPECT_TRUE(f.quarantined.load());
  EXPECT_EQ(f.failure.load(), failure_class::lost);
  EXPECT_EQ(f.restarts.Value(), 3);
  EXPECT_EQ(f.generation.load(), 4u);
  EXPECT_THAT(f.last_error(), HasSubstr("faulty"));
  // The same story as events, in order: each generation runs, fails (lost, with the error)
  // and is restarted, until the fourth is quarantined; then the pipeline fails and stops.
  std::vector<std::string> story;
  for (auto& e : r.events->since(0))
    if (e.kind == event_kind::dead_letter)  // whichever frame was lost three times: told apart
      EXPECT_THAT(e.detail, HasSubstr("was lost on 3 times: faulty"));
    else if (e.stage == "f" || e.stage.empty())
      story.push_back(std::string(to_string(e.kind)) + " " + e.state +
                      (e.generation ? " " + std::to_string(e.generation) : "") +
                      (e.failure.empty() ? "" : " " + e.failure));
  std::vector<std::string> expected = {"instance running 1"};
  for (int g = 1; g <= 3; ++g) {
    if (g == 1) expected.push_back("pipeline running");
    expected.push_back("instance failed " + std::to_string(g) + " lost");
    expected.push_back("restart restarting " + std::to_string(g));
    expected.push_back("instance running " + std::to_string(g + 1));
  }
  expected.insert(expected.end(), {"instance failed 4 lost", "quarantine quarantined 4", "pipeline failed",
                                   "instance stopped 4", "pipeline stopped"});
  EXPECT_EQ(story, expected);
  auto all = r.events->since(0);
  for (size_t k = 0; k < all.size(); ++k) EXPECT_EQ(all[k].seq, k + 1);
  for (auto& e : all) {
    if (e.kind == event_kind::instance && e.state == "failed") {
      EXPECT_THAT(e.detail, HasSubstr("faulty"));
    }
  }
}

TEST(events, the_ring_keeps_the_latest_and_each_is_one_json_line) {
  temp_dir d;
  event_log log(3);
  auto path = (d.path() / "events.jsonl").string();
  EXPECT_EQ(log.write_to(path), "");
  for (int k = 0; k < 5; ++k) {
    event e;
    e.kind = k == 4 ? event_kind::dead_letter : event_kind::instance;
    e.node = "n1";
    e.pipeline = "p";
    e.stage = "s";
    e.replica = k == 4 ? -1 : 0;
    e.generation = k == 4 ? 0 : 1;
    e.state = k == 4 ? "" : "running";
    e.detail = k == 4 ? "a \"quoted\"\nline" : "";
    log.add(e);
  }
  EXPECT_EQ(log.count(), 5u);
  auto kept = log.since(0);
  ASSERT_EQ(kept.size(), 3u);  // the latest three
  EXPECT_EQ(kept.front().seq, 3u);
  EXPECT_EQ(log.since(4).size(), 1u);
  EXPECT_TRUE(log.since(5).empty());
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 5u);  // the file has every one
  EXPECT_THAT(
      lines[0],
      testing::MatchesRegex(
          R"(\{"seq":1,"time_ms":[0-9]+,"kind":"instance","node":"n1","pipeline":"p","stage":"s","replica":0,"generation":1,"state":"running"\})"));
  EXPECT_THAT(
      lines[4],
      HasSubstr(R"("kind":"dead_letter","node":"n1","pipeline":"p","stage":"s","detail":"a \"quoted\"\nline"})"));
  EXPECT_THAT(event_log().write_to((d.path() / "no" / "such" / "dir.jsonl").string()),
              HasSubstr("dir.jsonl: cannot open for events: No such file or directory"));
}

TEST(runtime, call_past_deadline_is_lost_and_its_late_outputs_are_dropped_as_stale) {
  temp_dir d;
  // Each generation hangs 800 ms on its 3rd frame; the deadline is 150 ms.
  auto p = plan_yaml(d, faulty_chain("action: hang, every: 3, hang_ms: 800", ", deadline_ms: 150", 6));
  ASSERT_OK(p);
  const slot_stats* f = nullptr;
  auto r = run_pipeline(*p, 30s);
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  f = &r.slot("f");
  EXPECT_EQ(f->restarts.Value(), 2);  // frames 2 and 4
  EXPECT_EQ(f->generation.load(), 3u);
  EXPECT_THAT(f->last_error(), HasSubstr("deadline of 150 ms"));
  // The hung calls return later, each with one output stamped with a superseded generation.
  auto until = std::chrono::steady_clock::now() + 10s;
  while (f->stale_dropped.Value() < 2 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(f->stale_dropped.Value(), 2);
  auto total = checksum_line((d.path() / "sum.txt").string(), "total");
  EXPECT_EQ(total["frames"], "6");
  EXPECT_EQ(total["duplicates"], "0");
}

TEST(runtime, hung_plugin_does_not_stall_another_stage) {
  temp_dir d;
  auto p = plan_yaml(d, R"(pipeline: two
stages:
  - {name: src_a, plugin: testsrc, config: {width: 8, height: 8, count: 3}}
  - {name: hang, plugin: faulty, config: {action: hang, on_seq: 1, hang_ms: 3000}, deadline_ms: 20000}
  - {name: sink_a, plugin: checksum, config: {output: "{dir}/a.txt"}}
  - {name: src_b, plugin: testsrc, config: {width: 8, height: 8, count: 100}}
  - {name: pass, plugin: passthrough, replicas: 2}
  - {name: sink_b, plugin: checksum, config: {output: "{dir}/b.txt"}}
edges: ["src_a -> hang -> sink_a", "src_b -> pass -> sink_b"]
)");
  ASSERT_OK(p);
  double hang_done_when_b_finished = -1;
  auto r = run_pipeline(*p, 30s, [&](const slot_table& slots) {
    for (auto& s : slots)
      if (s->stage == "sink_b" && s->finished.load()) {
        for (auto& h : slots)
          if (h->stage == "hang") hang_done_when_b_finished = h->frames_completed.Value();
        return false;
      }
    return true;
  });
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  // sink_b had all 100 frames while the hung call on frame 1 had not returned yet (frame 0
  // is counted once it is, or when the batch it shares with frame 1 closes).
  EXPECT_GE(hang_done_when_b_finished, 0) << "sink_b finished";
  EXPECT_LE(hang_done_when_b_finished, 1);
  EXPECT_EQ(r.slot("sink_b").frames_in.Value(), 100);
  EXPECT_EQ(r.slot("sink_a").frames_in.Value(), 3);
}

namespace {
// Threads of this process, from /proc/self/status.
int os_threads() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  return -1;
}

// Each generation fails on its 4th frame; frames come at 10/s, so a generation lives about
// 300 ms (at least 100 ms: frames that piled up while it restarted come at once, and a slow
// restart, as under ThreadSanitizer, piles up one or two). stable_after_s decides whether that
// counts as a stable run.
std::string paced_failures(const std::string& stable_after_s) {
  return "pipeline: paced\n"
         "stages:\n"
         "  - {name: src, plugin: testsrc, config: {width: 8, height: 8, count: 16, rate: 10}}\n"
         "  - {name: f, plugin: faulty, config: {action: fatal, every: 4},\n"
         "     restart: {max_restarts: 2, period_s: 60, backoff_initial_ms: 1, backoff_max_ms: 2, stable_after_s: " +
         stable_after_s +
         "}}\n"
         "  - {name: sink, plugin: checksum, config: {output: \"{dir}/sum.txt\"}}\n"
         "edges: [\"src -> f -> sink\"]\n";
}
}  // namespace

TEST(runtime, restart_count_resets_after_a_stable_run) {
  temp_dir d;
  auto stable = plan_yaml(d, paced_failures("0.02"));
  ASSERT_OK(stable);
  auto r = run_pipeline(*stable);
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  EXPECT_GT(r.slot("f").restarts.Value(), 2);  // more than max_restarts, none quarantined
  EXPECT_FALSE(r.slot("f").quarantined.load());
  EXPECT_EQ(checksum_line((d.path() / "sum.txt").string(), "total")["frames"], "16");

  temp_dir e;
  auto unstable = plan_yaml(e, paced_failures("30"));
  ASSERT_OK(unstable);
  auto q = run_pipeline(*unstable);
  ASSERT_TRUE(q.completed);
  EXPECT_FALSE(q.outcome.ok);
  EXPECT_EQ(q.slot("f").restarts.Value(), 2);
  EXPECT_TRUE(q.slot("f").quarantined.load());
}

TEST(runtime, a_thousand_idle_instances_cost_no_threads) {
  temp_dir d;
  auto p = plan_yaml(d, R"(pipeline: wide
stages:
  - {name: src, plugin: testsrc, config: {width: 4, height: 4, count: 50, rate: 200}}
  - {name: pass, plugin: passthrough, replicas: 1000}
  - {name: sink, plugin: checksum, config: {output: "{dir}/sum.txt"}}
edges: ["src -> pass -> sink"]
)");
  ASSERT_OK(p);
  int before = os_threads();
  int most = 0;
  auto r = run_pipeline(*p, 60s, [&](const slot_table&) {
    most = std::max(most, os_threads());
    return true;
  });
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  EXPECT_EQ(r.slot("sink").frames_in.Value(), 50);
  // 1002 instances, almost all idle at any time: the threads are CAF's scheduler and the
  // executor's, not one per instance.
  EXPECT_LT(most - before, 24) << "threads before " << before << ", at most " << most;
}

TEST(runtime, teardown_failed_is_reported_and_fails_the_run) {
  temp_dir d;
  auto p = plan_yaml(d, faulty_chain("fail_stop: true", "", 5));
  ASSERT_OK(p);
  auto r = run_pipeline(*p);
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok);  // every frame went through; only the stop failed
  EXPECT_TRUE(r.stopped);
  auto& f = r.slot("f");
  EXPECT_EQ(f.state.load(), instance_state::failed);
  EXPECT_EQ(f.failure.load(), failure_class::teardown_failed);
  EXPECT_THAT(f.last_error(), HasSubstr("configured to fail stop"));
  EXPECT_EQ(r.slot("sink").state.load(), instance_state::stopped);  // the others still stop
}

TEST(runtime, stages_stop_in_reverse_start_order) {
  temp_dir d;
  // f takes 300 ms to stop: while it is stopping, the source before it must be stopped
  // and the sink after it still running.
  auto p = plan_yaml(d, faulty_chain("stop_ms: 300", "", 3));
  ASSERT_OK(p);
  int observed = 0;
  bool in_order = true;
  auto r = run_pipeline(*p, 30s, {}, [&](const slot_table& slots) {
    auto state = [&](const char* stage) {
      for (auto& s : slots)
        if (s->stage == stage) return s->state.load();
      return instance_state::loaded;
    };
    if (state("f") != instance_state::stopping) return;
    ++observed;
    in_order = in_order && state("src") == instance_state::stopped && state("sink") == instance_state::running;
  });
  ASSERT_TRUE(r.stopped);
  EXPECT_GT(observed, 10);
  EXPECT_TRUE(in_order);
  for (auto& s : r.slots) EXPECT_EQ(s->state.load(), instance_state::stopped) << s->name();
}

TEST(runtime, fan_in_and_fan_out) {
  temp_dir d;
  // Two sources merge into one stage, which feeds two branches: pixels and detections.
  auto p = plan_yaml(d, R"(pipeline: fan
stages:
  - {name: a, plugin: testsrc, config: {width: 64, height: 64, count: 10, streams: 2}}
  - {name: b, plugin: testsrc, config: {width: 64, height: 64, count: 10, first_stream: 10}}
  - {name: mix, plugin: passthrough, replicas: 2, routing: least_loaded}
  - {name: inv, plugin: invert}
  - {name: det, plugin: detect, config: {cell: 4}}
  - {name: pixels, plugin: checksum, config: {output: "{dir}/pixels.txt"}}
  - {name: meta, plugin: checksum, config: {output: "{dir}/meta.txt"}}
edges: ["a -> mix", "b -> mix", "mix -> inv -> pixels", "mix -> det -> meta"]
)");
  ASSERT_OK(p);
  auto r = run_pipeline(*p);
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  EXPECT_EQ(r.slot("mix", 0).frames_in.Value() + r.slot("mix", 1).frames_in.Value(), 30);
  auto pixels = checksum_line((d.path() / "pixels.txt").string(), "total");
  EXPECT_EQ(pixels["frames"], "30");
  EXPECT_EQ(pixels["bytes"], std::to_string(30 * 64 * 64 * 3));
  EXPECT_EQ(pixels["duplicates"], "0");
  EXPECT_EQ(checksum_line((d.path() / "pixels.txt").string(), "stream 10")["frames"], "10");
  auto meta = checksum_line((d.path() / "meta.txt").string(), "total");
  EXPECT_EQ(meta["frames"], "30");
  EXPECT_GT(r.slot("det").bytes_out.Value(), 0);  // testsrc's bright square is found
}

TEST(runtime, poison_frame_goes_to_dead_letters_and_the_stream_goes_on) {
  temp_dir d;
  // Frame seq 4 kills faulty on both streams, every time it is sent again.
  auto p = plan_yaml(d, R"(pipeline: poison
dead_letter_after: 3
dead_letters: "{dir}/dead.jsonl"
restart: {max_restarts: 10, backoff_initial_ms: 2, backoff_max_ms: 5}
stages:
  - {name: src, plugin: testsrc, config: {width: 8, height: 8, count: 10, streams: 2}}
  - {name: f, plugin: faulty, config: {action: fatal, on_seq: 4}}
  - {name: sink, plugin: checksum, config: {output: "{dir}/sum.txt", frames_log: "{dir}/frames.txt"}}
edges: ["src -> f -> sink"]
)");
  ASSERT_OK(p);
  auto r = run_pipeline(*p);
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  auto& f = r.slot("f");
  EXPECT_EQ(f.restarts.Value(), 6);  // three losses per poison frame
  EXPECT_FALSE(f.quarantined.load());
  auto dead = r.dead_letters->records();
  ASSERT_EQ(dead.size(), 2u);
  std::set<uint64_t> streams;
  for (auto& l : dead) {
    streams.insert(l.frame.stream);
    EXPECT_EQ(l.frame.seq, 4u);
    EXPECT_EQ(l.stage, "f");
    EXPECT_EQ(l.plugin, "faulty");
    EXPECT_EQ(l.failure, "lost");
    EXPECT_EQ(l.losses, 3u);
    EXPECT_THAT(l.error, HasSubstr("fatal error on stream"));
  }
  EXPECT_EQ(streams, (std::set<uint64_t>{0, 1}));
  EXPECT_GE(f.dead_letters.Value(), 2);
  // The file has one JSON line per dead letter.
  std::ifstream in(d.path() / "dead.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    EXPECT_THAT(line, HasSubstr("\"seq\":4"));
    EXPECT_THAT(line, HasSubstr("\"stage\":\"f\",\"plugin\":\"faulty\",\"failure\":\"lost\""));
  }
  EXPECT_EQ(lines, 2);
  // Everything else reached the sink exactly once, in both streams.
  auto total = checksum_line((d.path() / "sum.txt").string(), "total");
  EXPECT_EQ(total["frames"], "18");
  EXPECT_EQ(total["duplicates"], "0");
  auto seen = read_frames_log((d.path() / "frames.txt").string());
  EXPECT_EQ(seen.repeated, 0u);
  for (uint64_t s = 0; s < 2; ++s)
    for (uint64_t q = 0; q < 10; ++q) EXPECT_EQ(seen.hashes.count({s, q, 0u}), q == 4 ? 0u : 1u) << s << "/" << q;
  for (auto& slot : r.slots) expect_books_balance(*slot);
}

// A plugin in the node's process is asked for its health too (every 5 s while idle): one that
// answers unhealthy is lost and restarted, and no frame is lost with it.
TEST(runtime, an_unhealthy_plugin_in_the_node_s_process_is_lost_and_restarted) {
  temp_dir d;
  auto p =
      plan_yaml(d,
                "pipeline: health\n"
                "restart: {max_restarts: 10, period_s: 60, backoff_initial_ms: 5, backoff_max_ms: 20}\n"
                "stages:\n"
                "  - {name: src, plugin: testsrc, config: {width: 16, height: 8, count: 35, streams: 1, rate: 5}}\n"
                "  - {name: f, plugin: faulty, config: {fail_health: true}}\n"
                "  - {name: sink, plugin: checksum, config: {output: \"{dir}/sum.txt\", frames_log: "
                "\"{dir}/frames.txt\"}}\n"
                "edges: [\"src -> f -> sink\"]\n");
  ASSERT_OK(p);
  auto r = run_pipeline(*p, 40s);
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  auto& f = r.slot("f");
  EXPECT_GE(f.restarts.Value(), 1) << "the run lasts 7 s: at least one health check answered";
  EXPECT_THAT(f.last_error(), HasSubstr("health check failed: "));
  EXPECT_EQ(r.slot("src").healthy.Value(), 1) << "testsrc answers healthy";
  auto got = read_frames_log((d.path() / "frames.txt").string());
  EXPECT_EQ(got.hashes.size(), 35u);
  EXPECT_EQ(got.repeated, 0u);
}
