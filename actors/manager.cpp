#include "manager.hpp"

#include "instance.hpp"
#include "isolated_adapter.hpp"
#include "messages.hpp"
#include "remote.hpp"
#include "restart_tracker.hpp"
#include "slot_phase.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <set>

namespace troupe {

slot_table make_slots(const plan& p, metrics& m) {
  slot_table slots;
  for (auto& s : p.stages)
    for (uint32_t r = 0; !s.remote && r < s.spec.replicas; ++r)
      slots.push_back(std::make_shared<slot_stats>(m, p.name, s.spec.name, s.manifest.name, r, s.mode));
  return slots;
}

expected<std::vector<std::shared_ptr<plugin_library>>> load_libraries(const plan& p,
                                                                      std::shared_ptr<worker_launcher> launcher) {
  std::vector<std::shared_ptr<plugin_library>> libs;
  std::map<std::string, std::shared_ptr<plugin_library>> by_path;
  std::map<std::string, call_result> checked;
  std::string unenforced;
  for (auto& s : p.stages) {
    if (s.remote) {
      libs.push_back(nullptr);
      continue;
    }
    if (s.mode == exec_mode::isolated) {
      // Its library is loaded by its workers only; one of them checks it now.
      auto [at, fresh] = checked.emplace(s.manifest.library, call_result{});
      if (fresh) at->second = isolated_adapter::check(s.manifest, launcher);
      if (!at->second.ok()) return make_error(errc::library_error, "stage '" + s.spec.name + "': " + at->second.error);
      libs.push_back(nullptr);
      continue;
    }
    const auto& r = s.manifest.resources;
    if (r.memory_mb > 0 || r.cpu_seconds > 0 || r.cpu_cores > 0 || r.open_files > 0 || !r.network)
      unenforced += (unenforced.empty() ? "" : ", ") + s.spec.name;
    auto& lib = by_path[s.manifest.library];
    if (!lib) {
      auto l = plugin_library::open(s.manifest);
      if (!l) return make_error(errc::library_error, "stage '" + s.spec.name + "': " + describe(l.error()));
      lib = *l;
    }
    libs.push_back(lib);
  }
  if (!unenforced.empty())
    spdlog::info(
        "pipeline '{}': embedded stages run in the node's process, where their manifests' resources are "
        "not enforced: {} (mode: isolated enforces them)",
        p.name, unenforced);
  return libs;
}

namespace {

using clock = std::chrono::steady_clock;

// What the manager sends itself besides its protocol: a restart after its backoff.
using manager_self_actor = manager_actor::extend<caf::reacts_to<restart_atom, size_t, uint64_t>>;

class manager_impl : public manager_self_actor::base {
 public:
  manager_impl(caf::actor_config& cfg, manager_setup s)
      : manager_self_actor::base(cfg), s_(std::move(s)), rng_(std::random_device{}()) {
    if (!s_.dead_letters) s_.dead_letters = std::make_shared<dead_letter_log>();
    if (s_.run.empty()) s_.run = s_.plan->name;
    auto& p = *s_.plan;
    stages_.resize(p.stages.size());
    stats_ = s_.slots->snapshot();
    for (size_t i = 0; i < stats_.size(); ++i) {
      auto& st = *stats_[i];
      size_t stage = 0;
      while (p.stages[stage].spec.name != st.stage) ++stage;
      slot sl;
      sl.stage = stage;
      sl.replica = st.replica;
      if (auto mv = s_.moves.find(st.stage); mv != s_.moves.end()) sl.generation = mv->second;
      slots_.push_back(std::move(sl));
      stages_[stage].slots.push_back(i);
      stages_[stage].next_replica = std::max(stages_[stage].next_replica, st.replica + 1);
    }
    for (size_t stage = 0; stage < p.stages.size(); ++stage)
      for (auto& node : p.stages[stage].elsewhere) add_remote_slots(stage, node);
  }

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

  // Records an event about the pipeline (slot npos) or one of its instances.
  void note(event_kind kind, size_t i, std::string state, std::string detail = {}, std::string failure = {}) {
    if (!s_.events) return;
    if (i != npos && !slots_[i].node.empty()) return;  // a stand-in for another node's share: its node tells
    event e;
    if (i != npos) {
      e.stage = stats(i).stage;
      e.replica = slots_[i].replica;
      e.generation = slots_[i].generation;
    }
    e.failure = std::move(failure);
    record(kind, std::move(e), std::move(state), std::move(detail));
  }
  // A stage's own event (scaling, reloads, pauses, dead letters).
  void note_stage(event_kind kind, const std::string& stage, std::string state, std::string detail) {
    if (!s_.events) return;
    event e;
    e.stage = stage;
    record(kind, std::move(e), std::move(state), std::move(detail));
  }
  void record(event_kind kind, event e, std::string state, std::string detail) {
    e.kind = kind;
    e.node = s_.node;
    e.pipeline = s_.plan->name;
    e.state = std::move(state);
    e.detail = std::move(detail);
    s_.events->add(std::move(e));
  }

  // The one place a slot's phase changes.
  void enter(size_t i, slot_phase next) {
    auto& sl = slots_[i];
    if (sl.phase == next) return;
    if (!can_enter(sl.phase, next)) {
      spdlog::critical("[node={} stage={} instance={} gen={}] slot went from {} to {}, which cannot happen", s_.node,
                       stats(i).stage, sl.replica, sl.generation, to_string(sl.phase), to_string(next));
      assert(false && "impossible slot phase change");
    }
    sl.phase = next;
    if (next == slot_phase::running || next == slot_phase::done)
      note(event_kind::instance, i, next == slot_phase::running ? "running" : "stopped");
    switch (next) {
      case slot_phase::running: sl.restarts.running(clock::now()); break;
      case slot_phase::quarantined:
        stats(i).quarantined.store(true);
        stats(i).quarantined_gauge.Set(1);
        break;
      default: break;
    }
  }

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
  edge_route edge_to(size_t d, bool here_only = false) const {
    edge_route e;
    e.stage = d;
    e.policy = s_.plan->stages[d].spec.routing;
    for (auto i : stages_[d].slots) {
      auto& sl = slots_[i];
      if (here_only && !sl.node.empty()) continue;
      e.receivers.push_back(sl.live() ? receiver_actor{sl.actor} : receiver_actor{});
      e.generations.push_back(sl.generation);
      e.draining.push_back(sl.retiring());
    }
    return e;
  }

