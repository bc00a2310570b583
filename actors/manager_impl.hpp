// The manager actor's class (manager.hpp), shared by the files that define it:
//   manager.cpp           starting, supervising and stopping the stages here
//   manager_nodes.cpp     a pipeline across nodes: other nodes' shares, ingresses, placement
//                         updates, control between the managers
//   manager_changes.cpp   changing a running pipeline: scaling, pausing, reloading, draining
// Internal to the runtime library.
#pragma once

#include <troupe/manager.hpp>

#include <troupe/instance.hpp>
#include <troupe/isolated_adapter.hpp>
#include <troupe/messages.hpp>
#include <troupe/reload_coordinator.hpp>
#include <troupe/remote.hpp>
#include <troupe/restart_tracker.hpp>
#include <troupe/scaling.hpp>
#include <troupe/shares.hpp>
#include <troupe/slot_phase.hpp>

#include <caf/all.hpp>

#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace troupe {

using clock = std::chrono::steady_clock;

// What the manager sends itself besides its protocol: a restart after its backoff.
using manager_self_actor = manager_actor::extend<caf::reacts_to<restart_atom, size_t, uint64_t>>;

class manager_impl : public manager_self_actor::base {
 public:
  manager_impl(caf::actor_config& cfg, manager_setup s);

  const char* name() const override { return "troupe.manager"; }

  // Instances hold the manager's handle and it holds theirs: release ours on the way out.
  void on_exit() override {
    for (auto& sl : slots_) sl.actor = nullptr;
    s_.listener = nullptr;
    if (s_.plane) s_.plane->unserve(s_.run);
    for (auto& [stage, a] : ingress_) anon_send_exit(a, caf::exit_reason::user_shutdown);
    ingress_.clear();
  }

  behavior_type make_behavior() override {
    set_down_handler([this](caf::down_msg& dm) { on_down(dm); });
    // An instance's exit arrives as a down message too; the link only matters the other way.
    set_exit_handler([](caf::exit_msg&) {});
    start_ingresses();
    start_next_stage();
    return {
        [this](report_atom, instance_report& r) { on_report(r); },
        [this](finished_atom, const instance_ref& r) {
          if (current(r.slot, r.generation)) on_finished(r.slot);
        },
        [this](drained_atom, const instance_ref& r) { on_drained(r); },
        [this](restart_atom, size_t slot, uint64_t failed_generation) { restart(slot, failed_generation); },
        [this](stop_atom) { begin_stop(); },
        [this](end_atom) {
          if (ending_) return;
          tell_participants(control_kind::end, {});
          end_sources();
        },
        [this](link_control_atom, link_control& c) { on_control(c); },
        [this](place_atom, placement_update& u) { adopt(u); },
        [this](scale_atom, const std::string& stage, uint32_t n) -> caf::result<void> { return scale(stage, n); },
        [this](pause_atom, const std::string& stage, bool on) -> caf::result<void> { return pause(stage, on); },
        [this](reload_atom, reload_request& r) -> caf::result<void> { return reload(r); },
    };
  }

 private:
  struct slot {
    size_t stage;
    uint32_t replica;
    std::string node;      // another node's share of the stage, sent there; empty: an instance here
    instance_actor actor;  // an instance here, or a remote stage
    uint64_t generation = 0;
    slot_phase phase = slot_phase::idle;
    slot_role role = slot_role::serving;
    bool finished = false;                     // its stream is finished: all input processed, every output acknowledged
    std::shared_ptr<const troupe::plan> plan;  // its plan and library, if not the
    std::shared_ptr<plugin_library> library;   // manager's current ones
    restart_tracker restarts;
    carried_frames carry;

    bool running() const { return phase == slot_phase::running; }
    // Its instance runs, or was told to stop and still delivers what it holds.
    bool live() const { return phase == slot_phase::running || phase == slot_phase::stopping; }
    bool done() const { return phase == slot_phase::done; }
    bool quarantined() const { return phase == slot_phase::quarantined; }
    bool retiring() const { return role == slot_role::retiring; }
    bool incoming() const { return role == slot_role::incoming; }
  };

  static constexpr size_t npos = static_cast<size_t>(-1);

  // Whether what an instance says comes from the slot's current generation (not one replaced).
  bool current(size_t slot, uint64_t generation) const { return slots_[slot].generation == generation; }

  // Records an event about the pipeline (slot npos) or one of its instances.
  void note(event_kind kind, size_t i, std::string state, std::string detail = {}, std::string failure = {});
  // A stage's own event (scaling, reloads, pauses, dead letters).
  void note_stage(event_kind kind, const std::string& stage, std::string state, std::string detail);
  void record(event_kind kind, event e, std::string state, std::string detail);

  // The one place a slot's phase changes.
  void enter(size_t i, slot_phase next);

  struct stage_state {
    std::vector<size_t> slots;
    bool told_finished = false;  // its instances here finished, and the other nodes were told
    bool finished = false, upstream_done = false;
    std::map<frame_key, uint32_t> losses;  // per input, losses it caused
    std::set<frame_key> dead;              // inputs given up on
    uint32_t next_replica = 0;             // number of the next replica scaling up adds
    bool paused = false;                   // its instances here hold their inputs (pause_stage)
  };
  enum class phase { starting, running, stopping, stopped };

  const planned_stage& stage_of(size_t slot) const { return s_.plan->stages[slots_[slot].stage]; }
  slot_stats& stats(size_t slot) { return *stats_[slot]; }

  // Where frames for stage d go: its replicas (here_only: those on this node, which is
  // where its ingress sends what other nodes send it).
  edge_route edge_to(size_t d, bool here_only = false) const;

  route_table routes_for(size_t stage) const;

  // -- across nodes ----------------------------------------------------------------------

