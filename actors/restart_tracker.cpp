#include <troupe/restart_tracker.hpp>

#include <algorithm>
#include <cmath>

namespace troupe {

restart_tracker::decision restart_tracker::failed(const restart_policy& policy, clock::time_point now, double jitter) {
  auto ran = std::exchange(running_since_, std::nullopt);
  if (ran && now - *ran >= std::chrono::duration<double>(policy.stable_after_s)) {
    consecutive_ = 0;
    restarts_.clear();
  }
  while (!restarts_.empty() && now - restarts_.front() > std::chrono::duration<double>(policy.period_s))
    restarts_.pop_front();
  decision d;
  if (restarts_.size() >= policy.max_restarts) {
    d.what = decision::verdict::quarantine;
    d.recent = restarts_.size();
    return d;
  }
  restarts_.push_back(now);
  ++consecutive_;
  double base = policy.backoff_initial_ms * std::pow(2.0, std::min<uint32_t>(consecutive_ - 1, 30));
  base = std::min<double>(base, policy.backoff_max_ms);
  jitter = std::clamp(jitter, 0.0, 1.0);
  d.delay = std::chrono::milliseconds(static_cast<int64_t>(base / 2 + jitter * base / 2));
  d.recent = restarts_.size();
  return d;
}

}  // namespace troupe