  route_table routes_for(size_t stage) const {
    route_table rt;
    for (auto d : s_.plan->stages[stage].downstream) rt.edges.push_back(edge_to(d));
    return rt;
  }

  // -- across nodes ----------------------------------------------------------------------

  // The share of a stage that another node runs: one slot per replica there, each sent to
  // that node on a channel of its own; their series are kept apart (that node exports the
  // stage's own). Returns the new slots.
  std::vector<size_t> add_remote_slots(size_t stage, const std::string& node, uint64_t generation = 0) {
    auto& ps = s_.plan->stages[stage];
    if (!hidden_) hidden_ = std::make_unique<metrics>();
    std::vector<size_t> added;
    for (uint32_t r = 0; r < ps.spec.replicas; ++r) {
      stats_.push_back(
          std::make_shared<slot_stats>(*hidden_, s_.plan->name, ps.spec.name, ps.manifest.name, r, ps.mode));
      slot sl;
      sl.stage = stage;
      sl.replica = r;
      sl.node = node;
      sl.generation = generation;
      slots_.push_back(std::move(sl));
      stages_[stage].slots.push_back(slots_.size() - 1);
      added.push_back(slots_.size() - 1);
    }
    participants_.insert(node);
    return added;
  }

  // The slots of other nodes' shares of the stages feeding a stage (they say 'drained').
  std::vector<size_t> remote_upstream_slots(size_t stage) const {
    std::vector<size_t> out;
    for (auto u : s_.plan->stages[stage].upstream)
      for (auto i : stages_[u].slots)
        if (!slots_[i].node.empty()) out.push_back(i);
    return out;
  }

  // Each local stage fed from another node gets an ingress for what the data link brings.
  void start_ingresses() {
    if (!s_.plane) return;
    publish_epoch();
    auto& p = *s_.plan;
    for (size_t stage = 0; stage < p.stages.size(); ++stage) {
      auto& ps = p.stages[stage];
      if (ps.remote) continue;
      start_ingress(stage);
    }
    s_.plane->serve_control(s_.run, this);
  }

  // The nodes running the stages that feed a stage.
  std::set<std::string> senders_of(size_t stage) const {
    std::set<std::string> out;
    for (auto u : s_.plan->stages[stage].upstream)
      for (auto& n : s_.plan->stages[u].elsewhere) out.insert(n);
    return out;
  }

  ingress_fence fence_of(size_t stage) const {
    ingress_fence f;
    f.senders = senders_of(stage);
    f.upstream_slots = remote_upstream_slots(stage);
    f.epochs = s_.fences;
    return f;
  }

  // The placement's epoch goes on what this node sends; fenced nodes are refused at hello.
  void publish_epoch() {
    if (!s_.plane) return;
    s_.plane->set_epoch(s_.run, s_.epoch);
    for (auto& [node, epoch] : s_.fences) s_.plane->fence_node(node, epoch);
  }

  void start_ingress(size_t stage) {
    ingress_setup is;
    is.fence = fence_of(stage);
    if (is.fence.upstream_slots.empty()) return;
    is.run = s_.run;
    is.plane = s_.plane;
    is.window = s_.plan->window;
    is.window_bytes = s_.plan->window_bytes;
    is.routes.edges.push_back(edge_to(stage, true));  // changes come as (routes_atom)
    auto a = spawn_ingress(system(), std::move(is));
    s_.plane->serve(s_.run, s_.plan->stages[stage].spec.name, a);
    ingress_[stage] = a;
  }

  // A new replica of a stage here (scaled up, or the stage moved here), started as the
  // generation after `generation`.
  void add_replica(size_t stage, uint64_t generation = 0) {
    auto& ps = s_.plan->stages[stage];
    auto& st = stages_[stage];
    auto replica = st.next_replica++;
    stats_.push_back(s_.slots->add(s_.plan->name, ps.spec.name, ps.manifest.name, replica, ps.mode));
    slot sl;
    sl.stage = stage;
    sl.replica = replica;
    sl.generation = generation;
    slots_.push_back(std::move(sl));
    st.slots.push_back(slots_.size() - 1);
    spawn_slot(slots_.size() - 1);
  }

