// A slot's restart policy at work: failures in, "restart after this delay" or "quarantine"
// out.
//
// A slot may fail at most max_restarts times within period_s; the delay before each restart
// grows exponentially from backoff_initial_ms up to backoff_max_ms, drawn in [base/2, base)
// so that replicas lost together do not come back together. An instance that ran for
// stable_after_s before it failed had run stably: the failures before it no longer count and
// the backoff starts over. Past the policy the slot is quarantined.
//
// A value type without actors, clocks or randomness of its own: the caller says when things
// happen and supplies the jitter, so that the policy can be tested step by step.
#pragma once

#include <troupe/pipeline.hpp>
#include <troupe/ring.hpp>

#include <chrono>
#include <cstdint>
#include <optional>

namespace troupe {

class restart_tracker {
 public:
  using clock = std::chrono::steady_clock;

  struct decision {
    enum class verdict { restart, quarantine };
    verdict what = verdict::restart;
    std::chrono::milliseconds delay{0};  // before the restart
    size_t recent = 0;                   // failures counted within the period, this one included
                                         // when restarted; those that led to quarantine otherwise
  };

  /// The slot's instance reported running at `now` (a failure after stable_after_s of it
  /// starts the count over).
  void running(clock::time_point now) { running_since_ = now; }

  /// The slot's instance failed at `now`. `jitter` in [0, 1) picks the delay within
  /// [base/2, base). The policy is passed each time: a reload may change it.
  decision failed(const restart_policy& policy, clock::time_point now, double jitter);

  /// Failures counted within the period as of the last call to failed().
  size_t recent() const { return restarts_.size(); }

 private:
  ring<clock::time_point> restarts_;  // nothing allocated until the first failure
  uint32_t consecutive_ = 0;
  std::optional<clock::time_point> running_since_;  // since the last failure, if it ran
};

}  // namespace troupe
