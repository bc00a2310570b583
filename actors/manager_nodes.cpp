// The manager, for a pipeline placed across nodes (manager_impl.hpp): other nodes' shares of
// stages, the ingresses of stages fed from other nodes, placement updates, and control between
// the managers.
#include "manager_impl.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace troupe {

std::vector<size_t> manager_impl::add_remote_slots(size_t stage, const std::string& node, uint64_t generation) {
  auto& ps = s_.plan->stages[stage];
  if (!hidden_) hidden_ = std::make_unique<metrics>();
  std::vector<size_t> added;
  for (uint32_t r = 0; r < ps.spec.replicas; ++r) {
    stats_.push_back(std::make_shared<slot_stats>(*hidden_, s_.plan->name, ps.spec.name, ps.manifest.name, r, ps.mode));
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

std::vector<size_t> manager_impl::remote_upstream_slots(size_t stage) const {
  std::vector<size_t> out;
  for (auto u : s_.plan->stages[stage].upstream)
    for (auto i : stages_[u].slots)
      if (!slots_[i].node.empty()) out.push_back(i);
  return out;
}

void manager_impl::start_ingresses() {
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

std::set<std::string> manager_impl::senders_of(size_t stage) const {
  std::set<std::string> out;
  for (auto u : s_.plan->stages[stage].upstream)
    for (auto& n : s_.plan->stages[u].elsewhere) out.insert(n);
  return out;
}

ingress_fence manager_impl::fence_of(size_t stage) const {
  ingress_fence f;
  f.senders = senders_of(stage);
  f.upstream_slots = remote_upstream_slots(stage);
  f.epochs = s_.fences;
  return f;
}

void manager_impl::publish_epoch() {
  if (!s_.plane) return;
  s_.plane->set_epoch(s_.run, s_.epoch);
  for (auto& [node, epoch] : s_.fences) s_.plane->fence_node(node, epoch);
}

void manager_impl::start_ingress(size_t stage) {
  if (!s_.plane) return;  // no data plane: nothing comes from other nodes
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

void manager_impl::adopt(placement_update& u) {
  if (phase_ == phase::stopping || phase_ == phase::stopped || completed_) return;
  auto old = s_.plan;
  auto& next = *u.plan;
  s_.plan = u.plan;
  s_.data_address = u.data_address;
  s_.epoch = std::max(s_.epoch, u.epoch);
  for (auto& [node, epoch] : u.fences) s_.fences[node] = std::max(s_.fences[node], epoch);
  publish_epoch();
  participants_ = participants(next);
  for (auto& c : share_changes(*old, next, u.moves)) {
    const size_t i = c.stage;
    auto& n = next.stages[i];
    auto& st = stages_[i];
    uint64_t generation = c.generation;
    // Shares of nodes that no longer run it: what they did not acknowledge goes to the rest.
    for (auto& gone : c.gone) {
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
    }
    // Nodes that run it now.
    for (auto& added : c.added)
      for (auto j : add_remote_slots(i, added, generation)) spawn_slot(j);
    if (c.arrives) {  // it runs here now
      s_.libraries[i] = u.libraries[i];
      if (st.finished) {  // it finished where it ran: the others hear it from here
        tell_participants(control_kind::finished, n.spec.name);
      } else {
        spdlog::warn("[node={}] stage '{}' of pipeline '{}' moved here: starting {} instance{}", s_.node, n.spec.name,
                     next.name, n.spec.replicas, n.spec.replicas == 1 ? "" : "s");
        for (uint32_t r = 0; r < n.spec.replicas; ++r) add_replica(i, generation);
      }
    } else if (c.leaves) {
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
    }
    publish_routes(i);
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

void manager_impl::tell_participants(control_kind what, const std::string& stage) {
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

void manager_impl::on_control(const link_control& c) {
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

void manager_impl::check_part_finished(size_t s) {
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

}  // namespace troupe
