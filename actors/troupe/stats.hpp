// What a node knows about each instance slot: its Prometheus series and lifecycle state.
//
// A slot is one replica of one stage; it keeps its series across restarts (generations).
// Counters are written by the slot's current instance actor and its executor jobs, and
// read by anyone (status, summary, /metrics): every field is atomic or guarded.
#pragma once

#include <troupe/lifecycle.hpp>
#include <troupe/manifest.hpp>

#include <prometheus/collectable.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace troupe {

/// A slot's counter: what the runtime asks of a Prometheus counter, without a series of its
/// own in a registry (a label map and a map entry each). Its value is exported by the slot
/// families of the node's metrics.
class slot_counter {
 public:
  void Increment(double v = 1) { v_.fetch_add(v, std::memory_order_relaxed); }
  double Value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

/// A slot's gauge, likewise.
class slot_gauge {
 public:
  void Set(double v) { v_.store(v, std::memory_order_relaxed); }
  void Increment(double v = 1) { v_.fetch_add(v, std::memory_order_relaxed); }
  void Decrement(double v = 1) { v_.fetch_sub(v, std::memory_order_relaxed); }
  double Value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

/// A slot's histogram of plugin call durations, in fixed buckets (bounds()).
class slot_histogram {
 public:
  /// The upper bounds of its buckets, in seconds; a last bucket (+Inf) follows them.
  static const std::vector<double>& bounds();
  static constexpr size_t buckets = 17;  // bounds().size() + 1

  /// Adds counts per bucket (+Inf last) and their sum.
  void add(const std::vector<double>& counts, double sum);
  /// Counts per bucket (+Inf last, not cumulative).
  std::array<uint64_t, buckets> counts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::array<std::atomic<uint64_t>, buckets> counts_{};
  std::atomic<double> sum_{0};
};

class slot_stats;
class slot_families;

/// What every node exports; one per node. Every series carries the node's name (`node`;
/// "local" for `troupe run`). The registry holds troupe_build_info and what other parts of the
/// node add (data links); the slots' series are written at each scrape from the slots that
/// exist then (slot_families), so that an instance costs no series objects of its own and a
/// slot that is gone leaves none behind. collectable() exports both.
class metrics {
 public:
  explicit metrics(const std::string& node = "local");
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  /// The registry's families and the slots' series, for an exposer.
  std::shared_ptr<prometheus::Collectable> collectable() const { return all_; }
  const std::shared_ptr<slot_families>& slots() const { return slots_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<slot_families> slots_;
  std::shared_ptr<prometheus::Collectable> all_;
};

/// Plugin call durations gathered over a batch and added to a processing histogram at once:
/// one update per bucket and batch instead of one per input. Not thread-safe: one per job.
class call_timings {
 public:
  void add(double seconds);
  /// Adds what was gathered to h and starts over.
  void flush_to(slot_histogram& h);

 private:
  std::vector<double> counts_;  // per bucket of the processing histogram, +Inf last
  double sum_ = 0;
};

/// One slot's series and state. It is listed in the metrics' slot families from construction to
/// destruction, and keeps them alive: a plugin call past its deadline may still hold it, on an
/// abandoned executor thread, after the pipeline and its metrics are gone.
class slot_stats {
 public:
  slot_stats(metrics& m, std::string pipeline, std::string stage, std::string plugin, uint32_t replica, exec_mode mode);
  ~slot_stats();
  slot_stats(const slot_stats&) = delete;
  slot_stats& operator=(const slot_stats&) = delete;

  const std::string pipeline, stage, plugin;
  const uint32_t replica;
  const exec_mode mode;

  // The books, per input: frames_in = completed + filtered + errors (failed) + dead_letters
  // + abandoned + queue_depth (held now). Outputs are counted apart, in frames_out.
  slot_counter frames_in;
  slot_counter frames_completed;  // processed, one or more outputs
  slot_counter frames_filtered;   // processed, no output
  slot_counter frames_abandoned;  // held by a generation that was lost; sent again
  slot_counter frames_out;
  slot_counter bytes_in;
  slot_counter bytes_out;
  slot_counter errors;
  slot_counter restarts;
  slot_counter stale_dropped;
  slot_counter duplicates;
  slot_counter replayed;  // outputs sent again: their receiver was replaced or moved
  slot_counter dead_letters;
  slot_counter source_waits;  // a source had nothing due and was asked again after a wait
  slot_gauge generation_gauge;
  slot_gauge queue_depth;  // inputs held: received, not yet done
  slot_gauge in_flight;    // outputs sent and not yet acknowledged
  slot_gauge up;
  slot_gauge quarantined_gauge;   // 1 once the slot is quarantined
  slot_gauge healthy;             // the last health answer: 1 healthy, 0 not (then lost)
  slot_gauge worker_memory;       // bytes the isolated worker (and its children) use; 0 in-process
  slot_counter worker_throttled;  // seconds its workers were held back by cpu_cores
  slot_counter worker_cpu;        // CPU seconds its workers used
  slot_counter idle_releases;     // times its worker ended for want of input (idle_release_s)
  slot_histogram processing;

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

 private:
  std::shared_ptr<slot_families> families_;  // lists this slot while it exists
  mutable std::mutex mutex_;
  std::string last_error_;
};

/// The q-quantile (0..1) of a processing histogram, in seconds, interpolated within its
/// bucket as Prometheus's histogram_quantile does; 0 with no observations.
double processing_quantile(const slot_histogram& h, double q);

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
