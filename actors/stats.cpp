#include <troupe/stats.hpp>

#include <troupe/plugin.h>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <unordered_map>

namespace troupe {

/// The slots' series, written at each scrape from the slots that exist then. Slots with the
/// same labels (a pipeline deployed again under its name while its old slots are still held)
/// are one series: their counters add up, a gauge is the newest slot's.
class slot_families : public prometheus::Collectable {
 public:
  explicit slot_families(std::string node) : node_(std::move(node)) {}

  void add(const slot_stats* s) {
    std::lock_guard<std::mutex> lock(mutex_);
    live_.emplace(s, next_++);
  }
  void remove(const slot_stats* s) {
    std::lock_guard<std::mutex> lock(mutex_);
    live_.erase(s);
  }
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string node_;
  mutable std::mutex mutex_;  // held while a scrape reads the slots: a slot leaves only after
  std::unordered_map<const slot_stats*, uint64_t> live_;  // the slot, in the order made
  uint64_t next_ = 0;
};

namespace {

// The registry's families and the slots' series, in one collectable for an exposer.
class both : public prometheus::Collectable {
 public:
  both(std::shared_ptr<prometheus::Registry> r, std::shared_ptr<slot_families> s)
      : registry_(std::move(r)), slots_(std::move(s)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    auto out = registry_->Collect();
    for (auto& f : slots_->Collect()) out.push_back(std::move(f));
    return out;
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<slot_families> slots_;
};

struct counter_family {
  const char* name;
  const char* help;
  slot_counter slot_stats::*field;
};
struct gauge_family {
  const char* name;
  const char* help;
  slot_gauge slot_stats::*field;
};

const counter_family counters[] = {
    {"troupe_instance_frames_in_total", "Input frames the instance took (duplicates excluded).",
     &slot_stats::frames_in},
    {"troupe_instance_frames_completed_total", "Input frames processed with one or more outputs.",
     &slot_stats::frames_completed},
    {"troupe_instance_frames_filtered_total", "Input frames processed with no output.", &slot_stats::frames_filtered},
    {"troupe_instance_frames_abandoned_total", "Input frames held by a lost generation; their senders send them again.",
     &slot_stats::frames_abandoned},
    {"troupe_instance_frames_out_total", "Frames the instance emitted.", &slot_stats::frames_out},
    {"troupe_instance_bytes_in_total", "Payload bytes of the input frames the instance took.", &slot_stats::bytes_in},
    {"troupe_instance_bytes_out_total", "Payload bytes the instance emitted.", &slot_stats::bytes_out},
    {"troupe_instance_errors_total", "Input frames whose processing failed.", &slot_stats::errors},
    {"troupe_instance_restarts_total", "Restarts of the instance slot after a failure.", &slot_stats::restarts},
    {"troupe_instance_stale_outputs_dropped_total", "Outputs dropped because their generation was no longer current.",
     &slot_stats::stale_dropped},
    {"troupe_instance_duplicates_dropped_total", "Input frames dropped because the instance had taken them already.",
     &slot_stats::duplicates},
    {"troupe_instance_frames_replayed_total",
     "Outputs sent again to the successor of a receiver that was lost, replaced or moved to another node without "
     "acknowledging them.",
     &slot_stats::replayed},
    {"troupe_instance_dead_letters_total", "Input frames given up on after killing the stage's instances repeatedly.",
     &slot_stats::dead_letters},
    {"troupe_instance_source_waits_total", "Times a source had no frame due and was asked again after a short wait.",
     &slot_stats::source_waits},
    {"troupe_instance_worker_cpu_throttled_seconds_total",
     "Time the instance's isolated workers were held back by their CPU limit (cpu_cores).",
     &slot_stats::worker_throttled},
    {"troupe_instance_worker_cpu_seconds_total",
     "CPU time the instance's isolated workers used (and the children they reaped).", &slot_stats::worker_cpu},
    {"troupe_instance_idle_releases_total",
     "Times the instance's isolated worker ended after idle_release_s without input (it starts again on the next "
     "frame).",
     &slot_stats::idle_releases},
};

const gauge_family gauges[] = {
    {"troupe_instance_generation", "Current generation of the instance slot.", &slot_stats::generation_gauge},
    {"troupe_instance_queue_depth", "Input frames the instance holds, not yet done.", &slot_stats::queue_depth},
    {"troupe_instance_in_flight", "Outputs sent to the next stage and not yet acknowledged.", &slot_stats::in_flight},
    {"troupe_instance_up", "1 while the instance is running, else 0.", &slot_stats::up},
    {"troupe_instance_quarantined",
     "1 once the instance slot is quarantined: restarted past its stage's policy, not again.",
     &slot_stats::quarantined_gauge},
    {"troupe_instance_healthy",
     "The instance's last health answer (asked while it is idle: every 5 s in the node's process, every second in a "
     "worker): 1 healthy, 0 not, after which it is lost and restarted.",
     &slot_stats::healthy},
    {"troupe_instance_worker_memory_bytes",
     "Memory the instance's isolated worker uses: its resident set, or what its cgroup (the worker and what it "
     "forked) is charged if more; 0 for an embedded instance.",
     &slot_stats::worker_memory},
};

const char* const processing_name = "troupe_instance_processing_seconds";
const char* const processing_help =
    "Time the plugin spent on one call: an input frame, or one call of a source for the frames it has ready.";

}  // namespace

std::vector<prometheus::MetricFamily> slot_families::Collect() const {
  std::lock_guard<std::mutex> lock(mutex_);
  // The slots by their labels, and in the order made among those with the same labels.
  std::vector<std::pair<const slot_stats*, uint64_t>> slots(live_.begin(), live_.end());
  auto key = [](const std::pair<const slot_stats*, uint64_t>& s) {
    return std::tie(s.first->pipeline, s.first->stage, s.first->plugin, s.first->replica, s.second);
  };
  std::sort(slots.begin(), slots.end(), [&](auto& a, auto& b) { return key(a) < key(b); });
  auto same = [](const slot_stats* a, const slot_stats* b) {
    return a->pipeline == b->pipeline && a->stage == b->stage && a->plugin == b->plugin && a->replica == b->replica;
  };
  // One metric per distinct label set: [first, last) of slots.
  std::vector<std::pair<size_t, size_t>> series;
  for (size_t i = 0; i < slots.size(); ++i)
    if (i == 0 || !same(slots[i - 1].first, slots[i].first))
      series.emplace_back(i, i + 1);
    else
      series.back().second = i + 1;
  auto labels_of = [&](const slot_stats* s) {
    return std::vector<prometheus::ClientMetric::Label>{{"node", node_},
                                                        {"pipeline", s->pipeline},
                                                        {"plugin", s->plugin},
                                                        {"replica", std::to_string(s->replica)},
                                                        {"stage", s->stage}};
  };
  std::vector<prometheus::MetricFamily> out;
  out.reserve(std::size(counters) + std::size(gauges) + 1);
  for (auto& c : counters) {
    prometheus::MetricFamily f{c.name, c.help, prometheus::MetricType::Counter, {}};
    f.metric.reserve(series.size());
    for (auto [first, last] : series) {
      prometheus::ClientMetric m;
      m.label = labels_of(slots[first].first);
      for (auto i = first; i < last; ++i) m.counter.value += (slots[i].first->*c.field).Value();
      f.metric.push_back(std::move(m));
    }
    out.push_back(std::move(f));
  }
  for (auto& g : gauges) {
    prometheus::MetricFamily f{g.name, g.help, prometheus::MetricType::Gauge, {}};
    f.metric.reserve(series.size());
    for (auto [first, last] : series) {
      prometheus::ClientMetric m;
      m.label = labels_of(slots[first].first);
      m.gauge.value = (slots[last - 1].first->*g.field).Value();
      f.metric.push_back(std::move(m));
    }
    out.push_back(std::move(f));
  }
  prometheus::MetricFamily f{processing_name, processing_help, prometheus::MetricType::Histogram, {}};
  f.metric.reserve(series.size());
  auto& bounds = slot_histogram::bounds();
  for (auto [first, last] : series) {
    std::array<uint64_t, slot_histogram::buckets> counts{};
    double sum = 0;
    for (auto i = first; i < last; ++i) {
      auto c = slots[i].first->processing.counts();
      for (size_t b = 0; b < counts.size(); ++b) counts[b] += c[b];
      sum += slots[i].first->processing.sum();
    }
    prometheus::ClientMetric m;
    m.label = labels_of(slots[first].first);
    uint64_t cumulative = 0;
    for (size_t b = 0; b < counts.size(); ++b) {
      cumulative += counts[b];
      m.histogram.bucket.push_back(
          {cumulative, b < bounds.size() ? bounds[b] : std::numeric_limits<double>::infinity()});
    }
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = sum;
    f.metric.push_back(std::move(m));
  }
  out.push_back(std::move(f));
  return out;
}

metrics::metrics(const std::string& node)
    : registry_(std::make_shared<prometheus::Registry>()),
      slots_(std::make_shared<slot_families>(node)),
      all_(std::make_shared<both>(registry_, slots_)) {
  prometheus::BuildGauge()
      .Name("troupe_build_info")
      .Help("Always 1: the version of troupe that serves these metrics and the plugin ABI it speaks.")
      .Labels({{"node", node}})
      .Register(*registry_)
      .Add({{"version", TROUPE_VERSION},
            {"abi", std::to_string(TROUPE_ABI_MAJOR) + "." + std::to_string(TROUPE_ABI_MINOR)}})
      .Set(1);
}

const std::vector<double>& slot_histogram::bounds() {
  static const std::vector<double> b{0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                     0.025,   0.05,    0.1,    0.25,   0.5,   1,      2.5,   5};
  return b;
}

void slot_histogram::add(const std::vector<double>& counts, double sum) {
  for (size_t b = 0; b < counts.size() && b < buckets; ++b)
    if (counts[b] > 0) counts_[b].fetch_add(static_cast<uint64_t>(counts[b]), std::memory_order_relaxed);
  sum_.fetch_add(sum, std::memory_order_relaxed);
}

std::array<uint64_t, slot_histogram::buckets> slot_histogram::counts() const {
  std::array<uint64_t, buckets> out{};
  for (size_t b = 0; b < buckets; ++b) out[b] = counts_[b].load(std::memory_order_relaxed);
  return out;
}

double processing_quantile(const slot_histogram& h, double q) {
  auto counts = h.counts();
  uint64_t total = 0;
  for (auto c : counts) total += c;
  if (total == 0) return 0;
  auto& bounds = slot_histogram::bounds();
  const double rank = q * static_cast<double>(total);
  double lower = 0;
  uint64_t below = 0;
  for (size_t b = 0; b < counts.size(); ++b) {
    auto cumulative = below + counts[b];
    if (static_cast<double>(cumulative) >= rank) {
      if (b >= bounds.size()) return lower;  // past the last bound: the last bound
      auto in = counts[b];
      return in == 0 ? bounds[b] : lower + (bounds[b] - lower) * (rank - below) / static_cast<double>(in);
    }
    lower = b < bounds.size() ? bounds[b] : lower;
    below = cumulative;
  }
  return lower;
}

void call_timings::add(double seconds) {
  auto& b = slot_histogram::bounds();
  if (counts_.empty()) counts_.resize(b.size() + 1);
  // The histogram's own rule: the first bucket whose bound is at least the value.
  counts_[static_cast<size_t>(std::lower_bound(b.begin(), b.end(), seconds) - b.begin())] += 1;
  sum_ += seconds;
}

void call_timings::flush_to(slot_histogram& h) {
  if (counts_.empty()) return;
  h.add(counts_, sum_);
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
      families_(m.slots()) {
  families_->add(this);
}

slot_stats::~slot_stats() { families_->remove(this); }

std::string slot_stats::name() const { return replica == 0 ? stage : stage + "#" + std::to_string(replica); }

}  // namespace troupe
