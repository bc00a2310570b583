// Delivery end to end: the demo pipeline with a faulty stage loses nothing but the frames
// it gives up on, sees nothing twice, and every instance's books balance.
#include "pipeline_runner.hpp"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

using namespace troupe;
using namespace troupe::test;
using namespace std::chrono_literals;

namespace {

constexpr int frames_per_stream = 30, streams = 2, crash_every = 7, poison_seq = 4, dead_after = 3;

// The demo's stages on small frames; `faulty` (if not empty) is a stage between invert and blur.
std::string demo(const std::string& faulty) {
  return "pipeline: demo\n"
         "window: 8\n"
         "dead_letter_after: " +
         std::to_string(dead_after) +
         "\n"
         "dead_letters: \"{dir}/dead.jsonl\"\n"
         "restart: {max_restarts: 100, period_s: 60, backoff_initial_ms: 2, backoff_max_ms: 5}\n"
         "stages:\n"
         "  - {name: source, plugin: testsrc, config: {width: 64, height: 36, count: " +
         std::to_string(frames_per_stream) + ", streams: " + std::to_string(streams) +
         "}}\n"
         "  - {name: invert, plugin: invert}\n" +
         (faulty.empty() ? "" : "  - {name: faulty, plugin: faulty, config: {" + faulty + "}}\n") +
         "  - {name: blur, plugin: blur, config: {radius: 2}, replicas: 2, routing: by_stream}\n"
         "  - {name: watermark, plugin: watermark, config: {text: TROUPE}}\n"
         "  - {name: checksum, plugin: checksum, config: {output: \"{dir}/sum.txt\", frames_log: "
         "\"{dir}/frames.txt\"}}\n"
         "edges: [\"source -> invert -> " +
         (faulty.empty() ? "" : "faulty -> ") + "blur -> watermark -> checksum\"]\n";
}

// The losses the fault schedule implies: faulty sees the source's order (seq-major over
// streams), counts the frames each generation processes, dies on every Nth and on the
// poison seq; a lost input goes to the next generation first, and one lost `dead_after`
// times is skipped from then on.
struct schedule {
  int losses = 0;
  std::set<std::pair<uint64_t, uint64_t>> dead;  // (stream, seq)
};
schedule expected_schedule() {
  schedule s;
  std::map<std::pair<uint64_t, uint64_t>, int> lost;
  int seen = 0;
  for (int i = 0; i < frames_per_stream * streams;) {
    std::pair<uint64_t, uint64_t> f{i % streams, i / streams};
    if (s.dead.count(f)) {
      ++i;
      continue;
    }
    ++seen;
    if (f.second == poison_seq || seen % crash_every == 0) {
      ++s.losses;
      seen = 0;
      if (++lost[f] == dead_after) s.dead.insert(f), ++i;
      continue;
    }
    ++i;
  }
  return s;
}

}  // namespace

TEST(delivery, crashes_lose_only_dead_letters_and_duplicate_nothing_and_the_books_balance) {
  temp_dir clean_dir, faulty_dir;
  auto clean_plan = plan_yaml(clean_dir, demo(""));
  ASSERT_OK(clean_plan);
  auto clean = run_pipeline(*clean_plan);
  ASSERT_TRUE(clean.completed);
  ASSERT_TRUE(clean.outcome.ok) << clean.outcome.reason;
  auto want = read_frames_log((clean_dir.path() / "frames.txt").string());
  ASSERT_EQ(want.hashes.size(), size_t{frames_per_stream * streams});

  auto faulty_plan = plan_yaml(faulty_dir, demo("action: fatal, every: " + std::to_string(crash_every) +
                                                ", on_seq: " + std::to_string(poison_seq)));
  ASSERT_OK(faulty_plan);
  auto r = run_pipeline(*faulty_plan);
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;

  // The sink saw every frame of the clean run, byte for byte, but the dead letters; none twice.
  auto sched = expected_schedule();
  auto got = read_frames_log((faulty_dir.path() / "frames.txt").string());
  EXPECT_EQ(got.repeated, 0u);
  EXPECT_EQ(checksum_line((faulty_dir.path() / "sum.txt").string(), "total")["duplicates"], "0");
  auto expected = want.hashes;
  for (auto& [stream, seq] : sched.dead) expected.erase({stream, seq, 0});
  EXPECT_EQ(got.hashes, expected);
  ASSERT_EQ(sched.dead.size(), size_t{streams});

  // The dead letters are the poison frames, recorded once each.
  std::set<std::pair<uint64_t, uint64_t>> dead;
  for (auto& l : r.dead_letters->records()) {
    EXPECT_EQ(l.stage, "faulty");
    EXPECT_EQ(l.losses, uint32_t{dead_after});
    dead.insert({l.frame.stream, l.frame.seq});
  }
  EXPECT_EQ(dead, sched.dead);

  // Restarts and generations are what the schedule implies.
  auto& f = r.slot("faulty");
  EXPECT_EQ(f.restarts.Value(), sched.losses);
  EXPECT_EQ(f.generation.load(), uint64_t(sched.losses) + 1);
  EXPECT_FALSE(f.quarantined.load());
  EXPECT_EQ(f.quarantined_gauge.Value(), 0);
  for (auto& s : r.slots)
    if (s->stage != "faulty") {
      EXPECT_EQ(s->restarts.Value(), 0) << s->name();
    }

  // Every input of every instance is accounted for, and nothing is held at the end.
  for (auto& s : r.slots) {
    expect_books_balance(*s);
    EXPECT_EQ(s->queue_depth.Value(), 0) << s->name();
  }
  EXPECT_GT(f.frames_abandoned.Value(), 0);
  EXPECT_EQ(r.slot("checksum").frames_in.Value(), double(expected.size()));
  EXPECT_EQ(r.slot("checksum").frames_filtered.Value(), double(expected.size()));  // a sink emits nothing
}

