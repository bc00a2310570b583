// Credits on every edge: a slow stage holds its upstream back; memory stays bounded; a
// stop lands while every credit is in use.
#include "pipeline_runner.hpp"

#include <unistd.h>

using namespace troupe;
using namespace troupe::test;
using namespace std::chrono_literals;

namespace {

double rss_mb() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

const slot_stats& find(const slot_table& slots, const std::string& stage) {
  for (auto& s : slots)
    if (s->stage == stage) return *s;
  throw std::runtime_error("no stage " + stage);
}

}  // namespace

TEST(flow_control, a_slow_sink_bounds_frames_in_flight_and_memory) {
  temp_dir d;
  // About 0.9 MB per frame from a source with no rate limit, into a stage that takes
  // 10 ms per frame: without credits the source would queue hundreds of MB per second.
  auto p = plan_yaml(d, R"(pipeline: slow
window: 4
stages:
  - {name: src, plugin: testsrc, config: {width: 640, height: 480, count: 1000000}}
  - {name: pass, plugin: passthrough}
  - {name: slow, plugin: faulty, config: {action: slow, every: 1, slow_ms: 10}}
  - {name: sink, plugin: checksum, config: {output: "{dir}/sum.txt"}}
edges: ["src -> pass -> slow -> sink"]
)");
  ASSERT_OK(p);
  auto start = std::chrono::steady_clock::now();
  double most_in_flight = 0, most_queued = 0, rss_settled = 0, rss_most = 0;
  auto r = run_pipeline(
      *p, 30s,
      [&](const slot_table& slots) {
        for (auto& s : slots) {
          most_in_flight = std::max(most_in_flight, s->in_flight.Value());
          most_queued = std::max(most_queued, s->queue_depth.Value());
        }
        auto t = std::chrono::steady_clock::now() - start;
        if (t > 700ms && rss_settled == 0) rss_settled = rss_mb();
        if (rss_settled > 0) rss_most = std::max(rss_most, rss_mb());
        return true;
      },
      {},
      [&](const slot_table& slots) {
        return std::chrono::steady_clock::now() - start > 3s && find(slots, "sink").frames_in.Value() > 20;
      });
  EXPECT_FALSE(r.completed);  // stopped from outside, long before the source ran dry
  EXPECT_LE(most_in_flight, 4);
  EXPECT_LE(most_queued, 4);
  auto sink_in = find(r.slots, "sink").frames_in.Value();
  auto src_out = find(r.slots, "src").frames_out.Value();
  EXPECT_GT(sink_in, 20);
  // The source made only what the slow stage could take, plus the frames in flight.
  EXPECT_LE(src_out, sink_in + 4 * 3 + 16 + 32);
  EXPECT_LT(rss_most - rss_settled, 64) << "settled at " << rss_settled << " MB, peaked at " << rss_most << " MB";
}

// The frame window is wide by default (small frames travel in batches); for large frames the
// byte limit is what bounds a slow stage's backlog.
TEST(flow_control, the_byte_limit_bounds_large_frames_under_the_default_window) {
  temp_dir d;
  // 1920x1080x3 = about 6 MB per frame; 24 MiB allows four per receiver.
  auto p = plan_yaml(d, R"(pipeline: wide
window_bytes: 24MiB
stages:
  - {name: src, plugin: testsrc, config: {width: 1920, height: 1080, count: 1000000}}
  - {name: slow, plugin: faulty, config: {action: slow, every: 1, slow_ms: 20}}
  - {name: sink, plugin: checksum, config: {output: "{dir}/sum.txt"}}
edges: ["src -> slow -> sink"]
)");
  ASSERT_OK(p);
  ASSERT_EQ((*p)->window, default_window);
  double most_in_flight = 0;
  auto r = run_pipeline(
      *p, 30s,
      [&](const slot_table& slots) {
        most_in_flight = std::max(most_in_flight, find(slots, "src").in_flight.Value());
        return true;
      },
      // Stopped from outside once the sink took a dozen frames (however slow the machine).
      {}, [&](const slot_table& slots) { return find(slots, "sink").frames_in.Value() >= 12; });
  EXPECT_TRUE(r.stopped);
  EXPECT_GE(most_in_flight, 1);
  EXPECT_LE(most_in_flight, 4);
  auto sink_in = find(r.slots, "sink").frames_in.Value();
  EXPECT_GT(sink_in, 10);
  EXPECT_LE(find(r.slots, "src").frames_out.Value(), sink_in + 4 * 2 + 16 + 2);
}

TEST(flow_control, stop_lands_under_full_load_of_6mb_frames) {
  temp_dir d;
  auto p = plan_yaml(d, R"(pipeline: heavy
window: 4
stages:
  - {name: src, plugin: testsrc, config: {width: 1920, height: 1080, count: 1000000}}
  - {name: slow, plugin: faulty, config: {action: slow, every: 1, slow_ms: 50}, replicas: 2}
  - {name: sink, plugin: checksum, config: {output: "{dir}/sum.txt"}}
edges: ["src -> slow -> sink"]
)");
  ASSERT_OK(p);
  auto r = run_pipeline(*p, 30s, {}, {}, [](const slot_table& slots) {
    return find(slots, "sink").frames_in.Value() >= 4;  // every credit in use by now
  });
  EXPECT_TRUE(r.stopped);  // within the harness bound, without draining the queues
  EXPECT_LT(find(r.slots, "src").frames_out.Value(), 60);
  for (auto& s : r.slots) EXPECT_EQ(s->state.load(), instance_state::stopped) << s->name();
}

// A source with frames ready is asked again at once, however its outputs are handed on; only a
// source with nothing due waits (and that is counted).
TEST(flow_control, a_source_with_frames_ready_never_waits_and_a_paced_one_does) {
  temp_dir d;
  auto p = plan_yaml(d, R"(pipeline: eager
stages:
  - {name: src, plugin: testsrc, config: {width: 4, height: 4, count: 2000, streams: 2}}
  - {name: paced, plugin: testsrc, config: {width: 4, height: 4, count: 20, rate: 100}}
  - {name: sink, plugin: checksum, config: {output: "{dir}/sum.txt"}}
  - {name: sink2, plugin: checksum, config: {output: "{dir}/sum2.txt"}}
edges: ["src -> sink", "paced -> sink2"]
)");
  ASSERT_TRUE(p) << describe(p.error());
  auto r = run_pipeline(*p);
  ASSERT_TRUE(r.completed);
  EXPECT_EQ(r.slot("sink").frames_in.Value(), 4000);
  EXPECT_EQ(r.slot("src").source_waits.Value(), 0) << "an unpaced source was put to wait";
  EXPECT_EQ(r.slot("sink2").frames_in.Value(), 20);
  EXPECT_GT(r.slot("paced").source_waits.Value(), 0) << "a paced source is asked before its frames are due";
}