  // The stages placed anew (a node died): see placement_update.
  void adopt(placement_update& u) {
    if (phase_ == phase::stopping || phase_ == phase::stopped || completed_) return;
    auto old = s_.plan;
    auto& next = *u.plan;
    s_.plan = u.plan;
    s_.data_address = u.data_address;
    s_.epoch = std::max(s_.epoch, u.epoch);
    for (auto& [node, epoch] : u.fences) s_.fences[node] = std::max(s_.fences[node], epoch);
    publish_epoch();
    participants_.clear();
    for (auto& ps : next.stages)
      for (auto& n : ps.elsewhere) participants_.insert(n);
    for (size_t i = 0; i < next.stages.size(); ++i) {
      auto &o = old->stages[i], &n = next.stages[i];
      auto& st = stages_[i];
      bool changed = false;
      uint64_t generation = 0;
      if (auto mv = u.moves.find(n.spec.name); mv != u.moves.end()) generation = mv->second;
      // Shares of nodes that no longer run it: what they did not acknowledge goes to the rest.
      for (auto& gone : o.elsewhere) {
        if (std::find(n.elsewhere.begin(), n.elsewhere.end(), gone) != n.elsewhere.end()) continue;
        spdlog::warn("[node={}] stage '{}' runs no more on node {}: what it did not acknowledge goes to {}", s_.node,
                     n.spec.name, gone, nodes_text(n));
        for (auto j : st.slots) {
          auto& sl = slots_[j];
          if (sl.node != gone) continue;
          generation = std::max(generation, sl.generation);
          if (sl.actor) send<caf::message_priority::high>(sl.actor, stop_atom::value);
          enter(j, slot_phase::done);
        }
        std::erase_if(st.slots, [&](size_t j) { return slots_[j].node == gone; });
        changed = true;
      }
      // Nodes that run it now.
      for (auto& added : n.elsewhere) {
        if (std::find(o.elsewhere.begin(), o.elsewhere.end(), added) != o.elsewhere.end()) continue;
        for (auto j : add_remote_slots(i, added, generation)) spawn_slot(j);
        changed = true;
      }
      if (o.remote && !n.remote) {  // it runs here now
        s_.libraries[i] = u.libraries[i];
        if (st.finished) {  // it finished where it ran: the others hear it from here
          tell_participants(control_kind::finished, n.spec.name);
        } else {
          spdlog::warn("[node={}] stage '{}' of pipeline '{}' moved here: starting {} instance{}", s_.node, n.spec.name,
                       next.name, n.spec.replicas, n.spec.replicas == 1 ? "" : "s");
          for (uint32_t r = 0; r < n.spec.replicas; ++r) add_replica(i, generation);
        }
        changed = true;
      } else if (!o.remote && n.remote) {
        // Placed elsewhere (or, while this node cannot keep its lease, nowhere for now): the
        // instances here stop. What they did not acknowledge their senders send again where
        // the stage runs now; what they made was not acknowledged upstream either (every hop
        // of a placed pipeline acknowledges only once its outputs are), so nothing is lost.
        spdlog::warn("[node={}] stage '{}' of pipeline '{}' {}: stopping its instances here", s_.node, n.spec.name,
                     next.name, n.nodes.empty() ? "is placed on no node for now" : "runs on " + nodes_text(n) + " now");
        for (auto j : st.slots) {
          auto& sl = slots_[j];
          if (!sl.node.empty()) continue;
          if (sl.actor) send<caf::message_priority::high>(sl.actor, stop_atom::value);
          enter(j, slot_phase::done);
        }
        std::erase_if(st.slots, [&](size_t j) { return slots_[j].node.empty(); });
        changed = true;
      }
      if (changed) publish_routes(i);
    }
    // Ingresses: who feeds them now (and whose drained they wait for).
    for (size_t i = 0; i < next.stages.size(); ++i)
      if (!next.stages[i].remote && !ingress_.count(i)) start_ingress(i);
    for (auto& [stage, a] : ingress_) send<caf::message_priority::high>(a, fence_atom::value, fence_of(stage));
    // A node new to the pipeline hears what has finished here, and a drain under way.
    for (size_t i = 0; i < next.stages.size(); ++i)
      if (stages_[i].told_finished) tell_participants(control_kind::finished, next.stages[i].spec.name);
    if (ending_) tell_participants(control_kind::end, {});
    for (size_t i = 0; i < next.stages.size(); ++i) check_stage_finished(i);
  }

  void tell_participants(control_kind what, const std::string& stage) {
    if (!s_.plane) return;
    for (auto& node : participants_) {
      auto it = s_.data_address.find(node);
      if (it == s_.data_address.end()) {
        spdlog::error("pipeline '{}': no data address for node {}; it is not told '{}'", s_.plan->name, node,
                      to_string(what));
        continue;
      }
      s_.plane->control(it->second, s_.run, what, stage, node);
    }
  }

  void end_sources() {
    ending_ = true;
    for (size_t k = 0; k < stages_.size(); ++k)  // what the sources made must flow through
      set_paused(k, false, "resumed to drain");
    spdlog::info("pipeline '{}': the sources end their streams; draining", s_.plan->name);
    note(event_kind::pipeline, npos, "draining");
    for (size_t i = 0; i < slots_.size(); ++i)
      if (stage_of(i).is_source() && slots_[i].actor)
        send<caf::message_priority::high>(slots_[i].actor, end_atom::value);
  }

  void on_control(const link_control& c) {
    auto& from = c.from;
    if (!participants_.count(from)) {
      spdlog::warn("[node={}] pipeline '{}': ignored '{}' from node {}, which runs no part of it now", s_.node,
                   s_.plan->name, to_string(c.kind), from);
      return;
    }
    if (auto f = s_.fences.find(from); f != s_.fences.end() && c.epoch <= f->second) {
      spdlog::warn(
          "[node={}] pipeline '{}': ignored '{}' from node {}: it was sent under placement revision {}, and "
          "stages moved away from that node at {} (fenced)",
          s_.node, s_.plan->name, to_string(c.kind), from, c.epoch, f->second);
      return;
    }
    if (c.kind == control_kind::end) {
      if (!ending_) end_sources();
      return;
    }
    auto found = find_stage(c.stage);
    if (!found) {
      spdlog::error("pipeline '{}': told '{}' of {}", s_.plan->name, to_string(c.kind), describe(found.error()));
      return;
    }
    auto i = *found;
    spdlog::debug("[node={}] stage '{}' finished on node {}", s_.node, c.stage, from);
    for (auto j : stages_[i].slots)
      if (slots_[j].node == from) on_finished(j);  // none if that node no longer runs it: fenced
  }

