#include "instance_impl.hpp"

namespace troupe {

instance_impl::instance_impl(caf::actor_config& cfg, instance_setup s)
    : instance_self_actor::base(cfg),
      s_(std::move(s)),
      stage_(s_.plan->stages[s_.stage]),
      deadline_(stage_.deadline_ms),
      router_(
          s_.plan->window, [this](const receiver_actor& to, frame&& f) { send(to, frame_atom::value, std::move(f)); },
          [this](const receiver_actor& to) { send<caf::message_priority::high>(to, drained_atom::value, s_.slot); }) {
  paused_ = s_.paused;
  s_.stats->paused.store(paused_);
  tag_ = "node=" + s_.node + " stage=" + stage_.spec.name + " instance=" + std::to_string(s_.replica) +
         " gen=" + std::to_string(s_.generation);
  router_.on_batch([this](const receiver_actor& to, std::vector<frame>&& fs) {
    send(to, frames_atom::value, frame_batch{std::move(fs)});
  });
  router_.limit_bytes(s_.plan->window_bytes);
  router_.set_routes(s_.routes);
  router_.add_carry(std::move(s_.carry));
  router_.on_acked([this](const frame& f, uint64_t) {
    if (outstanding_.empty()) return;
    auto it = outstanding_.find({f.stream, f.seq});
    if (it != outstanding_.end() && --it->second == 0) outstanding_.erase(it);
  });
}
void instance_impl::heartbeat() {
  if (state_ == instance_state::running && released_) {  // no worker to ask
    delayed_send(this, health_interval(), heartbeat_atom::value);
    return;
  }
  if (state_ != instance_state::running || !adapter_) return;
  if (busy_ || stop_requested_) {  // a call in progress is watched by its own deadline
    delayed_send(this, health_interval(), heartbeat_atom::value);
    return;
  }
  run_call(call_kind::health, deadline_, [](plugin_adapter& a) { return guarded([&] { return a.health(); }); });
}

void instance_impl::note_use() {
  if (!adapter_) return;
  s_.stats->worker_memory.Set(static_cast<double>(adapter_->memory_bytes()));
  if (double t = adapter_->cpu_throttled_seconds(); t > throttled_seen_) {
    s_.stats->worker_throttled.Increment(t - throttled_seen_);
    throttled_seen_ = t;
  }
  if (double t = adapter_->cpu_seconds(); t > cpu_seen_) {
    s_.stats->worker_cpu.Increment(t - cpu_seen_);
    cpu_seen_ = t;
  }
}

void instance_impl::start() {
  if (stage_.mode == exec_mode::isolated)
    adapter_ = std::make_shared<isolated_adapter>(stage_.manifest, s_.generation, tag_, s_.launcher);
  else
    adapter_ = std::make_shared<embedded_adapter>(s_.library, s_.generation, tag_);
  auto config = stage_.config;
  spdlog::debug("[{}] starting plugin {} {}", tag_, stage_.manifest.name, stage_.manifest.version.to_string());
  // Starting a worker process (exec, loading, limits) is not the plugin's time.
  auto deadline = stage_.mode == exec_mode::isolated ? deadline_ + worker_start_allowance : deadline_;
  run_call(call_kind::start, deadline, [config](plugin_adapter& a) {
    auto r = guarded([&] { return a.create(config); });
    if (r.ok()) {
      r = guarded([&] { return a.start(); });
      if (!r.ok()) r.error = "start failed: " + r.error;
    }
    return r;
  });
}

void instance_impl::stop() {
  if (state_ == instance_state::stopping || state_ == instance_state::stopped) return;
  if (!adapter_) {  // never started
    report(instance_state::stopped);
    quit();
    return;
  }
  report(instance_state::stopping);
  run_call(call_kind::stop, deadline_, [](plugin_adapter& a) {
    auto r = guarded([&] { return a.stop(); });
    a.destroy();
    return r;
  });
}

void instance_impl::on_call(call_kind kind, call_result& r) {
  busy_ = false;
  if (kind == call_kind::release) {
    note_use();
    adapter_.reset();
    released_ = true;
    s_.stats->idle_releases.Increment();
    s_.stats->worker_pid.store(-1);
    s_.stats->worker_memory.Set(0);
    if (!r.ok()) spdlog::warn("[{}] its idle worker did not stop cleanly: {}", tag_, r.error);
    spdlog::info("[{}] idle for {} s: its worker ended (the next frame starts one)", tag_, stage_.spec.idle_release_s);
    pump();
    return;
  }
  if (kind == call_kind::respawn) {
    if (!r.ok()) {
      lose("its worker could not start again after an idle release: " + r.error);
      return;
    }
    released_ = false;
    s_.stats->worker_pid.store(adapter_ ? adapter_->worker_pid() : -1);
    spdlog::debug("[{}] a frame came: its worker started again", tag_);
    pump();
    return;
  }
  if (kind == call_kind::health) {
    s_.stats->healthy.Set(r.ok() ? 1 : 0);
    if (!r.ok()) {
      lose("health check failed: " + (r.error.empty() ? std::string("the plugin says it is not healthy") : r.error));
      return;
    }
    note_use();
    delayed_send(this, health_interval(), heartbeat_atom::value);
    pump();
    return;
  }
  if (kind == call_kind::start) {
    if (!r.ok()) {
      spdlog::error("[{}] start_failed: {}", tag_, r.error);
      report(instance_state::failed, failure_class::start_failed, r.error);
      adapter_.reset();  // destroys the plugin instance if create succeeded
      quit(make_error(errc::start_failed, r.error));
      return;
    }
    s_.stats->worker_pid.store(adapter_ ? adapter_->worker_pid() : -1);
    report(instance_state::started);
    report(instance_state::running);
    s_.stats->healthy.Set(1);
    delayed_send(this, health_interval(), heartbeat_atom::value);
    spdlog::debug("[{}] running", tag_);
    arm_idle();
    pump();
    return;
  }
  note_use();  // stopped: what the worker used to the end
  adapter_.reset();
  if (!r.ok()) {
    spdlog::error("[{}] teardown_failed: {}", tag_, r.error);
    report(instance_state::failed, failure_class::teardown_failed, r.error);
    quit(make_error(errc::teardown_failed, r.error));
    return;
  }
  report(instance_state::stopped);
  quit();
}

void instance_impl::on_overrun(const std::string& why) {
  if (batch_) {
    auto partial = close_batch(*batch_);
    batch_.reset();
    handle_results(partial);
  }
  lose(why, site_ ? site_->input() : std::nullopt);
}

void instance_impl::lose(const std::string& why, std::optional<frame_key> culprit) {
  if (state_ == instance_state::failed) return;
  spdlog::error("[{}] lost: {}", tag_, why);
  // The plugin instance is destroyed with the last reference to the adapter: here, or,
  // if a call never returned, by the stuck job when (if ever) it returns. A worker
  // process is killed now, which also ends a call stuck in it.
  if (adapter_) adapter_->terminate();
  adapter_.reset();
  if (state_ == instance_state::stopping) {
    report(instance_state::failed, failure_class::teardown_failed, why);
    quit(make_error(errc::teardown_failed, why));
    return;
  }
  if (state_ != instance_state::running) {
    report(instance_state::failed, failure_class::start_failed, why);
    quit(make_error(errc::start_failed, why));
    return;
  }
  // What this generation holds is sent again by its senders, to the next generation.
  s_.stats->frames_abandoned.Increment(static_cast<double>(held_));
  held_ = 0;
  s_.stats->queue_depth.Set(0);
  report(instance_state::failed, failure_class::lost, why, router_.take_carry(), culprit);
  quit(make_error(errc::lost, why));
}

void instance_impl::arm_idle() {
  if (stage_.spec.idle_release_s <= 0 || stage_.mode != exec_mode::isolated || stage_.is_source()) return;
  auto wait =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double>(stage_.spec.idle_release_s));
  delayed_send(this, wait, idle_atom::value, ++idle_check_);
}

void instance_impl::release_if_idle() {
  // Only with nothing to do and every output taken (outputs may live in the worker's region).
  if (state_ != instance_state::running || busy_ || released_ || !adapter_ || stop_requested_ || !inbox_.empty() ||
      !router_.idle() || !deferred_.empty())
    return;
  run_call(call_kind::release, deadline_, [](plugin_adapter& a) {
    auto r = guarded([&] { return a.stop(); });
    a.destroy();
    return r;
  });
}

void instance_impl::respawn() {
  adapter_ = std::make_shared<isolated_adapter>(stage_.manifest, s_.generation, tag_, s_.launcher);
  auto config = stage_.config;
  run_call(call_kind::respawn, deadline_ + worker_start_allowance, [config](plugin_adapter& a) {
    auto r = guarded([&] { return a.create(config); });
    if (r.ok()) {
      r = guarded([&] { return a.start(); });
      if (!r.ok()) r.error = "start failed: " + r.error;
    }
    return r;
  });
}

instance_actor spawn_instance(caf::actor_system& sys, instance_setup setup) {
  return sys.spawn<instance_impl>(std::move(setup));
}

}  // namespace troupe
