// The manager, changing a running pipeline (manager_impl.hpp): scaling a stage, pausing it,
// reloading its plugin, and draining the replicas that leave.
#include "manager_impl.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace troupe {

void manager_impl::add_replica(size_t stage, uint64_t generation) {
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

expected<size_t> manager_impl::find_stage(const std::string& name) const {
  for (size_t i = 0; i < s_.plan->stages.size(); ++i)
    if (s_.plan->stages[i].spec.name == name) return i;
  return make_error(errc::not_found, "no stage named '" + name + "' in pipeline '" + s_.plan->name + "'");
}

std::string manager_impl::nodes_text(const planned_stage& ps) {
  std::string out = ps.nodes.size() == 1 ? "node " : "nodes ";
  for (size_t i = 0; i < ps.nodes.size(); ++i) out += (i ? ", " : "") + ps.nodes[i];
  return out;
}

caf::error manager_impl::not_running() const {
  if (phase_ == phase::starting)
    return make_error(errc::not_running, "pipeline '" + s_.plan->name + "' is still starting");
  if (phase_ != phase::running || completed_)
    return make_error(errc::not_running, "pipeline '" + s_.plan->name + "' is not running");
  return {};
}

caf::error manager_impl::reload_under_way() const {
  if (!reloads_.under_way()) return {};
  return make_error(errc::busy,
                    "stage '" + s_.plan->stages[reloads_.current().stage].spec.name + "' is being reloaded; try again");
}

expected<void> manager_impl::scale(const std::string& name, uint32_t n) {
  auto found = find_stage(name);
  if (!found) return found.error();
  auto stage = *found;
  auto& ps = s_.plan->stages[stage];
  if (auto e = not_running()) return e;
  if (ps.remote)
    return make_error(errc::refused, "stage '" + name + "' runs on " + nodes_text(ps) + ": scale it there");
  if (ps.is_source())
    return make_error(errc::refused, "stage '" + name + "' is a source: its replicas are fixed while it runs");
  if (auto e = reload_under_way()) return e;
  auto& st = stages_[stage];
  std::vector<replica_view> replicas;
  for (auto i : st.slots)
    replicas.push_back({i, slots_[i].node.empty(), slots_[i].retiring(), slots_[i].quarantined()});
  auto step = scale_step(name, replicas, n);
  if (!step) return step.error();
  if (st.finished) return make_error(errc::not_running, "stage '" + name + "' has finished");
  if (step->from == n) return {};
  spdlog::info("[node={} stage={}] scaling from {} to {} replicas", s_.node, name, step->from, n);
  note_stage(event_kind::scale, name, {},
             "from " + std::to_string(step->from) + " to " + std::to_string(n) + " replicas");
  for (uint32_t k = 0; k < step->add; ++k) add_replica(stage);
  for (auto i : step->retire) {
    slots_[i].role = slot_role::retiring;
    if (slots_[i].running()) begin_drain(i);  // otherwise once it runs
  }
  publish_routes(stage);
  return {};
}

expected<void> manager_impl::pause(const std::string& name, bool on) {
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

void manager_impl::set_paused(size_t stage, bool on, const std::string& why) {
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

caf::result<void> manager_impl::reload(const reload_request& req) {
  auto rp = make_response_promise();
  if (reloads_.under_way()) {
    spdlog::info("[node={} stage={}] reload queued behind the reload of stage '{}'", s_.node, req.stage,
                 s_.plan->stages[reloads_.current().stage].spec.name);
    reloads_.wait(req, rp);
    return rp;
  }
  if (auto e = start_reload(req, rp)) rp.deliver(e);
  return rp;
}

void manager_impl::next_reload() {
  while (auto w = reloads_.next())
    if (auto e = start_reload(w->request, w->promise)) w->promise.deliver(e);
}

caf::error manager_impl::start_reload(const reload_request& req, caf::response_promise& rp) {
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
  auto found_next = next_version(*s_.plan, stage, req);
  if (!found_next) return found_next.error();
  std::shared_ptr<const troupe::plan> next = std::move(*found_next);
  auto& ns = next->stages[stage];
  std::shared_ptr<plugin_library> lib;
  if (ps.mode == exec_mode::embedded) {
    auto l = plugin_library::open(ns.manifest, true);
    if (!l) return in("reload of stage '" + req.stage + "'", l.error());
    lib = *l;
  } else {
    lib = s_.libraries[stage];  // the worker loads the new library itself
  }
  spdlog::info("[node={} stage={}] reloading: {} {} beside {} {}", s_.node, req.stage, ns.manifest.name,
               ns.manifest.version.to_string(), ps.manifest.name, ps.manifest.version.to_string());
  note_stage(event_kind::reload, req.stage, "reloading",
             ns.manifest.name + " " + ns.manifest.version.to_string() + " beside " + ps.manifest.name + " " +
                 ps.manifest.version.to_string());
  reload_coordinator::reload rs;
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
  reloads_.begin(std::move(rs));
  return {};
}

void manager_impl::incoming_running() {
  if (!reloads_.serves([this](size_t i) { return slots_[i].running(); })) return;
  auto rs = reloads_.end();
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
  next_reload();
}

void manager_impl::abort_reload(const std::string& why) {
  if (!reloads_.under_way()) return;
  auto rs = reloads_.end();
  for (auto i : rs.incoming) {
    auto& sl = slots_[i];
    if (sl.actor && !sl.done()) send<caf::message_priority::high>(sl.actor, stop_atom::value);
    enter(i, slot_phase::done);  // it never joined its stage
    release_version(i);
  }
  spdlog::error("[node={} stage={}] reload failed, the old version goes on serving: {}", s_.node,
                s_.plan->stages[rs.stage].spec.name, why);
  note_stage(event_kind::reload, s_.plan->stages[rs.stage].spec.name, "failed",
             "the old version goes on serving: " + why);
  rs.promise.deliver(make_error(errc::start_failed, "start_failed: " + why));
  next_reload();
}

void manager_impl::begin_drain(size_t i) {
  auto& sl = slots_[i];
  std::vector<size_t> upstream;
  for (auto u : s_.plan->stages[sl.stage].upstream)
    for (auto j : stages_[u].slots)
      if (!slots_[j].quarantined()) upstream.push_back(j);
  spdlog::debug("[node={} stage={} instance={}] draining", s_.node, stats(i).stage, sl.replica);
  send<caf::message_priority::high>(sl.actor, drain_atom::value, std::move(upstream));
}

void manager_impl::tell_drained_for(size_t i) {
  for (auto d : s_.plan->stages[slots_[i].stage].downstream)
    for (auto j : stages_[d].slots)
      if (slots_[j].retiring() && slots_[j].actor)
        send<caf::message_priority::high>(slots_[j].actor, drained_atom::value, i);
}

void manager_impl::release_version(size_t i) {
  auto& sl = slots_[i];
  sl.plan.reset();
  sl.library.reset();
  sl.carry = {};
}

void manager_impl::retire(size_t i) {
  auto& sl = slots_[i];
  auto& st = stages_[sl.stage];
  st.slots.erase(std::remove(st.slots.begin(), st.slots.end(), i), st.slots.end());
  release_version(i);
  spdlog::info("[node={} stage={} instance={}] scaled away", s_.node, stats(i).stage, sl.replica);
  note(event_kind::instance, i, "scaled_away");
  publish_routes(sl.stage);
  tell_drained_for(i);
  check_stage_finished(sl.stage);
}

}  // namespace troupe
