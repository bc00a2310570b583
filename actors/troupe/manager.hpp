// The manager actor: one per node, the supervisor of a pipeline's instances.
//
// It starts stages in the plan's start order (consumers first), one stage's replicas at a
// time, monitors every instance, and restarts a failed one with generation + 1 under the
// stage's restart policy: at most max_restarts within period, exponential backoff with
// jitter between them, the count reset after a stable run. Past the policy the slot is
// quarantined and stays visible with its last error. An input during which the stage's
// instances are lost dead_letter_after times is given up: recorded as a dead letter and
// skipped by every instance of the stage, so the stream goes on. When every sink has finished, or a
// stage has no replica left, it tells the listener (completed_atom, pipeline_outcome); on
// (stop_atom) it stops stages in reverse start order and then sends (stopped_atom). On
// (end_atom) the sources end their streams now: what they made flows through and the
// pipeline completes as if the streams had ended (a drain, before a stop).
//
// (scale_atom, stage, n) -> void changes a running stage's replicas: the answer comes once
// the change is under way, or is an error (errc busy, not_running, not_found, refused) that
// says why not. A new
// replica starts and joins the routes; a replica scaled away drains first: its senders
// give it nothing new, it finishes what it holds and delivers its outputs, and only then
// is it stopped, so no frame is lost or processed twice.
//
// A pipeline placed across nodes (manager_setup::plane) has a manager on each node it
// touches, each supervising its own stages. A stage on another node is one slot here, run
// by a remote_stage actor; a local stage fed from other nodes gets its frames through an
// ingress actor (remote.hpp). When a local stage finishes, the manager tells every other
// node; a remote stage is finished here when its node says so (link_control_atom,
// control_kind::finished). A drain (end_atom) reaches every node (control_kind::end). In a
// placed pipeline every input is acknowledged only once its outputs are, on every hop, so
// that a node that dies or stops a stage holds nothing its senders have let go.
//
// (reload_atom, reload_request) -> void swaps a running stage's plugin for its new version
// or config: the manager starts the new version beside each replica as a new generation,
// and once all of them run, switches the routes to them and drains the old ones. The
// answer comes then, or an error that says why the old version goes on serving (a new
// version that does not start is stopped, and the error is errc::start_failed).
#pragma once

#include <troupe/dead_letters.hpp>
#include <troupe/events.hpp>
#include <troupe/executor.hpp>
#include <troupe/instance.hpp>
#include <troupe/link.hpp>
#include <troupe/messages.hpp>
#include <troupe/pipeline.hpp>
#include <troupe/plugin_library.hpp>
#include <troupe/remote.hpp>
#include <troupe/stats.hpp>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace troupe {

/// Hears how a pipeline ends, from its manager: (completed_atom, pipeline_outcome) once every
/// sink finished or the pipeline failed, then (stopped_atom) once every stage stopped.
using listener_actor = caf::typed_actor<caf::reacts_to<completed_atom, pipeline_outcome>, caf::reacts_to<stopped_atom>>;

struct manager_setup {
  std::shared_ptr<const troupe::plan> plan;
  std::shared_ptr<slot_registry> slots;                    // from make_slots; scaling up adds to it
  std::vector<std::shared_ptr<plugin_library>> libraries;  // per stage, from load_libraries
  troupe::executor* executor = nullptr;
  std::shared_ptr<worker_launcher> launcher;      // starts the workers of isolated stages
  std::shared_ptr<dead_letter_log> dead_letters;  // null: kept by the manager only
  std::shared_ptr<event_log> events;              // null: no events recorded
  listener_actor listener;
  std::string node = "local";
  // A pipeline placed across nodes: the data plane, and each other node's data address.
  std::shared_ptr<data_plane> plane;
  std::map<std::string, std::string> data_address;
  std::string run;  // names this run of the pipeline on the data links; empty: its name
  // Stages placed here after their node died (stage -> times): their first generation is
  // past that, so it is newer than any the dead node ran.
  std::map<std::string, uint32_t> moves;
  // The placement's revision (its epoch), stamped on what this node sends; and per node the
  // revision at which it lost a stage: what it sends under that revision or an older one is
  // dropped (it was taken for dead and must read the new placement first).
  uint64_t epoch = 0;
  std::map<std::string, uint64_t> fences;
  // Spawns the instance actor of a slot here; empty: troupe::spawn_instance. Tests put
  // stand-ins here to drive the manager step by step.
  std::function<instance_actor(caf::actor_system&, instance_setup)> spawn_instance;
  // Likewise for a slot that is another node's share of a stage; empty:
  // troupe::spawn_remote_stage.
  std::function<instance_actor(caf::actor_system&, remote_stage_setup)> spawn_remote_stage;
};