  void spawn_slot(size_t i) {
    auto& sl = slots_[i];
    sl.generation += 1;
    stats(i).generation.store(sl.generation);  // from now on, older outputs are stale
    stats(i).generation_gauge.Set(static_cast<double>(sl.generation));
    stats(i).failure.store(failure_class::none);
    stats(i).set_state(instance_state::loaded);
    if (!sl.node.empty()) {  // a share of a stage on another node: sent to through the link
      remote_stage_setup rs;
      rs.slot = i;
      rs.generation = sl.generation;
      rs.manager = this;
      rs.plane = s_.plane;
      rs.node = sl.node;
      auto address = s_.data_address.find(sl.node);
      if (address != s_.data_address.end())
        rs.address = address->second;
      else
        spdlog::error("[node={}] no data address is known for node {}: frames for stage '{}' cannot go there", s_.node,
                      sl.node, s_.plan->stages[sl.stage].spec.name);
      rs.pipeline = s_.run;
      rs.stage = s_.plan->stages[sl.stage].spec.name;
      sl.actor = spawn_remote_stage(system(), std::move(rs));
    } else {
      instance_setup is;
      is.slot = i;
      is.stage = sl.stage;
      is.replica = sl.replica;
      is.generation = sl.generation;
      is.plan = sl.plan ? sl.plan : s_.plan;
      is.stats = stats_[i];
      is.library = sl.library ? sl.library : s_.libraries[sl.stage];
      is.executor = s_.executor;
      is.launcher = s_.launcher;
      is.manager = this;
      is.node = s_.node;
      is.routes = routes_for(sl.stage);
      is.carry = std::move(sl.carry);
      sl.carry = {};
      is.dead = stages_[sl.stage].dead;
      is.end_to_end = s_.plane != nullptr;
      is.paused = stages_[sl.stage].paused;
      sl.actor =
          s_.spawn_instance ? s_.spawn_instance(system(), std::move(is)) : spawn_instance(system(), std::move(is));
    }
    enter(i, slot_phase::spawning);
    // Monitored for its exit, linked so that it does not outlive a manager that is killed.
    monitor(sl.actor);
    link_to(sl.actor);
    send<caf::message_priority::high>(sl.actor, start_atom::value);
  }

  void start_next_stage() {
    if (phase_ != phase::starting) return;
    if (next_start_ == s_.plan->start_order.size()) {
      phase_ = phase::running;
      size_t here = 0, elsewhere = 0;
      for (auto& sl : slots_) ++(sl.node.empty() ? here : elsewhere);
      note(event_kind::pipeline, npos, "running",
           std::to_string(here) + " instances here" +
               (elsewhere ? ", " + std::to_string(elsewhere) + " on other nodes" : std::string()));
      if (elsewhere == 0)
        spdlog::info("pipeline '{}' running: {} stages, {} instances", s_.plan->name, stages_.size(), here);
      else
        spdlog::info("[node={}] pipeline '{}' running: {} instances here, {} on other nodes", s_.node, s_.plan->name,
                     here, elsewhere);
      return;
    }
    auto stage = s_.plan->start_order[next_start_];
    for (auto i : stages_[stage].slots) spawn_slot(i);
  }

  bool stage_running(size_t stage) const {
    for (auto i : stages_[stage].slots)
      if (!slots_[i].running() && !slots_[i].quarantined()) return false;
    return true;
  }

  void publish_routes(size_t stage) {
    if (auto it = ingress_.find(stage); it != ingress_.end()) {
      route_table rt;
      rt.edges.push_back(edge_to(stage, true));
      send<caf::message_priority::high>(it->second, routes_atom::value, std::move(rt));
    }
    for (auto u : s_.plan->stages[stage].upstream)
      for (auto i : stages_[u].slots)
        if (slots_[i].actor) send<caf::message_priority::high>(slots_[i].actor, routes_atom::value, routes_for(u));
  }

  void on_report(instance_report& r) {
    auto& sl = slots_[r.slot];
    if (r.generation != sl.generation) return;  // from a generation already replaced
    auto& st = stats(r.slot);
    switch (r.state) {
      case instance_state::running:
        if (r.drained) {
          if (sl.retiring() && sl.running()) {
            enter(r.slot, slot_phase::stopping);
            send<caf::message_priority::high>(sl.actor, stop_atom::value);
          }
          return;
        }
        if (r.finished) {
          on_finished(r.slot);
          return;
        }
        // Told to stop (or stopped for good) before it came up: it stays that way.
        if (sl.phase != slot_phase::spawning) return;
        enter(r.slot, slot_phase::running);
        if (sl.incoming()) {
          incoming_running();
          return;
        }
        publish_routes(sl.stage);
        if (sl.retiring()) begin_drain(r.slot);
        if (ending_ && stage_of(r.slot).is_source()) send<caf::message_priority::high>(sl.actor, end_atom::value);
        if (stages_[sl.stage].upstream_done) send<caf::message_priority::high>(sl.actor, upstream_done_atom::value);
        if (phase_ == phase::starting && s_.plan->start_order[next_start_] == sl.stage && stage_running(sl.stage)) {
          ++next_start_;
          start_next_stage();
        }
        return;
      case instance_state::stopped: stopped_for_good(r.slot); return;
      case instance_state::failed:
        st.set_error(r.error);
        note(event_kind::instance, r.slot, "failed", r.error, to_string(r.failure));
        if (sl.done()) return;  // stopped because its stage left this node: never restarted
        if (sl.incoming()) {
          enter(r.slot, slot_phase::done);
          abort_reload(stats(r.slot).stage + " " + to_string(r.failure) + ": " + r.error);
          return;
        }
        if (phase_ == phase::stopping || phase_ == phase::stopped || r.failure == failure_class::teardown_failed) {
          stopped_for_good(r.slot);
          return;
        }
        sl.carry = std::move(r.carry);
        if (r.failure == failure_class::lost && r.culprit) count_loss(r.slot, *r.culprit, r.error);
        on_failure(r.slot, r.error);
        publish_routes(sl.stage);
        return;
      default: return;
    }
  }

  void on_down(const caf::down_msg& dm) {
    for (size_t i = 0; i < slots_.size(); ++i) {
      auto& sl = slots_[i];
      if (!sl.actor || sl.actor.address() != dm.source) continue;
      sl.actor = nullptr;
      if (phase_ == phase::stopping || phase_ == phase::stopped) {
        enter(i, slot_phase::done);
        continue_stop();
        return;
      }
      if (sl.done() || sl.quarantined()) return;
      // Gone without a failure report (a report always precedes a planned exit).
      if (stats(i).state.load() != instance_state::failed) {
        auto why = "instance actor exited: " + caf::to_string(dm.reason);
        stats(i).set_state(instance_state::failed);
        stats(i).failure.store(failure_class::lost);
        stats(i).last_failure.store(failure_class::lost);
        stats(i).set_error(why);
        note(event_kind::instance, i, "failed", why, to_string(failure_class::lost));
        on_failure(i, why);
        publish_routes(sl.stage);
      }
      return;
    }
  }