  // The share of a stage that another node runs: one slot per replica there, each sent to
  // that node on a channel of its own; their series are kept apart (that node exports the
  // stage's own). Returns the new slots.
  std::vector<size_t> add_remote_slots(size_t stage, const std::string& node, uint64_t generation = 0);

  // The slots of other nodes' shares of the stages feeding a stage (they say 'drained').
  std::vector<size_t> remote_upstream_slots(size_t stage) const;

  // Each local stage fed from another node gets an ingress for what the data link brings.
  void start_ingresses();

  // The nodes running the stages that feed a stage.
  std::set<std::string> senders_of(size_t stage) const;

  ingress_fence fence_of(size_t stage) const;

  // The placement's epoch goes on what this node sends; fenced nodes are refused at hello.
  void publish_epoch();

  void start_ingress(size_t stage);

  // A new replica of a stage here (scaled up, or the stage moved here), started as the
  // generation after `generation`.
  void add_replica(size_t stage, uint64_t generation = 0);

  // The stages placed anew (a node died): see placement_update.
  void adopt(placement_update& u);

  void tell_participants(control_kind what, const std::string& stage);

  void end_sources();

  void on_control(const link_control& c);

  void spawn_slot(size_t i);

  void start_next_stage();

  bool stage_running(size_t stage) const;

  void publish_routes(size_t stage);

  void on_report(instance_report& r);

  // A replica being scaled away or retired drained: it is stopped now, and then leaves.
  void on_drained(const instance_ref& r);

  void on_down(const caf::down_msg& dm);

  // An input that keeps killing the stage's instances is given up after
  // dead_letter_after losses: recorded, and skipped by every instance of the stage.
  void count_loss(size_t i, const frame_key& k, const std::string& why);

  // Slot i failed: restarted as its next generation after a backoff, or quarantined past
  // its stage's restart policy (restart_tracker).
  void on_failure(size_t i, const std::string& why);

  void restart(size_t i, uint64_t failed_generation);

  // Slot i stopped for good: one scaled away leaves its stage; otherwise a stop goes on.
  void stopped_for_good(size_t i);

  // A stage with no replica left cannot make progress: the pipeline has failed.
  void check_viable(size_t stage);

  void on_finished(size_t i);

  // This node's share of a stage finished: the other nodes running the pipeline hear it.
  void check_part_finished(size_t s);

  // A stage is finished when each of its replicas is (one being scaled away does not count).
  void check_stage_finished(size_t s);

  // -- scaling ---------------------------------------------------------------------------

  // The index of the stage of that name, or why there is none.
  expected<size_t> find_stage(const std::string& name) const;

  static std::string nodes_text(const planned_stage& ps);

  // Why the pipeline takes no change now (starting, stopping or over), if it does not.
  caf::error not_running() const;

  caf::error reload_under_way() const;

  expected<void> scale(const std::string& name, uint32_t n);

  // Pauses or resumes a stage's instances here: paused, they hold what they take (their
  // credits bound it) and process nothing; restarts, new replicas and reloads start paused.
  expected<void> pause(const std::string& name, bool on);

  void set_paused(size_t stage, bool on, const std::string& why);

  // -- reloading -------------------------------------------------------------------------

  // The same error, its text prefixed with what was being done.
  static caf::error in(const std::string& what, const caf::error& e) {
    return make_error(code_of(e).value_or(errc::io_error), what + ": " + describe(e));
  }

  // A reload while another is under way waits for it (in order), and is answered when it
  // has run, or failed to.
  caf::result<void> reload(const reload_request& req);

  // The next queued reload, if any, once none is under way.
  void next_reload();

  // Starts a reload (rp answers it once the new version serves or failed); an error if it
  // cannot start.
  caf::error start_reload(const reload_request& req, caf::response_promise& rp);

  // A slot that is never spawned again lets go of its version's plan and library: after a
  // reload it is the last holder of the old version's library (and of the private copy a
  // fresh load is made from), which closes with it.
  void release_version(size_t i);

  // An incoming slot runs; once every new version runs, the routes switch to them and the old
  // ones drain.
  void incoming_running();

  // A new version did not come up: it is stopped, and the old one goes on serving.
  void abort_reload(const std::string& why);

  // Tells a replica scaled away to drain: it is done once every upstream instance has no
  // frame left unacknowledged to it, and it has processed and delivered all it took.
  void begin_drain(size_t i);

  // Slot i will send nothing more (quarantined or removed): draining receivers stop waiting
  // for it.
  void tell_drained_for(size_t i);

  // A drained replica stopped: it leaves its stage and the routes.
  void retire(size_t i);

  void complete(bool ok, std::string reason);

  void begin_stop();

  // Stops stages in reverse start order: producers first, so consumers see all they get.
  void stop_next_stage();

  void continue_stop() {
    if (phase_ == phase::stopping) stop_next_stage();
  }

  reload_coordinator reloads_;

  manager_setup s_;
  std::unique_ptr<metrics> hidden_;          // series of the slots of stages on other nodes
  std::set<std::string> participants_;       // the other nodes the pipeline runs on
  std::map<size_t, ingress_actor> ingress_;  // per local stage fed from other nodes
  slot_table stats_;                         // per slot, as slots_
  std::vector<slot> slots_;
  std::vector<stage_state> stages_;
  // Per stage, the last list of its receivers handed out (edge_to): the same list again is
  // shared, not made anew, by the routers of every replica upstream.
  mutable std::vector<std::shared_ptr<const route_receivers>> receivers_sent_;
  phase phase_ = phase::starting;
  size_t next_start_ = 0;
  size_t next_stop_ = 0;
  bool completed_ = false;
  bool ending_ = false;  // the sources were told to end their streams
  std::mt19937_64 rng_;
};

}  // namespace troupe
