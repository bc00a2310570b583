#include <troupe/stats.hpp>

#include <troupe/plugin.h>

#include <algorithm>
#include <cmath>

namespace troupe {

namespace {
template <class B>
auto& build(B&& b, const char* name, const char* help, const std::map<std::string, std::string>& node,
            prometheus::Registry& r) {
  return b.Name(name).Help(help).Labels(node).Register(r);
}
}  // namespace

metrics::metrics(const std::string& node) : metrics(std::make_shared<prometheus::Registry>(), {{"node", node}}) {
  prometheus::BuildGauge()
      .Name("troupe_build_info")
      .Help("Always 1: the version of troupe that serves these metrics and the plugin ABI it speaks.")
      .Labels({{"node", node}})
      .Register(*registry_)
      .Add({{"version", TROUPE_VERSION},
            {"abi", std::to_string(TROUPE_ABI_MAJOR) + "." + std::to_string(TROUPE_ABI_MINOR)}})
      .Set(1);
}

metrics::metrics(std::shared_ptr<prometheus::Registry> r, const std::map<std::string, std::string>& node)
    : frames_in(build(prometheus::BuildCounter(), "troupe_instance_frames_in_total",
                      "Input frames the instance took (duplicates excluded).", node, *r)),
      frames_completed(build(prometheus::BuildCounter(), "troupe_instance_frames_completed_total",
                             "Input frames processed with one or more outputs.", node, *r)),
      frames_filtered(build(prometheus::BuildCounter(), "troupe_instance_frames_filtered_total",
                            "Input frames processed with no output.", node, *r)),
      frames_abandoned(build(prometheus::BuildCounter(), "troupe_instance_frames_abandoned_total",
                             "Input frames held by a lost generation; their senders send them again.", node, *r)),
      frames_out(build(prometheus::BuildCounter(), "troupe_instance_frames_out_total", "Frames the instance emitted.",
                       node, *r)),
      bytes_in(build(prometheus::BuildCounter(), "troupe_instance_bytes_in_total",
                     "Payload bytes of the input frames the instance took.", node, *r)),
      bytes_out(build(prometheus::BuildCounter(), "troupe_instance_bytes_out_total",
                      "Payload bytes the instance emitted.", node, *r)),
      errors(build(prometheus::BuildCounter(), "troupe_instance_errors_total", "Input frames whose processing failed.",
                   node, *r)),
      restarts(build(prometheus::BuildCounter(), "troupe_instance_restarts_total",
                     "Restarts of the instance slot after a failure.", node, *r)),
      stale_dropped(build(prometheus::BuildCounter(), "troupe_instance_stale_outputs_dropped_total",
                          "Outputs dropped because their generation was no longer current.", node, *r)),
      duplicates(build(prometheus::BuildCounter(), "troupe_instance_duplicates_dropped_total",
                       "Input frames dropped because the instance had taken them already.", node, *r)),
      replayed(build(prometheus::BuildCounter(), "troupe_instance_frames_replayed_total",
                     "Outputs sent again to the successor of a receiver that was lost, replaced or moved "
                     "to another node without acknowledging them.",
                     node, *r)),
      dead_letters(build(prometheus::BuildCounter(), "troupe_instance_dead_letters_total",
                         "Input frames given up on after killing the stage's instances repeatedly.", node, *r)),
      source_waits(build(prometheus::BuildCounter(), "troupe_instance_source_waits_total",
                         "Times a source had no frame due and was asked again after a short wait.", node, *r)),
      generation(build(prometheus::BuildGauge(), "troupe_instance_generation",
                       "Current generation of the instance slot.", node, *r)),
      queue_depth(build(prometheus::BuildGauge(), "troupe_instance_queue_depth",
                        "Input frames the instance holds, not yet done.", node, *r)),
      in_flight(build(prometheus::BuildGauge(), "troupe_instance_in_flight",
                      "Outputs sent to the next stage and not yet acknowledged.", node, *r)),
      up(build(prometheus::BuildGauge(), "troupe_instance_up", "1 while the instance is running, else 0.", node, *r)),
      quarantined(build(prometheus::BuildGauge(), "troupe_instance_quarantined",
                        "1 once the instance slot is quarantined: restarted past its stage's policy, not again.", node,
                        *r)),
      healthy(build(prometheus::BuildGauge(), "troupe_instance_healthy",
                    "The instance's last health answer (asked while it is idle: every 5 s in the node's process, "
                    "every second in a worker): 1 healthy, 0 not, after which it is lost and restarted.",
                    node, *r)),
      worker_memory(build(prometheus::BuildGauge(), "troupe_instance_worker_memory_bytes",
                          "Memory the instance's isolated worker uses: its resident set, or what its cgroup "
                          "(the worker and what it forked) is charged if more; 0 for an embedded instance.",
                          node, *r)),
      worker_throttled(build(prometheus::BuildCounter(), "troupe_instance_worker_cpu_throttled_seconds_total",
                             "Time the instance's isolated workers were held back by their CPU limit (cpu_cores).",
                             node, *r)),
      worker_cpu(build(prometheus::BuildCounter(), "troupe_instance_worker_cpu_seconds_total",
                       "CPU time the instance's isolated workers used (and the children they reaped).", node, *r)),
      idle_releases(build(prometheus::BuildCounter(), "troupe_instance_idle_releases_total",
                          "Times the instance's isolated worker ended after idle_release_s without input (it starts "
                          "again on the next frame).",
                          node, *r)),
      processing(build(prometheus::BuildHistogram(), "troupe_instance_processing_seconds",
                       "Time the plugin spent on one input frame.", node, *r)),
      registry_(std::move(r)) {}

namespace {
const prometheus::Histogram::BucketBoundaries& processing_buckets() {
  static const prometheus::Histogram::BucketBoundaries b{0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                         0.025,   0.05,    0.1,    0.25,   0.5,   1,      2.5,   5};
  return b;
}
}  // namespace

double processing_quantile(prometheus::Histogram& h, double q) {
  auto m = h.Collect().histogram;
  if (m.sample_count == 0) return 0;
  const double rank = q * static_cast<double>(m.sample_count);
  double lower = 0;
  uint64_t below = 0;
  for (auto& b : m.bucket) {
    if (static_cast<double>(b.cumulative_count) >= rank) {
      if (!std::isfinite(b.upper_bound)) return lower;  // past the last bound: the last bound
      auto in = b.cumulative_count - below;
      return in == 0 ? b.upper_bound : lower + (b.upper_bound - lower) * (rank - below) / static_cast<double>(in);
    }
    lower = b.upper_bound;
    below = b.cumulative_count;
  }
  return lower;
}

void call_timings::add(double seconds) {
  auto& b = processing_buckets();
  if (counts_.empty()) counts_.resize(b.size() + 1);
  // The histogram's own rule: the first bucket whose bound is at least the value.
  counts_[static_cast<size_t>(std::lower_bound(b.begin(), b.end(), seconds) - b.begin())] += 1;
  sum_ += seconds;
}

void call_timings::flush_to(prometheus::Histogram& h) {
  if (counts_.empty()) return;
  h.ObserveMultiple(counts_, sum_);
  counts_.clear();
  sum_ = 0;
}

slot_stats::slot_stats(metrics& m, std::string pipeline_, std::string stage_, std::string plugin_, uint32_t replica_,
                       exec_mode mode_)
    : pipeline(std::move(pipeline_)),
      stage(std::move(stage_)),
      plugin(std::move(plugin_)),
      replica(replica_),
      mode(mode_),
      frames_in(m.frames_in.Add(labels())),
      frames_completed(m.frames_completed.Add(labels())),
      frames_filtered(m.frames_filtered.Add(labels())),
      frames_abandoned(m.frames_abandoned.Add(labels())),
      frames_out(m.frames_out.Add(labels())),
      bytes_in(m.bytes_in.Add(labels())),
      bytes_out(m.bytes_out.Add(labels())),
      errors(m.errors.Add(labels())),
      restarts(m.restarts.Add(labels())),
      stale_dropped(m.stale_dropped.Add(labels())),
      duplicates(m.duplicates.Add(labels())),
      replayed(m.replayed.Add(labels())),
      dead_letters(m.dead_letters.Add(labels())),
      source_waits(m.source_waits.Add(labels())),
      generation_gauge(m.generation.Add(labels())),
      queue_depth(m.queue_depth.Add(labels())),
      in_flight(m.in_flight.Add(labels())),
      up(m.up.Add(labels())),
      quarantined_gauge(m.quarantined.Add(labels())),
      healthy(m.healthy.Add(labels())),
      worker_memory(m.worker_memory.Add(labels())),
      worker_throttled(m.worker_throttled.Add(labels())),
      worker_cpu(m.worker_cpu.Add(labels())),
      idle_releases(m.idle_releases.Add(labels())),
      processing(m.processing.Add(labels(), processing_buckets())),
      registry_(m.registry()) {}

std::map<std::string, std::string> slot_stats::labels() const {
  return {{"pipeline", pipeline}, {"stage", stage}, {"plugin", plugin}, {"replica", std::to_string(replica)}};
}

std::string slot_stats::name() const { return replica == 0 ? stage : stage + "#" + std::to_string(replica); }

}  // namespace troupe