namespace {

// testsrc (two streams of `count` small frames) -> {name: f, <f>} -> checksum, with the
// sink's frames log.
std::string through_f(const std::string& f, int count) {
  return "pipeline: through-f\n"
         "window: 4\n"
         "stages:\n"
         "  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: " +
         std::to_string(count) +
         ", streams: 2}}\n"
         "  - {name: f, " +
         f +
         "}\n"
         "  - {name: sink, plugin: checksum, config: {output: \"{dir}/sum.txt\", frames_log: \"{dir}/frames.txt\"}}\n"
         "edges: [\"src -> f -> sink\"]\n";
}

// f: one faulty replica to start, each frame taking slow_ms (its outputs are the same at any
// speed).
std::string scalable(const std::string& f_mode, int count, int slow_ms) {
  // A deadline far past a slow call on a loaded machine: the only losses are the test's own.
  return through_f("plugin: faulty, deadline_ms: 20000, " + f_mode + "config: {action: slow, every: 1, slow_ms: " +
                       std::to_string(slow_ms) + "}, routing: round_robin",
                   count);
}

double completed(const slot_table& slots, const std::string& stage) {
  double n = 0;
  for (auto& s : slots)
    if (s->stage == stage) n += s->frames_completed.Value();
  return n;
}

}  // namespace

