// The lifecycle of an instance as the rest of the node sees it: the state its slot is in, the
// class of its last failure, and the status `troupe status` and the admin interface show.
#pragma once

#include <cstdint>

namespace troupe {

/// The state of an instance slot's current instance (stats.hpp: slot_stats::state).
enum class instance_state : uint8_t { loaded, started, running, stopping, stopped, failed };

/// Why an instance failed last.
enum class failure_class : uint8_t { none, start_failed, lost, teardown_failed };

/// What status shows of an instance: its state, or what says more while it lasts (quarantined;
/// finished or paused while running).
enum class instance_status : uint8_t {
  loaded,
  started,
  running,
  stopping,
  stopped,
  failed,
  quarantined,
  finished,
  paused
};

constexpr const char* to_string(instance_state s) {
  switch (s) {
    case instance_state::loaded: return "loaded";
    case instance_state::started: return "started";
    case instance_state::running: return "running";
    case instance_state::stopping: return "stopping";
    case instance_state::stopped: return "stopped";
    case instance_state::failed: return "failed";
  }
  return "?";
}

constexpr const char* to_string(failure_class f) {
  switch (f) {
    case failure_class::none: return "none";
    case failure_class::start_failed: return "start_failed";
    case failure_class::lost: return "lost";
    case failure_class::teardown_failed: return "teardown_failed";
  }
  return "?";
}

constexpr const char* to_string(instance_status s) {
  switch (s) {
    case instance_status::quarantined: return "quarantined";
    case instance_status::finished: return "finished";
    case instance_status::paused: return "paused";
    default: return to_string(static_cast<instance_state>(s));  // the same values, in the same order
  }
}

constexpr instance_status status_of(instance_state s, bool quarantined, bool finished, bool paused) {
  if (quarantined) return instance_status::quarantined;
  if (finished && s == instance_state::running) return instance_status::finished;
  if (paused && s == instance_state::running) return instance_status::paused;
  return static_cast<instance_status>(s);
}

static_assert(static_cast<int>(instance_status::failed) == static_cast<int>(instance_state::failed),
              "an instance_status begins with the instance_states, in their order");

}  // namespace troupe
