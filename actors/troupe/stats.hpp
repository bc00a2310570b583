// What a node knows about each instance slot: its Prometheus series and lifecycle state.
//
// A slot is one replica of one stage; it keeps its series across restarts (generations).
// Counters are written by the slot's current instance actor and its executor jobs, and
// read by anyone (status, summary, /metrics): every field is atomic or guarded.
#pragma once

#include <troupe/lifecycle.hpp>
#include <troupe/manifest.hpp>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace troupe {

/// The families every node exports; one registry per node. Every series carries the node's
/// name (`node`; "local" for `troupe run`), and the registry holds troupe_build_info.
class metrics {
 public:
  explicit metrics(const std::string& node = "local");
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  prometheus::Family<prometheus::Counter>& frames_in;
  prometheus::Family<prometheus::Counter>& frames_completed;
  prometheus::Family<prometheus::Counter>& frames_filtered;
  prometheus::Family<prometheus::Counter>& frames_abandoned;
  prometheus::Family<prometheus::Counter>& frames_out;
  prometheus::Family<prometheus::Counter>& bytes_in;
  prometheus::Family<prometheus::Counter>& bytes_out;
  prometheus::Family<prometheus::Counter>& errors;
  prometheus::Family<prometheus::Counter>& restarts;
  prometheus::Family<prometheus::Counter>& stale_dropped;
  prometheus::Family<prometheus::Counter>& duplicates;
  prometheus::Family<prometheus::Counter>& replayed;
  prometheus::Family<prometheus::Counter>& dead_letters;
  prometheus::Family<prometheus::Counter>& source_waits;
  prometheus::Family<prometheus::Gauge>& generation;
  prometheus::Family<prometheus::Gauge>& queue_depth;
  prometheus::Family<prometheus::Gauge>& in_flight;
  prometheus::Family<prometheus::Gauge>& up;
  prometheus::Family<prometheus::Gauge>& quarantined;
  prometheus::Family<prometheus::Gauge>& healthy;
  prometheus::Family<prometheus::Gauge>& worker_memory;
  prometheus::Family<prometheus::Counter>& worker_throttled;
  prometheus::Family<prometheus::Counter>& worker_cpu;
  prometheus::Family<prometheus::Counter>& idle_releases;
  prometheus::Family<prometheus::Histogram>& processing;

 private:
  metrics(std::shared_ptr<prometheus::Registry> r, const std::map<std::string, std::string>& node);
  std::shared_ptr<prometheus::Registry> registry_;
};

/// Plugin call durations gathered over a batch and added to a processing histogram at once:
/// one lock per batch instead of one per input. Not thread-safe: one per job.
class call_timings {
 public:
  void add(double seconds);
  /// Adds what was gathered to h and starts over.
  void flush_to(prometheus::Histogram& h);

 private:
  std::vector<double> counts_;  // per bucket of the processing histogram, +Inf last
  double sum_ = 0;
};

/// One slot's series and state. The series live in the metrics' registry, which a
/// slot_stats keeps alive: a plugin call past its deadline may still hold it, on an abandoned
/// executor thread, after the pipeline and its metrics are gone.
class slot_stats {
 public:
  slot_stats(metrics& m, std::string pipeline, std::string stage, std::string plugin, uint32_t replica, exec_mode mode);

  const std::string pipeline, stage, plugin;
  const uint32_t replica;
  const exec_mode mode;

  // The books, per input: frames_in = completed + filtered + errors (failed) + dead_letters
  // + abandoned + queue_depth (held now). Outputs are counted apart, in frames_out.
  prometheus::Counter& frames_in;
  prometheus::Counter& frames_completed;  // processed, one or more outputs
  prometheus::Counter& frames_filtered;   // processed, no output
  prometheus::Counter& frames_abandoned;  // held by a generation that was lost; sent again
  prometheus::Counter& frames_out;
  prometheus::Counter& bytes_in;
  prometheus::Counter& bytes_out;
  prometheus::Counter& errors;
  prometheus::Counter& restarts;
  prometheus::Counter& stale_dropped;
  prometheus::Counter& duplicates;
  prometheus::Counter& replayed;  // outputs sent again: their receiver was replaced or moved
  prometheus::Counter& dead_letters;
  prometheus::Counter& source_waits;  // a source had nothing due and was asked again after a wait
  prometheus::Gauge& generation_gauge;
  prometheus::Gauge& queue_depth;  // inputs held: received, not yet done
  prometheus::Gauge& in_flight;    // outputs sent and not yet acknowledged
  prometheus::Gauge& up;
  prometheus::Gauge& quarantined_gauge;   // 1 once the slot is quarantined
  prometheus::Gauge& healthy;             // the last health answer: 1 healthy, 0 not (then lost)
  prometheus::Gauge& worker_memory;       // bytes the isolated worker (and its children) use; 0 in-process
  prometheus::Counter& worker_throttled;  // seconds its workers were held back by cpu_cores
  prometheus::Counter& worker_cpu;        // CPU seconds its workers used
  prometheus::Counter& idle_releases;     // times its worker ended for want of input (idle_release_s)
  prometheus::Histogram& processing;

  /// The generation whose outputs are current; outputs stamped otherwise are stale.
  std::atomic<uint64_t> generation{0};
  std::atomic<instance_state> state{instance_state::loaded};
  std::atomic<failure_class> failure{failure_class::none};       // of the current generation
  std::atomic<failure_class> last_failure{failure_class::none};  // of the latest generation that failed
  std::atomic<bool> quarantined{false};
  std::atomic<bool> finished{false};
  std::atomic<bool> paused{false};  // holds its inputs until resumed
  std::atomic<int> worker_pid{-1};  // the isolated worker serving the current generation; -1: none

  void set_state(instance_state s) {
    state.store(s);
    up.Set(s == instance_state::running ? 1 : 0);
  }
  void set_error(std::string e) {
    std::lock_guard<std::mutex> lock(mutex_);
    last_error_ = std::move(e);
  }
  std::string last_error() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_error_;
  }
  /// "stage" or "stage#2" for replicas past the first.
  std::string name() const;
  std::map<std::string, std::string> labels() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;  // owns the series referred to above
  mutable std::mutex mutex_;
  std::string last_error_;
};

/// The q-quantile (0..1) of a processing histogram, in seconds, interpolated within its
/// bucket as Prometheus's histogram_quantile does; 0 with no observations.
double processing_quantile(prometheus::Histogram& h, double q);

using slot_table = std::vector<std::shared_ptr<slot_stats>>;

/// Every slot of a pipeline: those it started with, and those scaling up adds while it
/// runs (a slot scaled away stays, stopped, so its books still count). Thread-safe.
class slot_registry {
 public:
  slot_registry(metrics& m, slot_table initial) : metrics_(m), slots_(std::move(initial)) {}
  slot_table snapshot() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return slots_;
  }
  std::shared_ptr<slot_stats> add(const std::string& pipeline, const std::string& stage, const std::string& plugin,
                                  uint32_t replica, exec_mode mode) {
    auto s = std::make_shared<slot_stats>(metrics_, pipeline, stage, plugin, replica, mode);
    std::lock_guard<std::mutex> lock(mutex_);
    slots_.push_back(s);
    return s;
  }

 private:
  metrics& metrics_;
  mutable std::mutex mutex_;
  slot_table slots_;
};

}  // namespace troupe