TEST(delivery, scaling_a_stage_up_and_down_while_frames_flow_loses_and_duplicates_nothing) {
  for (std::string mode : {"", "mode: isolated, "}) {
    SCOPED_TRACE(mode.empty() ? "embedded" : "isolated");
    // Frames of 10 ms, enough of them that replicas started and retired mid-run (isolated
    // workers are processes, slow to start under a sanitizer) do so while frames still flow.
    constexpr int count = 400;
    temp_dir clean_dir;
    auto clean = plan_yaml(clean_dir, scalable(mode, count, 0));
    ASSERT_OK(clean);
    auto want_run = run_pipeline(*clean);
    ASSERT_TRUE(want_run.completed && want_run.outcome.ok) << want_run.outcome.reason;
    auto want = read_frames_log((clean_dir.path() / "frames.txt").string());
    ASSERT_EQ(want.hashes.size(), 2u * count);

    temp_dir d;
    auto p = plan_yaml(d, scalable(mode, count, 10));
    ASSERT_OK(p);
    enum { start, up, down, done } step = start;
    std::vector<caf::error> refusals;
    caf::error busy;
    bool retired_while_running = false;
    auto r = run_pipeline(*p, 60s, {}, {}, {}, [&](const slot_table& slots, const pipeline_controls& c) {
      auto scale = c.scale;
      auto n = completed(slots, "f");
      if (step == start && n >= 30) {
        refusals = {scale("src", 2), scale("nope", 2), scale("f", 0)};
        EXPECT_FALSE(scale("f", 3));
        step = up;
      } else if (step == up && n >= 150 && std::all_of(slots.begin(), slots.end(), [](auto& s) {
                   return s->stage != "f" || s->frames_in.Value() > 0;
                 })) {  // every replica took frames
        EXPECT_FALSE(scale("f", 1));
        busy = scale("f", 2);  // two replicas drain now
        step = down;
      } else if (step == down) {
        // Both replicas scaled away are stopped while the pipeline still runs.
        int stopped = 0;
        for (auto& s : slots)
          if (s->stage == "f" && s->replica > 0 && s->state.load() == instance_state::stopped) ++stopped;
        if (stopped == 2) {
          retired_while_running = n < 2 * count;
          step = done;
        }
      }
      return step != done;
    });
    ASSERT_TRUE(r.completed);
    EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
    ASSERT_EQ(step, done);
    EXPECT_TRUE(retired_while_running);
    ASSERT_EQ(refusals.size(), 3u);
    EXPECT_EQ(code_of(refusals[0]), errc::refused);
    EXPECT_THAT(describe(refusals[0]), ::testing::HasSubstr("is a source"));
    EXPECT_EQ(code_of(refusals[1]), errc::not_found);
    EXPECT_THAT(describe(refusals[1]), ::testing::HasSubstr("no stage named 'nope'"));
    EXPECT_EQ(code_of(refusals[2]), errc::refused);
    EXPECT_THAT(describe(refusals[2]), ::testing::HasSubstr("between 1 and"));
    EXPECT_FALSE(retryable(refusals[0]));
    // Asked while replicas drain: not now, but the same request may succeed later.
    EXPECT_EQ(code_of(busy), errc::busy) << describe(busy);
    EXPECT_TRUE(retryable(busy));
    // Three replicas of f took frames; the sink saw every frame once, with the clean run's bytes.
    int f_slots = 0;
    for (auto& s : r.slots)
      if (s->stage == "f") {
        ++f_slots;
        EXPECT_GT(s->frames_in.Value(), 0) << s->name();
        EXPECT_EQ(s->frames_abandoned.Value(), 0) << s->name();
      }
    EXPECT_EQ(f_slots, 3);
    EXPECT_EQ(completed(r.slots, "f"), 2 * count);
    auto got = read_frames_log((d.path() / "frames.txt").string());
    EXPECT_EQ(got.repeated, 0u);
    EXPECT_EQ(got.hashes, want.hashes);
    EXPECT_EQ(r.slot("sink").duplicates.Value(), 0);
    for (auto& s : r.slots) expect_books_balance(*s);
  }
}

namespace {

// Puts version v of the versioned plugin into dir/versioned, as an operator would: each file
// written beside its place, then renamed over it.
void install_versioned(const std::filesystem::path& dir, int v) {
  namespace fs = std::filesystem;
  auto from = fs::path(TROUPE_VERSIONED_DIR) / ("v" + std::to_string(v));
  fs::create_directories(dir / "versioned");
  for (auto name : {"libtroupe_versioned.so", "plugin.yaml"}) {
    fs::copy_file(from / name, dir / "versioned" / (std::string(name) + ".new"), fs::copy_options::overwrite_existing);
    fs::rename(dir / "versioned" / (std::string(name) + ".new"), dir / "versioned" / name);
  }
}

// f: two replicas of the versioned plugin, each frame taking delay_ms (its outputs are the same
// at any speed).
// Its calls' deadline is long: a reload under a sanitizer on a loaded machine may hold a call
// of an old worker up for seconds, and a loss there is not what these tests are about.
std::string reloadable(const std::string& f_mode, int count, int delay_ms = 12) {
  return through_f("plugin: versioned, " + f_mode +
                       "replicas: 2, deadline_ms: 20000, config: {delay_ms: " + std::to_string(delay_ms) + "}",
                   count);
}

// The sink's frames log of a run of version v alone.
frames_log versioned_run(const std::string& mode, int v, int count) {
  temp_dir plugins, d;
  install_versioned(plugins.path(), v);
  auto p = plan_yaml(d, reloadable(mode, count, 0), plugins.path().string());
  EXPECT_TRUE(static_cast<bool>(p));
  auto r = run_pipeline(*p);
  EXPECT_TRUE(r.completed && r.outcome.ok) << r.outcome.reason;
  return read_frames_log((d.path() / "frames.txt").string());
}

}  // namespace

