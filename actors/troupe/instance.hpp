// The instance actor: one running copy of a plugin, in one generation.
//
// It owns its adapter and runs the lifecycle loaded -> started -> running -> stopping ->
// stopped, or failed with a class (start_failed, lost, teardown_failed), reporting each
// transition to its manager. Plugin calls run on the executor in batches, one batch at a
// time, each call under the stage's deadline. Inputs are acknowledged to their sender once
// processed and their outputs handed to the router; a lost instance hands the outputs it
// could not deliver to its manager for its successor, and its unacknowledged inputs are
// sent again by their senders.
//
// Its protocol is instance_actor, below.
#pragma once

#include <troupe/executor.hpp>
#include <troupe/messages.hpp>
#include <troupe/pipeline.hpp>
#include <troupe/plugin_library.hpp>
#include <troupe/stats.hpp>
#include <troupe/worker_launcher.hpp>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <memory>
#include <set>
#include <string>

namespace troupe {

/// What runs a slot, as its manager sees it: an instance here, or a remote stage (the slot
/// of another node's replica, remote.hpp). All from the manager unless noted; a receiver's
/// and a sender's messages come from the stages around it.
///   (start_atom)                        create and start the plugin
///   (routes_atom, route_table)          where outputs go
///   receiver_actor's messages           inputs, from an upstream stage
///   (ack_atom, uint32_t)                outputs acknowledged, from a downstream stage
///   (upstream_done_atom)                no more input will come
///   (skip_atom, frame_key)              an input given up on (dead letter): do not process it
///   (pause_atom, bool)                  hold inputs unprocessed (true) or go on (false)
///   (end_atom)                          a source ends its streams now (a drain)
///   (drain_atom, std::vector<size_t>)   being scaled away or retired: finish once these
///                                       upstream slots said drained
///   (stop_atom)                         stop and destroy the plugin, then quit
/// It tells its supervisor (supervisor_actor) each lifecycle transition, that its stream
/// finished, and that it drained.
using instance_actor = receiver_actor::extend_with<sender_actor>::extend<
    caf::reacts_to<start_atom>, caf::reacts_to<routes_atom, route_table>, caf::reacts_to<upstream_done_atom>,
    caf::reacts_to<skip_atom, frame_key>, caf::reacts_to<pause_atom, bool>, caf::reacts_to<end_atom>,
    caf::reacts_to<drain_atom, std::vector<size_t>>, caf::reacts_to<stop_atom>>;

struct instance_setup {
  size_t slot = 0;
  size_t stage = 0;
  uint32_t replica = 0;
  uint64_t generation = 1;
  std::shared_ptr<const troupe::plan> plan;
  std::shared_ptr<slot_stats> stats;
  std::shared_ptr<plugin_library> library;
  troupe::executor* executor = nullptr;       // outlives every instance
  std::shared_ptr<worker_launcher> launcher;  // starts its workers, if it runs isolated
  supervisor_actor manager;
  std::string node = "local";
  route_table routes;
  carried_frames carry;
  std::set<frame_key> dead;  // inputs given up on: acknowledged, never processed
  // Every input is acknowledged only once its outputs are (a pipeline placed across nodes:
  // a node that dies or gives up a stage then holds nothing its senders let go). Otherwise
  // an input is acknowledged once processed. The instance does not know where its inputs
  // came from: its manager says which rule holds.
  bool end_to_end = false;
  // Paused: it takes inputs (as its credits allow) and holds them, unprocessed, until told
  // (pause_atom, false) to resume; a paused source makes no turns.
  bool paused = false;
};

instance_actor spawn_instance(caf::actor_system& sys, instance_setup setup);

}  // namespace troupe