  // An input that keeps killing the stage's instances is given up after
  // dead_letter_after losses: recorded, and skipped by every instance of the stage.
  void count_loss(size_t i, const frame_key& k, const std::string& why) {
    auto& stage = stages_[slots_[i].stage];
    if (stage.dead.count(k)) return;
    if (stage.losses.size() > 4096) stage.losses.clear();  // bounded: old suspects are forgotten
    auto n = ++stage.losses[k];
    if (n < s_.plan->dead_letter_after) return;
    stage.losses.erase(k);
    stage.dead.insert(k);
    auto& ps = stage_of(i);
    spdlog::error("[node={} stage={}] dead letter: stream {} seq {} part {} was lost on {} times: {}", s_.node,
                  ps.spec.name, k.stream, k.seq, k.part, n, why);
    note_stage(event_kind::dead_letter, ps.spec.name, {},
               "stream " + std::to_string(k.stream) + " seq " + std::to_string(k.seq) + " part " +
                   std::to_string(k.part) + " was lost on " + std::to_string(n) + " times: " + why);
    auto problem = s_.dead_letters->add({k, ps.spec.name, ps.manifest.name, "lost", why, n});
    if (!problem.empty()) spdlog::error("{}", problem);
    for (auto j : stage.slots)
      if (slots_[j].actor) send<caf::message_priority::high>(slots_[j].actor, skip_atom::value, k);
  }

  // Slot i failed: restarted as its next generation after a backoff, or quarantined past
  // its stage's restart policy (restart_tracker).
  void on_failure(size_t i, const std::string& why) {
    auto& sl = slots_[i];
    auto& policy = stage_of(i).spec.restart;
    auto d = sl.restarts.failed(policy, clock::now(), std::uniform_real_distribution<double>(0, 1)(rng_));
    if (d.what == restart_tracker::decision::verdict::quarantine) {
      enter(i, slot_phase::quarantined);
      tell_drained_for(i);
      spdlog::error("[node={} stage={} instance={} gen={}] quarantined after {} restarts in {}s: {}", s_.node,
                    stats(i).stage, sl.replica, sl.generation, d.recent, policy.period_s, why);
      note(event_kind::quarantine, i, "quarantined",
           "after " + std::to_string(d.recent) + " restarts in " + std::to_string(policy.period_s) + " s: " + why);
      if (sl.retiring()) {
        retire(i);  // it was leaving anyway; its stage must not wait for it to drain
        return;
      }
      check_viable(sl.stage);
      return;
    }
    enter(i, slot_phase::restarting);
    spdlog::warn("[node={} stage={} instance={} gen={}] restarting in {} ms as generation {}: {}", s_.node,
                 stats(i).stage, sl.replica, sl.generation, d.delay.count(), sl.generation + 1, why);
    note(event_kind::restart, i, "restarting",
         "in " + std::to_string(d.delay.count()) + " ms as generation " + std::to_string(sl.generation + 1) + ": " +
             why);
    delayed_send(this, d.delay, restart_atom::value, i, sl.generation);
  }

  void restart(size_t i, uint64_t failed_generation) {
    auto& sl = slots_[i];
    if (sl.generation != failed_generation || sl.phase != slot_phase::restarting) return;
    if (phase_ == phase::stopping || phase_ == phase::stopped) {
      enter(i, slot_phase::done);
      continue_stop();
      return;
    }
    stats(i).restarts.Increment();
    spawn_slot(i);
  }

  // Slot i stopped for good: one scaled away leaves its stage; otherwise a stop goes on.
  void stopped_for_good(size_t i) {
    enter(i, slot_phase::done);
    if (slots_[i].retiring() && phase_ == phase::running) {
      retire(i);
      return;
    }
    continue_stop();
  }

  // A stage with no replica left cannot make progress: the pipeline has failed.
  void check_viable(size_t stage) {
    for (auto i : stages_[stage].slots)
      if (!slots_[i].quarantined()) return;
    if (stages_[stage].slots.empty()) return;
    auto& s = s_.plan->stages[stage];
    auto why = "stage '" + s.spec.name +
               "' has no running instance left (quarantined: " + stats(stages_[stage].slots.front()).last_error() + ")";
    complete(false, why);
  }

  void on_finished(size_t i) {
    auto& sl = slots_[i];
    sl.finished = true;
    stats(i).finished.store(true);
    if (sl.node.empty()) check_part_finished(sl.stage);
    check_stage_finished(sl.stage);
  }

  // This node's share of a stage finished: the other nodes running the pipeline hear it.
  void check_part_finished(size_t s) {
    auto& stage = stages_[s];
    if (!s_.plane || stage.told_finished) return;
    bool any = false;
    for (auto j : stage.slots) {
      auto& sl = slots_[j];
      if (!sl.node.empty() || sl.retiring()) continue;
      if (!sl.finished) return;
      any = true;
    }
    if (!any) return;
    stage.told_finished = true;
    tell_participants(control_kind::finished, s_.plan->stages[s].spec.name);
  }

  // A stage is finished when each of its replicas is (one being scaled away does not count).
  void check_stage_finished(size_t s) {
    auto& stage = stages_[s];
    if (stage.finished) return;
    bool any = false;
    for (auto j : stage.slots) {
      if (slots_[j].retiring()) continue;
      if (!slots_[j].finished) return;
      any = true;
    }
    if (!any) return;
    stage.finished = true;
    spdlog::debug("stage '{}' finished", s_.plan->stages[s].spec.name);

    for (auto d : s_.plan->stages[s].downstream) {
      bool all = true;
      for (auto u : s_.plan->stages[d].upstream) all = all && stages_[u].finished;
      if (!all) continue;
      stages_[d].upstream_done = true;
      for (auto j : stages_[d].slots)
        if (slots_[j].live()) send<caf::message_priority::high>(slots_[j].actor, upstream_done_atom::value);
    }
    for (auto& st : stages_)
      if (!st.finished) return;
    complete(true, {});
  }

  // -- scaling ---------------------------------------------------------------------------