TEST(delivery, a_new_library_swapped_in_while_frames_flow_serves_from_one_frame_on) {
  for (std::string mode : {"", "mode: isolated, "}) {
    SCOPED_TRACE(mode.empty() ? "embedded" : "isolated");
    // 800 frames of 12 ms: the new version's workers (processes, slow to start under a
    // sanitizer) are up well before the source runs dry.
    constexpr int count = 400;
    auto v1 = versioned_run(mode, 1, count), v2 = versioned_run(mode, 2, count);
    ASSERT_EQ(v1.hashes.size(), 2u * count);
    temp_dir plugins, d;
    install_versioned(plugins.path(), 1);
    auto p = plan_yaml(d, reloadable(mode, count), plugins.path().string());
    ASSERT_OK(p);
    caf::error answer = make_error(errc::io_error, "not asked");
    auto r = run_pipeline(*p, 60s, {}, {}, {}, [&](const slot_table& slots, const pipeline_controls& c) {
      if (completed(slots, "f") < 40) return true;
      install_versioned(plugins.path(), 2);  // the new library, put in place of the old
      answer = c.reload({"f", "", {}});
      return false;
    });
    ASSERT_TRUE(r.completed);
    EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
    EXPECT_FALSE(answer) << describe(answer);
    // Per stream: version 1 up to some frame, version 2 from that frame on; each frame once.
    auto got = read_frames_log((d.path() / "frames.txt").string());
    EXPECT_EQ(got.repeated, 0u);
    ASSERT_EQ(got.hashes.size(), 2u * count);
    for (uint64_t stream = 0; stream < 2; ++stream) {
      SCOPED_TRACE("stream " + std::to_string(stream));
      int switched_at = -1, by_v1 = 0, by_v2 = 0;
      for (int seq = 0; seq < count; ++seq) {
        auto k = std::make_tuple(stream, uint64_t(seq), uint32_t{0});
        bool is_v1 = got.hashes[k] == v1.hashes[k], is_v2 = got.hashes[k] == v2.hashes[k];
        ASSERT_TRUE(is_v1 != is_v2) << "seq " << seq << " is neither version's output";
        (is_v1 ? by_v1 : by_v2) += 1;
        if (is_v2 && switched_at < 0) switched_at = seq;
        if (is_v1) {
          EXPECT_LT(switched_at, 0) << "seq " << seq << " by version 1 after the switch at " << switched_at;
        }
      }
      EXPECT_GT(by_v1, 0);
      EXPECT_GT(by_v2, 0);
    }
    // The new version runs as the next generation of each replica; the old ones stopped.
    int old_stopped = 0, new_running = 0;
    for (auto& s : r.slots) {
      if (s->stage != "f") continue;
      if (s->generation.load() == 1 && s->state.load() == instance_state::stopped) ++old_stopped;
      if (s->generation.load() == 2 && s->frames_in.Value() > 0) ++new_running;
      EXPECT_EQ(s->frames_abandoned.Value(), 0) << s->name();
    }
    EXPECT_EQ(old_stopped, 2);
    EXPECT_EQ(new_running, 2);
    double f_in = 0;
    for (auto& s : r.slots)
      if (s->stage == "f") f_in += s->frames_in.Value();
    EXPECT_EQ(f_in, 2 * count);  // each replica, old and new, counts only what it took
    for (auto& s : r.slots) expect_books_balance(*s);
  }
}

TEST(delivery, a_new_version_that_does_not_start_leaves_the_old_one_serving) {
  constexpr int count = 60;
  auto v1 = versioned_run("", 1, count);
  temp_dir plugins, d;
  install_versioned(plugins.path(), 1);
  auto p = plan_yaml(d, reloadable("", count), plugins.path().string());
  ASSERT_OK(p);
  caf::error answer = make_error(errc::io_error, "not asked"), bad_config = answer;
  auto r = run_pipeline(*p, 60s, {}, {}, {}, [&](const slot_table& slots, const pipeline_controls& c) {
    if (completed(slots, "f") < 10) return true;
    bad_config = c.reload({"f", "", {{"delay_ms", "-5"}}});
    answer = c.reload({"f", "", {{"fail_start", "true"}}});
    return false;
  });
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  EXPECT_EQ(code_of(bad_config), errc::invalid_config);
  EXPECT_THAT(describe(bad_config), ::testing::HasSubstr("delay_ms"));
  EXPECT_EQ(code_of(answer), errc::start_failed);
  EXPECT_THAT(describe(answer), ::testing::HasSubstr("configured to fail start"));
  auto got = read_frames_log((d.path() / "frames.txt").string());
  EXPECT_EQ(got.repeated, 0u);
  EXPECT_EQ(got.hashes, v1.hashes);  // version 1 served every frame
  for (auto& s : r.slots) expect_books_balance(*s);
}

