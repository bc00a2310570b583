// What runs a plugin instance's code: the embedded adapter (in this process) or the
// isolated adapter (in a worker process). The instance actor cannot tell them apart, and
// neither can the plugin.
//
// Not thread-safe: one call at a time (the instance actor guarantees it), except
// terminate(). Every call may block or hang; callers run them on the executor under a
// deadline.
#pragma once

#include <troupe/frame.hpp>
#include <troupe/manifest.hpp>

#include <troupe/plugin.h>

#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace troupe {

struct call_result {
  troupe_status status = TROUPE_OK;
  std::string error;
  bool ok() const { return status == TROUPE_OK; }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, call_result& x) {
  int32_t status = static_cast<int32_t>(x.status);  // a C enum: as its number
  auto load = caf::meta::load_callback([&]() -> caf::error {
    x.status = static_cast<troupe_status>(status);
    return caf::none;
  });
  return f(caf::meta::type_name("call_result"), status, load, x.error);
}

/// Receives what process_batch does, input by input, in input order.
class batch_sink {
 public:
  virtual ~batch_sink() = default;
  using time_point = std::chrono::steady_clock::time_point;
  /// Input i's call begins (at `now`): its deadline runs from then. Not every input is
  /// announced (a batch that crosses to a worker at once is announced by its first input,
  /// and then as the worker is seen to move on).
  virtual void begin(size_t i, time_point now) = 0;
  /// Input i's call returned r after `took`, with outputs outs (the sink takes them).
  /// False: process no more inputs.
  virtual bool done(size_t i, call_result& r, std::vector<frame>& outs, std::chrono::nanoseconds took) = 0;
};

class plugin_adapter {
 public:
  virtual ~plugin_adapter() = default;

  virtual call_result create(const config_values& config) = 0;
  virtual call_result start() = 0;
  /// in == nullptr asks a source for frames. Outputs are appended to out.
  virtual call_result process(const frame* in, std::vector<frame>& out) = 0;
  /// Processes inputs in order, reporting each to sink, until one returns TROUPE_FATAL or
  /// the sink says stop. An input whose call was cut short by a fatal failure (a crash) is
  /// reported as TROUPE_FATAL; inputs before it that were never reported were not
  /// processed as far as anyone can tell. This default calls process() once per input; an
  /// adapter that can carry many inputs per wake-up does better.
  virtual void process_batch(const std::vector<frame>& in, batch_sink& sink) {
    std::vector<frame> outs;
    auto t0 = std::chrono::steady_clock::now();  // one clock reading per input
    for (size_t i = 0; i < in.size(); ++i) {
      sink.begin(i, t0);
      auto r = process(&in[i], outs);
      auto t1 = std::chrono::steady_clock::now();
      if (!sink.done(i, r, outs, t1 - t0) || r.status == TROUPE_FATAL) return;
      outs.clear();
      t0 = t1;
    }
  }
  virtual call_result stop() = 0;
  virtual call_result health() = 0;
  virtual void destroy() = 0;
  /// From any thread: ends what runs the plugin's code, so that a call in progress returns
  /// (a worker process is killed). An embedded plugin cannot be ended: nothing happens.
  virtual void terminate() {}
  /// The process that runs the plugin's code, if it is not this one; -1 otherwise.
  virtual int worker_pid() const { return -1; }
  /// Bytes of memory the worker and what it forked use, as last sampled (at most once a
  /// second, as calls return); 0 in-process. Safe to call while a call runs.
  virtual uint64_t memory_bytes() const { return 0; }
  /// Seconds the worker was held back by its CPU limit (cpu_cores), as last sampled.
  virtual double cpu_throttled_seconds() const { return 0; }
  /// CPU seconds the worker (and the children it has reaped) used, as last sampled.
  virtual double cpu_seconds() const { return 0; }
};

}  // namespace troupe