  // The index of the stage of that name, or why there is none.
  expected<size_t> find_stage(const std::string& name) const {
    for (size_t i = 0; i < s_.plan->stages.size(); ++i)
      if (s_.plan->stages[i].spec.name == name) return i;
    return make_error(errc::not_found, "no stage named '" + name + "' in pipeline '" + s_.plan->name + "'");
  }

  static std::string nodes_text(const planned_stage& ps) {
    std::string out = ps.nodes.size() == 1 ? "node " : "nodes ";
    for (size_t i = 0; i < ps.nodes.size(); ++i) out += (i ? ", " : "") + ps.nodes[i];
    return out;
  }

  // Why the pipeline takes no change now (starting, stopping or over), if it does not.
  caf::error not_running() const {
    if (phase_ == phase::starting)
      return make_error(errc::not_running, "pipeline '" + s_.plan->name + "' is still starting");
    if (phase_ != phase::running || completed_)
      return make_error(errc::not_running, "pipeline '" + s_.plan->name + "' is not running");
    return {};
  }

  caf::error reload_under_way() const {
    if (!reload_) return {};
    return make_error(errc::busy,
                      "stage '" + s_.plan->stages[reload_->stage].spec.name + "' is being reloaded; try again");
  }

  expected<void> scale(const std::string& name, uint32_t n) {
    auto found = find_stage(name);
    if (!found) return found.error();
    auto stage = *found;
    auto& ps = s_.plan->stages[stage];
    if (auto e = not_running()) return e;
    if (ps.remote)
      return make_error(errc::refused, "stage '" + name + "' runs on " + nodes_text(ps) + ": scale it there");
    if (ps.is_source())
      return make_error(errc::refused, "stage '" + name + "' is a source: its replicas are fixed while it runs");
    if (n < 1 || n > max_replicas)
      return make_error(errc::refused, "replicas must be between 1 and " + std::to_string(max_replicas));
    if (auto e = reload_under_way()) return e;
    auto& st = stages_[stage];
    std::vector<size_t> active;
    for (auto i : st.slots) {
      if (!slots_[i].node.empty()) continue;  // other nodes' shares: scaled there
      if (slots_[i].retiring())
        return make_error(errc::busy, "stage '" + name + "' is still draining a replica scaled away; try again");
      if (!slots_[i].quarantined()) active.push_back(i);
    }
    if (st.finished) return make_error(errc::not_running, "stage '" + name + "' has finished");
    if (active.size() == n) return {};
    spdlog::info("[node={} stage={}] scaling from {} to {} replicas", s_.node, name, active.size(), n);
    note_stage(event_kind::scale, name, {},
               "from " + std::to_string(active.size()) + " to " + std::to_string(n) + " replicas");
    for (auto k = active.size(); k < n; ++k) add_replica(stage);
    // The newest replicas go first.
    for (auto k = active.size(); k > n; --k) {
      auto i = active[k - 1];
      slots_[i].role = slot_role::retiring;
      if (slots_[i].running()) begin_drain(i);  // otherwise once it runs
    }
    publish_routes(stage);
    return {};
  }

  // Pauses or resumes a stage's instances here: paused, they hold what they take (their
  // credits bound it) and process nothing; restarts, new replicas and reloads start paused.
  expected<void> pause(const std::string& name, bool on) {
    auto found = find_stage(name);
    if (!found) return found.error();
    auto& ps = s_.plan->stages[*found];
    if (auto e = not_running()) return e;
    if (ps.remote)
      return make_error(errc::refused, "stage '" + name + "' runs on " + nodes_text(ps) + ": " +
                                           (on ? "pause" : "resume") + " it there");
    set_paused(*found, on, on ? "paused" : "resumed");
    return {};
  }

  void set_paused(size_t stage, bool on, const std::string& why) {
    auto& st = stages_[stage];
    if (st.paused == on) return;
    st.paused = on;
    auto& name = s_.plan->stages[stage].spec.name;
    spdlog::info("[node={} stage={}] {}", s_.node, name, why);
    note_stage(event_kind::pause, name, on ? "paused" : "resumed", why == "paused" || why == "resumed" ? "" : why);
    for (size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].stage == stage && slots_[i].node.empty() && slots_[i].actor && !slots_[i].done())
        send<caf::message_priority::high>(slots_[i].actor, pause_atom::value, on);
  }

  // -- reloading -------------------------------------------------------------------------

  // The same error, its text prefixed with what was being done.
  static caf::error in(const std::string& what, const caf::error& e) {
    return make_error(code_of(e).value_or(errc::io_error), what + ": " + describe(e));
  }

  // A reload while another is under way waits for it (in order), and is answered when it
  // has run, or failed to.
  caf::result<void> reload(const reload_request& req) {
    auto rp = make_response_promise();
    if (reload_) {
      spdlog::info("[node={} stage={}] reload queued behind the reload of stage '{}'", s_.node, req.stage,
                   s_.plan->stages[reload_->stage].spec.name);
      queued_reloads_.push_back({req, rp});
      return rp;
    }
    if (auto e = start_reload(req, rp)) rp.deliver(e);
    return rp;
  }

  // The next queued reload, if any, once none is under way.
  void next_reload() {
    while (!reload_ && !queued_reloads_.empty()) {
      auto [req, rp] = std::move(queued_reloads_.front());
      queued_reloads_.pop_front();
      if (auto e = start_reload(req, rp)) rp.deliver(e);
    }
  }