// Two reloads asked at once, of two stages: the second waits for the first, then runs; both
// are answered as done, one after the other, and every frame reaches the sink once. (Both
// stages are isolated: a new version's worker takes tens of milliseconds to start, so the
// two asks overlap.)
TEST(delivery, overlapping_reloads_of_two_stages_are_queued_not_refused) {
  constexpr int count = 300;
  temp_dir d;
  auto p = plan_yaml(d, R"(pipeline: two
window: 4
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 300, streams: 2}}
  - {name: f, plugin: faulty, mode: isolated, config: {action: slow, every: 1, slow_ms: 4}}
  - {name: g, plugin: faulty, mode: isolated, config: {action: slow, every: 1, slow_ms: 4}}
  - {name: sink, plugin: checksum, config: {output: "{dir}/sum.txt", frames_log: "{dir}/frames.txt"}}
edges: ["src -> f -> g -> sink"]
)");
  ASSERT_OK(p);
  caf::error answer_f = make_error(errc::io_error, "not asked"), answer_g = answer_f;
  std::thread asks;
  std::atomic<bool> answered{false};
  // Asked from a thread of their own, joined while the pipeline still runs (it runs for
  // seconds; the reloads take well under one).
  auto r = run_pipeline(*p, 60s, {}, {}, {}, [&](const slot_table& slots, const pipeline_controls& c) {
    if (!asks.joinable()) {
      if (completed(slots, "g") < 20) return true;
      asks = std::thread([&, c] {
        std::thread second([&] { answer_g = c.reload({"g", "", {{"slow_ms", "1"}}}); });
        answer_f = c.reload({"f", "", {{"slow_ms", "1"}}});
        second.join();
        answered = true;
      });
      return true;
    }
    if (!answered) return true;
    asks.join();
    return false;
  });
  if (asks.joinable()) asks.join();
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  EXPECT_FALSE(answer_f) << describe(answer_f);
  EXPECT_FALSE(answer_g) << describe(answer_g);
  std::vector<std::string> reloads;
  for (auto& e : r.events->since(0))
    if (e.kind == event_kind::reload) reloads.push_back(e.stage + " " + e.state);
  ASSERT_EQ(reloads.size(), 4u);
  EXPECT_EQ(reloads[1], reloads[0].substr(0, 1) + " reloaded");  // one at a time
  EXPECT_EQ(reloads[3], reloads[2].substr(0, 1) + " reloaded");
  EXPECT_NE(reloads[0].substr(0, 1), reloads[2].substr(0, 1));
  auto got = read_frames_log((d.path() / "frames.txt").string());
  EXPECT_EQ(got.repeated, 0u);
  EXPECT_EQ(got.hashes.size(), 2u * count);
  for (auto& s : r.slots) expect_books_balance(*s);
}