using place_atom = caf::atom_constant<caf::atom("place")>;

/// (place_atom, placement_update): the pipeline's stages placed anew (a node died, came back,
/// or this node fenced itself). Stages now placed here start here; this node's instances of
/// a stage placed elsewhere now are stopped; stages on other nodes are sent their frames at
/// their node, as a new generation, and what their old node (or the stopped instances here)
/// did not acknowledge goes there again. A stage placed nowhere for now holds its frames at
/// its senders. Frames from a node that no longer runs a stage feeding a local one, or sent
/// under a fenced epoch, are dropped (fenced) and asked for again.
struct placement_update {
  std::shared_ptr<const troupe::plan> plan;
  std::vector<std::shared_ptr<plugin_library>> libraries;
  std::map<std::string, std::string> data_address;
  std::map<std::string, uint32_t> moves;   // as manager_setup::moves
  uint64_t epoch = 0;                      // as manager_setup::epoch
  std::map<std::string, uint64_t> fences;  // as manager_setup::fences
};

/// The manager's protocol (see the top of this file for what each does). From whoever drives
/// the pipeline unless noted:
///   supervisor_actor's messages           an instance's lifecycle, finish and drain, from it
///   (stop_atom)                           stop every stage, producers first; then stopped_atom
///   (end_atom)                            the sources end their streams now (a drain)
///   (link_control_atom, link_control)     another node's manager, through the data link
///   (place_atom, placement_update)        the pipeline placed anew, from the node
///   (scale_atom, stage, n) -> void        run n replicas of a stage
///   (pause_atom, stage, on) -> void       pause or resume a stage here
///   (reload_atom, reload_request) -> void swap a stage's plugin for its new version or config
/// It tells the listener (completed_atom, pipeline_outcome) and (stopped_atom).
using manager_actor = supervisor_actor::extend<
    caf::reacts_to<stop_atom>, caf::reacts_to<end_atom>, caf::reacts_to<link_control_atom, link_control>,
    caf::reacts_to<place_atom, placement_update>, caf::replies_to<scale_atom, std::string, uint32_t>::with<void>,
    caf::replies_to<pause_atom, std::string, bool>::with<void>,
    caf::replies_to<reload_atom, reload_request>::with<void>>;

/// One slot per replica of each stage, in stage order.
slot_table make_slots(const plan& p, metrics& m);

/// Loads every stage's library; errors name the stage, library and what was wrong. An isolated
/// stage's library is checked in a worker that launcher starts (null: a plan without isolated
/// stages).
expected<std::vector<std::shared_ptr<plugin_library>>> load_libraries(const plan& p,
                                                                      std::shared_ptr<worker_launcher> launcher);

manager_actor spawn_manager(caf::actor_system& sys, manager_setup setup);

/// Asks the manager to reload a stage (see above); waits at most timeout for the switch
/// (errc::no_answer past it).
expected<void> reload_stage(caf::actor_system& sys, const manager_actor& manager, reload_request request,
                            std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// Asks the manager to run `replicas` instances of `stage`; waits for its answer (at most
/// timeout; errc::no_answer past it): the change is under way, or why it was refused.
expected<void> scale_stage(caf::actor_system& sys, const manager_actor& manager, const std::string& stage,
                           uint32_t replicas, std::chrono::milliseconds timeout = std::chrono::seconds(5));

/// Pauses (paused true) or resumes a stage's instances on this node: paused, each holds the
/// inputs its credits let in, unprocessed, so its producers wait; nothing is lost and a pause
/// is not a failure. A drain (end_atom) resumes every paused stage. An error if the pipeline
/// does not run or the stage is not here.
expected<void> pause_stage(caf::actor_system& sys, const manager_actor& manager, const std::string& stage, bool paused,
                           std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace troupe

// The one message type that is not inspectable: it hands over loaded plugin libraries and a
// plan, which mean nothing outside this process.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::placement_update)