  // Starts a reload (rp answers it once the new version serves or failed); an error if it
  // cannot start.
  caf::error start_reload(const reload_request& req, caf::response_promise& rp) {
    auto found = find_stage(req.stage);
    if (!found) return found.error();
    auto stage = *found;
    auto& ps = s_.plan->stages[stage];
    if (auto e = not_running()) return e;
    if (ps.remote)
      return make_error(errc::refused, "stage '" + req.stage + "' runs on " + nodes_text(ps) + ": reload it there");
    if (ps.is_source())
      return make_error(errc::refused,
                        "stage '" + req.stage + "' is a source: a new instance would start its streams over");
    auto& st = stages_[stage];
    std::vector<size_t> old;
    for (auto i : st.slots) {
      if (!slots_[i].node.empty()) continue;  // other nodes' shares: reloaded there
      if (slots_[i].retiring())
        return make_error(errc::busy, "stage '" + req.stage + "' is still draining a replica; try again");
      if (!slots_[i].quarantined()) old.push_back(i);
    }
    if (old.empty() || st.finished)
      return make_error(errc::not_running, "stage '" + req.stage + "' has no replica serving");
    // The new version: its manifest, its config (the stage's, with the changes), its library.
    auto what = "reload of stage '" + req.stage + "'";
    auto path = req.manifest.empty() ? ps.manifest.path : req.manifest;
    auto m = load_manifest(path);
    if (!m) return in(what, m.error());
    if (m->name != ps.manifest.name)
      return make_error(errc::refused,
                        what + ": " + path + " is plugin '" + m->name + "', the stage runs '" + ps.manifest.name + "'");
    auto entries = ps.spec.config;
    for (auto& [key, value] : req.config) {
      auto it = std::find_if(entries.begin(), entries.end(), [&](auto& e) { return e.key == key; });
      if (it != entries.end())
        it->value = value;
      else
        entries.push_back({key, value, 0});
    }
    auto config = validate_config(*m, entries, what);
    if (!config) return config.error();
    std::shared_ptr<plugin_library> lib;
    if (ps.mode == exec_mode::embedded) {
      auto l = plugin_library::open(*m, true);
      if (!l) return in(what, l.error());
      lib = *l;
    } else {
      lib = s_.libraries[stage];  // the worker loads the new library itself
    }
    auto next = std::make_shared<troupe::plan>(*s_.plan);
    auto& ns = next->stages[stage];
    ns.manifest = std::move(*m);
    if (auto why = tighten(ns.manifest.resources, ns.spec.resources, ns.spec.resources_given); !why.empty())
      return make_error(errc::invalid_config, what + ": stage '" + req.stage + "': " + why);
    ns.config = std::move(*config);
    ns.spec.config = std::move(entries);
    if (!ns.spec.deadline_ms) ns.deadline_ms = ns.manifest.resources.deadline_ms;
    spdlog::info("[node={} stage={}] reloading: {} {} beside {} {}", s_.node, req.stage, ns.manifest.name,
                 ns.manifest.version.to_string(), ps.manifest.name, ps.manifest.version.to_string());
    note_stage(event_kind::reload, req.stage, "reloading",
               ns.manifest.name + " " + ns.manifest.version.to_string() + " beside " + ps.manifest.name + " " +
                   ps.manifest.version.to_string());
    reload_state rs;
    rs.stage = stage;
    rs.plan = next;
    rs.library = lib;
    rs.old = old;
    rs.promise = rp;
    for (auto i : old) {
      slot sl;
      sl.stage = stage;
      // A replica of its own (its own metrics), as the next generation of the one it replaces.
      sl.replica = st.next_replica++;
      sl.generation = slots_[i].generation;
      sl.role = slot_role::incoming;
      sl.plan = next;
      sl.library = lib;
      stats_.push_back(s_.slots->add(next->name, req.stage, ns.manifest.name, sl.replica, ns.mode));
      slots_.push_back(std::move(sl));
      rs.incoming.push_back(slots_.size() - 1);
      spawn_slot(slots_.size() - 1);
    }
    reload_ = std::move(rs);
    return {};
  }

  // Every new version runs: the routes switch to them, and the old ones drain.
  void incoming_running() {
    auto& rs = *reload_;
    for (auto i : rs.incoming)
      if (!slots_[i].running()) return;
    auto& st = stages_[rs.stage];
    for (auto i : rs.incoming) {
      slots_[i].role = slot_role::serving;
      st.slots.push_back(i);
      if (st.upstream_done) send<caf::message_priority::high>(slots_[i].actor, upstream_done_atom::value);
    }
    for (auto i : rs.old) {
      // An old replica lost while it drains comes back as the old version: what it held is
      // processed by the version it was sent to.
      if (!slots_[i].plan) slots_[i].plan = s_.plan;
      if (!slots_[i].library) slots_[i].library = s_.libraries[rs.stage];
      slots_[i].role = slot_role::retiring;
      if (slots_[i].running()) begin_drain(i);
    }
    // From now on restarts and new replicas use the new version.
    s_.plan = rs.plan;
    s_.libraries[rs.stage] = rs.library;
    publish_routes(rs.stage);
    auto& ps = s_.plan->stages[rs.stage];
    spdlog::info("[node={} stage={}] reloaded: {} {} serves", s_.node, ps.spec.name, ps.manifest.name,
                 ps.manifest.version.to_string());
    note_stage(event_kind::reload, ps.spec.name, "reloaded",
               ps.manifest.name + " " + ps.manifest.version.to_string() + " serves");
    rs.promise.deliver(caf::unit);
    reload_.reset();
    next_reload();
  }

  // A new version did not come up: it is stopped, and the old one goes on serving.
  void abort_reload(const std::string& why) {
    if (!reload_) return;
    auto& rs = *reload_;
    for (auto i : rs.incoming) {
      auto& sl = slots_[i];
      if (sl.actor && !sl.done()) send<caf::message_priority::high>(sl.actor, stop_atom::value);
      enter(i, slot_phase::done);  // it never joined its stage
    }
    spdlog::error("[node={} stage={}] reload failed, the old version goes on serving: {}", s_.node,
                  s_.plan->stages[rs.stage].spec.name, why);
    note_stage(event_kind::reload, s_.plan->stages[rs.stage].spec.name, "failed",
               "the old version goes on serving: " + why);
    rs.promise.deliver(make_error(errc::start_failed, "start_failed: " + why));
    reload_.reset();
    next_reload();
  }

  // Tells a replica scaled away to drain: it is done once every upstream instance has no
  // frame left unacknowledged to it, and it has processed and delivered all it took.
  void begin_drain(size_t i) {
    auto& sl = slots_[i];
    std::vector<size_t> upstream;
    for (auto u : s_.plan->stages[sl.stage].upstream)
      for (auto j : stages_[u].slots)
        if (!slots_[j].quarantined()) upstream.push_back(j);
    spdlog::debug("[node={} stage={} instance={}] draining", s_.node, stats(i).stage, sl.replica);
    send<caf::message_priority::high>(sl.actor, drain_atom::value, std::move(upstream));
  }

