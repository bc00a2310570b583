#include "manager_impl.hpp"

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

manager_impl::manager_impl(caf::actor_config& cfg, manager_setup s)
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
void manager_impl::note(event_kind kind, size_t i, std::string state, std::string detail, std::string failure) {
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

void manager_impl::note_stage(event_kind kind, const std::string& stage, std::string state, std::string detail) {
  if (!s_.events) return;
  event e;
  e.stage = stage;
  record(kind, std::move(e), std::move(state), std::move(detail));
}

void manager_impl::record(event_kind kind, event e, std::string state, std::string detail) {
  e.kind = kind;
  e.node = s_.node;
  e.pipeline = s_.plan->name;
  e.state = std::move(state);
  e.detail = std::move(detail);
  s_.events->add(std::move(e));
}

void manager_impl::enter(size_t i, slot_phase next) {
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

edge_route manager_impl::edge_to(size_t d, bool here_only) const {
  edge_route e;
  e.stage = d;
  e.policy = s_.plan->stages[d].spec.routing;
  auto receivers = std::make_shared<route_receivers>();
  receivers->reserve(stages_[d].slots.size());
  for (auto i : stages_[d].slots) {
    auto& sl = slots_[i];
    if (here_only && !sl.node.empty()) continue;
    receivers->push_back({sl.live() ? receiver_actor{sl.actor} : receiver_actor{}, sl.retiring()});
  }
  if (here_only) {
    e.receivers = std::move(receivers);
    return e;
  }
  if (receivers_sent_.size() < stages_.size()) receivers_sent_.resize(stages_.size());
  auto& last = receivers_sent_[d];
  auto same = [](const route_receiver& a, const route_receiver& b) {
    return a.handle == b.handle && a.draining == b.draining;
  };
  if (!last || !std::equal(last->begin(), last->end(), receivers->begin(), receivers->end(), same))
    last = std::move(receivers);
  e.receivers = last;
  return e;
}

route_table manager_impl::routes_for(size_t stage) const {
  route_table rt;
  for (auto d : s_.plan->stages[stage].downstream) rt.edges.push_back(edge_to(d));
  return rt;
}

void manager_impl::end_sources() {
  ending_ = true;
  for (size_t k = 0; k < stages_.size(); ++k)  // what the sources made must flow through
    set_paused(k, false, "resumed to drain");
  spdlog::info("pipeline '{}': the sources end their streams; draining", s_.plan->name);
  note(event_kind::pipeline, npos, "draining");
  for (size_t i = 0; i < slots_.size(); ++i)
    if (stage_of(i).is_source() && slots_[i].actor) send<caf::message_priority::high>(slots_[i].actor, end_atom::value);
}

void manager_impl::spawn_slot(size_t i) {
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
    sl.actor = s_.spawn_remote_stage ? s_.spawn_remote_stage(system(), std::move(rs))
                                     : spawn_remote_stage(system(), std::move(rs));
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
    sl.actor = s_.spawn_instance ? s_.spawn_instance(system(), std::move(is)) : spawn_instance(system(), std::move(is));
  }
  enter(i, slot_phase::spawning);
  // Monitored for its exit, linked so that it does not outlive a manager that is killed.
  monitor(sl.actor);
  link_to(sl.actor);
  send<caf::message_priority::high>(sl.actor, start_atom::value);
}

void manager_impl::start_next_stage() {
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

bool manager_impl::stage_running(size_t stage) const {
  for (auto i : stages_[stage].slots)
    if (!slots_[i].running() && !slots_[i].quarantined()) return false;
  return true;
}

void manager_impl::publish_routes(size_t stage) {
  if (auto it = ingress_.find(stage); it != ingress_.end()) {
    route_table rt;
    rt.edges.push_back(edge_to(stage, true));
    send<caf::message_priority::high>(it->second, routes_atom::value, std::move(rt));
  }
  for (auto u : s_.plan->stages[stage].upstream) {
    auto routes = routes_for(u);  // one table (and list of receivers) for all of u's replicas
    for (auto i : stages_[u].slots)
      if (slots_[i].actor) send<caf::message_priority::high>(slots_[i].actor, routes_atom::value, routes);
  }
}

void manager_impl::on_report(instance_report& r) {
  if (!current(r.slot, r.generation)) return;
  auto& sl = slots_[r.slot];
  auto& st = stats(r.slot);
  switch (r.state) {
    case instance_state::running:
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

void manager_impl::on_drained(const instance_ref& r) {
  if (!current(r.slot, r.generation)) return;
  auto& sl = slots_[r.slot];
  if (sl.retiring() && sl.running()) {
    enter(r.slot, slot_phase::stopping);
    send<caf::message_priority::high>(sl.actor, stop_atom::value);
  }
}

void manager_impl::on_down(const caf::down_msg& dm) {
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

void manager_impl::count_loss(size_t i, const frame_key& k, const std::string& why) {
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

void manager_impl::on_failure(size_t i, const std::string& why) {
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
       "in " + std::to_string(d.delay.count()) + " ms as generation " + std::to_string(sl.generation + 1) + ": " + why);
  delayed_send(this, d.delay, restart_atom::value, i, sl.generation);
}

void manager_impl::restart(size_t i, uint64_t failed_generation) {
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

void manager_impl::stopped_for_good(size_t i) {
  enter(i, slot_phase::done);
  if (slots_[i].retiring() && phase_ == phase::running) {
    retire(i);
    return;
  }
  continue_stop();
}

void manager_impl::check_viable(size_t stage) {
  for (auto i : stages_[stage].slots)
    if (!slots_[i].quarantined()) return;
  if (stages_[stage].slots.empty()) return;
  auto& s = s_.plan->stages[stage];
  auto why = "stage '" + s.spec.name +
             "' has no running instance left (quarantined: " + stats(stages_[stage].slots.front()).last_error() + ")";
  complete(false, why);
}

void manager_impl::on_finished(size_t i) {
  auto& sl = slots_[i];
  sl.finished = true;
  stats(i).finished.store(true);
  if (sl.node.empty()) check_part_finished(sl.stage);
  check_stage_finished(sl.stage);
}

void manager_impl::check_stage_finished(size_t s) {
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

void manager_impl::complete(bool ok, std::string reason) {
  if (completed_) return;
  completed_ = true;
  if (ok)
    spdlog::info("pipeline '{}' finished", s_.plan->name);
  else
    spdlog::error("pipeline '{}' failed: {}", s_.plan->name, reason);
  note(event_kind::pipeline, npos, ok ? "finished" : "failed", reason);
  send(s_.listener, completed_atom::value, pipeline_outcome{ok, std::move(reason)});
}

void manager_impl::begin_stop() {
  if (phase_ == phase::stopping || phase_ == phase::stopped) return;
  for (auto& w : reloads_.take_waiting())
    w.promise.deliver(make_error(errc::not_running, "pipeline '" + s_.plan->name + "' is stopping: stage '" +
                                                        w.request.stage + "' is not reloaded"));
  abort_reload("the pipeline is stopping");
  phase_ = phase::stopping;
  next_stop_ = 0;
  stop_next_stage();
}

void manager_impl::stop_next_stage() {
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
