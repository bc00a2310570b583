// How a Troupe process configures its CAF actor system: one scheduler thread per core, no
// CAF log, and schedulers that go to sleep soon when they run out of work.
//
// CAF's work-stealing scheduler polls for work in three phases: 100 attempts in a busy loop,
// then 500 more with a 50 us sleep between each, then waits on a condition variable. The
// middle phase cost a context switch every 50 us on every idle scheduler thread: in a
// pipeline whose plugins keep the cores busy (video decoding and encoding on their own
// threads), 35,000 context switches in 2.6 s, and a quarter of the run's time. Without it,
// 5,000 and 2.0 s; small frames through four actors also ran faster (1.7-2.0 s -> 1.5 s for
// 200,000 frames), as the busy loop still catches work that comes at once.
#pragma once

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>

#include <cstddef>

namespace troupe {

inline caf::actor_system_config& configure_actor_system(caf::actor_system_config& cfg, unsigned cores) {
  cfg.set("scheduler.max-threads", static_cast<size_t>(cores));
  cfg.set("work-stealing.moderate-poll-attempts", size_t{0});
  cfg.set("logger.verbosity", caf::atom("quiet"));
  return cfg;
}

}  // namespace troupe