  // Slot i will send nothing more (quarantined or removed): draining receivers stop waiting
  // for it.
  void tell_drained_for(size_t i) {
    for (auto d : s_.plan->stages[slots_[i].stage].downstream)
      for (auto j : stages_[d].slots)
        if (slots_[j].retiring() && slots_[j].actor)
          send<caf::message_priority::high>(slots_[j].actor, drained_atom::value, i);
  }

  // A drained replica stopped: it leaves its stage and the routes.
  void retire(size_t i) {
    auto& sl = slots_[i];
    auto& st = stages_[sl.stage];
    st.slots.erase(std::remove(st.slots.begin(), st.slots.end(), i), st.slots.end());
    spdlog::info("[node={} stage={} instance={}] scaled away", s_.node, stats(i).stage, sl.replica);
    note(event_kind::instance, i, "scaled_away");
    publish_routes(sl.stage);
    tell_drained_for(i);
    check_stage_finished(sl.stage);
  }

  void complete(bool ok, std::string reason) {
    if (completed_) return;
    completed_ = true;
    if (ok)
      spdlog::info("pipeline '{}' finished", s_.plan->name);
    else
      spdlog::error("pipeline '{}' failed: {}", s_.plan->name, reason);
    note(event_kind::pipeline, npos, ok ? "finished" : "failed", reason);
    send(s_.listener, completed_atom::value, pipeline_outcome{ok, std::move(reason)});
  }

  void begin_stop() {
    if (phase_ == phase::stopping || phase_ == phase::stopped) return;
    for (auto& [req, rp] : queued_reloads_)
      rp.deliver(make_error(errc::not_running,
                            "pipeline '" + s_.plan->name + "' is stopping: stage '" + req.stage + "' is not reloaded"));
    queued_reloads_.clear();
    abort_reload("the pipeline is stopping");
    phase_ = phase::stopping;
    next_stop_ = 0;
    stop_next_stage();
  }

  // Stops stages in reverse start order: producers first, so consumers see all they get.
  void stop_next_stage() {
    auto& order = s_.plan->start_order;
    while (next_stop_ < order.size()) {
      auto stage = order[order.size() - 1 - next_stop_];
      bool waiting = false;
      for (auto i : stages_[stage].slots) {
        auto& sl = slots_[i];
        if (sl.done()) continue;
        if (!sl.actor || sl.quarantined()) {  // nothing running there (a quarantined one is exiting)
          enter(i, slot_phase::done);
          continue;
        }
        if (sl.phase != slot_phase::stopping) {
          enter(i, slot_phase::stopping);
          send<caf::message_priority::high>(sl.actor, stop_atom::value);
        }
        waiting = true;
      }
      if (waiting) return;
      ++next_stop_;
    }
    phase_ = phase::stopped;
    spdlog::info("pipeline '{}' stopped", s_.plan->name);
    note(event_kind::pipeline, npos, "stopped");
    send(s_.listener, stopped_atom::value);
    quit();
  }

  void continue_stop() {
    if (phase_ == phase::stopping) stop_next_stage();
  }

  static constexpr uint32_t max_replicas = 256;

  struct reload_state {
    size_t stage = 0;
    std::shared_ptr<const troupe::plan> plan;
    std::shared_ptr<plugin_library> library;
    std::vector<size_t> old, incoming;  // slots
    caf::response_promise promise;      // answers the reload request: nothing, or an error
  };
  std::optional<reload_state> reload_;
  std::deque<std::pair<reload_request, caf::response_promise>> queued_reloads_;  // waiting for reload_

  manager_setup s_;
  std::unique_ptr<metrics> hidden_;          // series of the slots of stages on other nodes
  std::set<std::string> participants_;       // the other nodes the pipeline runs on
  std::map<size_t, ingress_actor> ingress_;  // per local stage fed from other nodes
  slot_table stats_;                         // per slot, as slots_
  std::vector<slot> slots_;
  std::vector<stage_state> stages_;
  phase phase_ = phase::starting;
  size_t next_start_ = 0;
  size_t next_stop_ = 0;
  bool completed_ = false;
  bool ending_ = false;  // the sources were told to end their streams
  std::mt19937_64 rng_;
};

}  // namespace

manager_actor spawn_manager(caf::actor_system& sys, manager_setup setup) {
  return sys.spawn<manager_impl>(std::move(setup));
}

namespace {

// Asks the manager and waits at most timeout for its answer: nothing, or an error.
template <class... Ts>
expected<void> ask(caf::actor_system& sys, const manager_actor& manager, std::chrono::milliseconds timeout,
                   Ts&&... xs) {
  caf::scoped_actor self{sys};
  expected<void> answer =
      make_error(errc::no_answer, "the manager did not answer within " + std::to_string(timeout.count()) + " ms");
  self->request(manager, timeout, std::forward<Ts>(xs)...)
      .receive([&]() { answer = {}; },
               [&](caf::error& e) {
                 if (code_of(e))
                   answer = std::move(e);
                 else if (e == caf::sec::request_timeout)
                   return;  // as above
                 else
                   answer = make_error(errc::no_answer, "the manager did not answer: " + sys.render(e));
               });
  return answer;
}

}  // namespace

expected<void> reload_stage(caf::actor_system& sys, const manager_actor& manager, reload_request request,
                            std::chrono::milliseconds timeout) {
  return ask(sys, manager, timeout, reload_atom::value, std::move(request));
}

expected<void> scale_stage(caf::actor_system& sys, const manager_actor& manager, const std::string& stage,
                           uint32_t replicas, std::chrono::milliseconds timeout) {
  return ask(sys, manager, timeout, scale_atom::value, stage, replicas);
}

expected<void> pause_stage(caf::actor_system& sys, const manager_actor& manager, const std::string& stage, bool paused,
                           std::chrono::milliseconds timeout) {
  return ask(sys, manager, timeout, pause_atom::value, stage, paused);
}

}  // namespace troupe