// Each reload loads the plugin anew from a private copy; once the old version's replicas
// have drained and stopped, its library and the copy are let go: after five reloads one copy
// is open, not five.
TEST(delivery, reloads_let_go_of_the_old_versions_libraries) {
  auto copies_open = [] {
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      auto target = std::filesystem::read_symlink(e.path(), ec);
      if (!ec && target.string().find("troupe-plugin") != std::string::npos) ++n;
    }
    return n;
  };
  temp_dir d;
  auto p = plan_yaml(d, R"(pipeline: versions
stages:
  - {name: src, plugin: testsrc, config: {width: 8, height: 8, count: 100000, streams: 1, rate: 2000}}
  - {name: f, plugin: passthrough}
  - {name: sink, plugin: checksum, config: {output: "{dir}/sum.txt"}}
edges: ["src -> f -> sink"]
)");
  ASSERT_OK(p);
  std::thread asks;
  std::atomic<bool> done{false};
  std::vector<caf::error> answers;
  size_t open_after = SIZE_MAX;
  // The pipeline is stopped once the copies are counted (it would run for 50 s).
  auto stop_when = [&](const slot_table&) { return done.load(); };
  auto r = run_pipeline(*p, 60s, {}, {}, stop_when, [&](const slot_table& slots, const pipeline_controls& c) {
    if (!asks.joinable()) {
      if (completed(slots, "f") < 20) return true;
      asks = std::thread([&, c] {
        for (int k = 0; k < 5; ++k) {
          // While the last old version still drains, a reload is refused as busy: try again.
          auto a = c.reload({"f", "", {}});
          for (int t = 0; t < 200 && code_of(a) == errc::busy; ++t) {
            std::this_thread::sleep_for(10ms);
            a = c.reload({"f", "", {}});
          }
          answers.push_back(a);
        }
        // The old versions drain and stop after the answers: give them a few seconds.
        for (int wait = 0; wait < 100 && copies_open() > 1; ++wait) std::this_thread::sleep_for(50ms);
        open_after = copies_open();
        done = true;
      });
      return true;
    }
    return !done;
  });
  if (asks.joinable()) asks.join();
  ASSERT_EQ(answers.size(), 5u);
  for (auto& a : answers) EXPECT_FALSE(a) << describe(a);
  EXPECT_EQ(open_after, 1u) << "the copies of old versions are still open";
  EXPECT_FALSE(r.completed && !r.outcome.ok) << r.outcome.reason;
}

// A paused stage holds what its credits let in and processes nothing; its producers wait.
// Resumed, it goes on: every frame reaches the sink once, and the pause is no failure.
TEST(delivery, a_paused_stage_holds_its_inputs_under_credits_and_resume_loses_none) {
  constexpr int count = 150;
  temp_dir d;
  auto p = plan_yaml(d, scalable("", count, 2));
  ASSERT_OK(p);
  caf::error paused = make_error(errc::io_error, "not asked"), resumed = paused, unknown;
  double at_pause = -1, later = -1, made_at_pause = -1, made_later = -1, held = -1;
  auto pause_started = std::chrono::steady_clock::now();
  int step = 0;
  auto r = run_pipeline(*p, 60s, {}, {}, {}, [&](const slot_table& slots, const pipeline_controls& c) {
    auto since = std::chrono::steady_clock::now() - pause_started;
    auto& f = *std::find_if(slots.begin(), slots.end(), [](auto& s) { return s->stage == "f"; });
    auto& src = *std::find_if(slots.begin(), slots.end(), [](auto& s) { return s->stage == "src"; });
    switch (step) {
      case 0:
        if (completed(slots, "f") < 20) return true;
        paused = c.pause("f", true);
        unknown = c.pause("nope", true);
        pause_started = std::chrono::steady_clock::now();
        step = 1;
        return true;
      case 1:  // a call under way when the pause came may still finish
        if (since < 150ms) return true;
        at_pause = completed(slots, "f");
        made_at_pause = src->frames_out.Value();
        step = 2;
        return true;
      case 2:
        if (since < 550ms) return true;
        later = completed(slots, "f");
        made_later = src->frames_out.Value();
        held = f->queue_depth.Value();
        EXPECT_TRUE(f->paused.load());
        resumed = c.pause("f", false);
        return false;
    }
    return false;
  });
  ASSERT_TRUE(r.completed);
  EXPECT_TRUE(r.outcome.ok) << r.outcome.reason;
  EXPECT_FALSE(paused) << describe(paused);
  EXPECT_FALSE(resumed) << describe(resumed);
  EXPECT_THAT(describe(unknown), testing::HasSubstr("nope"));
  EXPECT_EQ(at_pause, later);            // nothing processed while paused
  EXPECT_EQ(made_at_pause, made_later);  // and the source waited on its credits
  EXPECT_GT(held, 0);
  EXPECT_LE(held, 4);  // the window: what the credits let in
  EXPECT_FALSE(r.slot("f").paused.load());
  EXPECT_EQ(r.slot("f").restarts.Value(), 0);
  auto got = read_frames_log((d.path() / "frames.txt").string());
  EXPECT_EQ(got.repeated, 0u);
  EXPECT_EQ(got.hashes.size(), 2u * count);
  for (auto& s : r.slots) expect_books_balance(*s);
  std::vector<std::string> pauses;
  for (auto& e : r.events->since(0))
    if (e.kind == event_kind::pause) pauses.push_back(e.stage + " " + e.state);
  EXPECT_EQ(pauses, (std::vector<std::string>{"f paused", "f resumed"}));
}
