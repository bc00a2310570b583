// Where a manager slot (one replica of a stage) is in its life, and which changes can happen:
//
//   idle         -> spawning, done
//   spawning     -> running, restarting, quarantined, stopping, done
//   running      -> restarting, quarantined, stopping, done
//   restarting   -> spawning (its backoff is over), stopping, done
//   stopping     -> done, or restarting / quarantined (it failed on the way)
//   quarantined  -> done
//   done         (for good)
//
// A slot is idle until its stage's turn to start; spawning once its actor is spawned and told
// to start; running once it says so; restarting after a failure, until its backoff is over;
// quarantined past its restart policy; stopping once told to stop; done once stopped for good.
// The manager changes a slot's phase in one function that checks can_enter(): a change it
// refuses is a bug.
//
// Apart from its phase a slot has a role in its stage: a serving replica, a reload's new
// version not yet in the routes (incoming), or a replica scaled away or replaced that drains
// and leaves (retiring).
#pragma once

#include <cstdint>

namespace troupe {

enum class slot_phase : uint8_t {
  idle,         // nothing spawned yet: its stage's turn to start has not come
  spawning,     // its actor was spawned and told to start; not yet running
  running,      // its instance runs (and takes frames, unless it is draining)
  restarting,   // failed; its restart is due after a backoff
  stopping,     // told to stop; waiting for it to stop
  quarantined,  // failed past its restart policy: stays visible, never restarted
  done,         // stopped for good: never restarted
};

enum class slot_role : uint8_t {
  serving,   // one of its stage's replicas
  incoming,  // a reload's new version: runs beside the old one, not yet in the routes
  retiring,  // scaled away or replaced: drains, stops, then leaves its stage
};

constexpr const char* to_string(slot_phase p) {
  switch (p) {
    case slot_phase::idle: return "idle";
    case slot_phase::spawning: return "spawning";
    case slot_phase::running: return "running";
    case slot_phase::restarting: return "restarting";
    case slot_phase::stopping: return "stopping";
    case slot_phase::quarantined: return "quarantined";
    case slot_phase::done: return "done";
  }
  return "?";
}

/// Whether a slot may go from `from` to `to` (staying where it is is not a change).
constexpr bool can_enter(slot_phase from, slot_phase to) {
  using sp = slot_phase;
  if (from == to) return false;
  switch (from) {
    case sp::idle: return to == sp::spawning || to == sp::done;
    // A failure (restarting or quarantined), a stop, or the end, from either.
    case sp::spawning: return to != sp::idle && to != sp::spawning;
    case sp::running: return to != sp::idle && to != sp::spawning;
    case sp::restarting: return to == sp::spawning || to == sp::stopping || to == sp::done;
    // A replica told to stop after draining may still fail on the way.
    case sp::stopping: return to == sp::restarting || to == sp::quarantined || to == sp::done;
    case sp::quarantined: return to == sp::done;
    case sp::done: return false;
  }
  return false;
}

}  // namespace troupe
