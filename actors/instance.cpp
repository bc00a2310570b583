#include "instance.hpp"

#include "handover.hpp"

#include "dedupe.hpp"
#include "embedded_adapter.hpp"
#include "isolated_adapter.hpp"
#include "ring.hpp"
#include "router.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <span>
#include <tuple>

namespace troupe {

namespace {

constexpr size_t max_batch = 256;
constexpr size_t max_source_outputs = 16;
constexpr auto source_idle_min = std::chrono::microseconds(500);
constexpr auto source_idle_max = std::chrono::microseconds(16000);

/// What one executor job did with a batch of inputs (or one source turn). The job adds
/// each input's results as it completes; whoever closes the batch first takes them: the
/// job when it returns, or the actor when the job's call passes its deadline. Results a
/// job produces after that are stale.
struct batch_state {
  std::mutex mutex;
  std::atomic<bool> cancel{false};  // stop requested: leave the remaining inputs undone
  bool closed = false;
  size_t processed = 0;                                  // inputs whose call returned (incl. errors), in order
  size_t completed = 0, filtered = 0;                    // of those, with and without outputs (errors apart)
  std::vector<frame> outputs;                            // all outputs, in input order
  std::vector<std::pair<uint64_t, std::string>> errors;  // (seq, message) per failed input
  call_result fatal;                                     // set if a call returned TROUPE_FATAL
  std::optional<frame_key> fatal_input;                  // the input of that call
  bool end = false;                                      // a source finished
};

/// What the actor takes out of a closed batch.
struct batch_result {
  size_t processed = 0;
  size_t completed = 0, filtered = 0;
  std::vector<frame> outputs;
  std::vector<std::pair<uint64_t, std::string>> errors;
  call_result fatal;
  std::optional<frame_key> fatal_input;
  bool end = false;
};

using batch_ptr = std::shared_ptr<batch_state>;

/// Closes the batch and takes its results; nothing if it was closed already.
batch_result close_batch(batch_state& b) {
  std::lock_guard<std::mutex> lock(b.mutex);
  batch_result r;
  if (b.closed) return r;
  b.closed = true;
  r.processed = b.processed;
  r.completed = b.completed;
  r.filtered = b.filtered;
  r.outputs = std::move(b.outputs);
  r.errors = std::move(b.errors);
  r.fatal = std::move(b.fatal);
  r.fatal_input = b.fatal_input;
  r.end = b.end;
  return r;
}

/// Adds one input's results (and its error, if it failed) unless the batch was closed under
/// the job; false then. Each input's results are in before the next call begins: what a call
/// that overruns leaves behind is exactly the inputs from it on.
bool add_to_batch(batch_state& b, std::vector<frame>& outs, bool ok, uint64_t seq, std::string* error) {
  std::lock_guard<std::mutex> lock(b.mutex);
  if (b.closed) return false;
  ++b.processed;
  if (ok) ++(outs.empty() ? b.filtered : b.completed);
  if (error) b.errors.emplace_back(seq, std::move(*error));
  for (auto& f : outs) b.outputs.push_back(std::move(f));
  outs.clear();
  return true;
}

/// The input a job is working on, for the overrun message and the culprit of a loss.
struct call_site {
  std::atomic<bool> has_input{false};
  std::atomic<uint64_t> stream{0}, seq{0};
  std::atomic<uint32_t> part{0};
  std::optional<frame_key> input() const {
    if (!has_input.load()) return std::nullopt;
    return frame_key{stream.load(), seq.load(), part.load()};
  }
};

}  // namespace
}  // namespace troupe

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::batch_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::call_result)

namespace troupe {
namespace {

using call_kind_atom = caf::atom_constant<caf::atom("call")>;
using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
using idle_atom = caf::atom_constant<caf::atom("idle")>;
// release and respawn: an isolated worker ended after idle_release_s, and started again.
enum class call_kind : uint8_t { start, stop, health, release, respawn };

// What an instance takes besides its protocol: what it sends itself (timers) and what its
// executor jobs send it (results, overruns). Nobody else holds this handle.
using instance_self_actor =
    instance_actor::extend<caf::reacts_to<batch_atom, uint64_t, batch_ptr>, caf::reacts_to<tick_atom>,
                           caf::reacts_to<heartbeat_atom>, caf::reacts_to<idle_atom, uint64_t>,
                           caf::reacts_to<lost_atom, uint64_t, std::string>,
                           caf::reacts_to<call_kind_atom, uint64_t, call_kind, call_result>>;

class instance_impl : public instance_self_actor::base {
 public:
  instance_impl(caf::actor_config& cfg, instance_setup s)
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
    router_.on_acked([this](const frame& f) {
      if (outstanding_.empty()) return;
      auto it = outstanding_.find({f.stream, f.seq});
      if (it != outstanding_.end() && --it->second == 0) outstanding_.erase(it);
    });
  }

  const char* name() const override { return "troupe.instance"; }

  // Handles to the manager, to receivers (routes) and to senders (inbox) would otherwise
  // keep each other's actors alive after they all quit.
  void on_exit() override {
    inbox_.clear();
    deferred_.clear();
    router_.clear();
    s_.manager = nullptr;
    s_.routes = {};
    s_.carry = {};
    batch_.reset();
    site_.reset();
    adapter_.reset();
  }

  behavior_type make_behavior() override {
    return {
        [this](start_atom) { start(); },
        [this](routes_atom, const route_table& rt) {
          if (auto n = router_.set_routes(rt)) s_.stats->replayed.Increment(static_cast<double>(n));
          pump();
        },
        [this](frame_atom, frame& f) {
          take({&f, 1});
        },
        [this](frames_atom, frame_batch& b) { take(b.frames); },
        [this](ack_atom, uint32_t n) {
          router_.on_ack(caf::actor_cast<caf::actor_addr>(current_sender()), n);
          if (!deferred_.empty()) release_deferred();
          s_.stats->in_flight.Set(static_cast<double>(router_.in_flight()));
          pump();
        },
        [this](skip_atom, const frame_key& k) {
          s_.dead.insert(k);
          for (auto& in : inbox_)
            if (in.kind == input_kind::fresh && !in.submitted && in.key == k) in.kind = input_kind::dead;
          pump();
        },
        [this](upstream_done_atom) {
          upstream_done_ = true;
          pump();
        },
        [this](pause_atom, bool on) {
          paused_ = on;
          s_.stats->paused.store(on);
          pump();
        },
        [this](end_atom) {
          if (!stage_.is_source() || source_ended_) return;
          source_ended_ = true;  // the turn in progress, if any, is the last
          spdlog::debug("[{}] told to end its streams", tag_);
          pump();
        },
        [this](drain_atom, std::vector<size_t>& upstream) {
          draining_ = true;
          drain_from_ = std::set<size_t>(upstream.begin(), upstream.end());
          pump();
        },
        [this](drained_atom, size_t upstream_slot) {
          drained_by_.insert(upstream_slot);
          pump();
        },
        [this](stop_atom) {
          stop_requested_ = true;
          if (batch_) batch_->cancel.store(true);  // a stop waits for one call, not a batch
          if (!busy_) stop();
        },
        [this](batch_atom, uint64_t call, batch_ptr& b) {
          if (call == call_id_) on_batch(close_batch(*b));
        },
        [this](tick_atom) {
          tick_pending_ = false;
          pump();
        },
        [this](heartbeat_atom) { heartbeat(); },
        [this](idle_atom, uint64_t check) {
          if (check == idle_check_) release_if_idle();
        },
        [this](lost_atom, uint64_t call, const std::string& why) {
          if (call == call_id_ && busy_) on_overrun(why);
        },
        [this](call_kind_atom, uint64_t call, call_kind kind, call_result& r) {
          if (call == call_id_) on_call(kind, r);
        },
    };
  }

 private:
  enum class input_kind : uint8_t { fresh, duplicate, dead };
  static constexpr std::chrono::milliseconds worker_start_allowance{5000};
  // An idle instance asks its plugin for a health answer: a worker this often (one that does
  // not answer within the stage's deadline, stopped or wedged, is lost), a plugin in the
  // node's process less often (it cannot wedge unseen: the watchdog holds its calls to the
  // deadline). An unhealthy answer loses the instance: it is restarted.
  static constexpr std::chrono::milliseconds heartbeat_interval{1000};
  static constexpr std::chrono::milliseconds embedded_health_interval{5000};
  std::chrono::milliseconds health_interval() const {
    return stage_.mode == exec_mode::isolated ? heartbeat_interval : embedded_health_interval;
  }

  // The inputs of one message, in order: a frame taken before, or given up on, is
  // acknowledged in its turn (acks go in arrival order) but not processed. The books count
  // them once per message.
  void take(std::span<frame> fs) {
    auto sender = current_sender();
    uint64_t fresh = 0, bytes = 0, duplicates = 0;
    for (auto& f : fs) {
      auto kind = input_kind::fresh;
      frame_key key{f.stream, f.seq, f.part};
      if (!dedupe_.admit(f.stream, f.seq, f.part)) {
        kind = input_kind::duplicate;
        ++duplicates;
      } else {
        if (!s_.dead.empty() && s_.dead.count(key)) kind = input_kind::dead;
        ++fresh;
        bytes += f.size;
        ++held_;
      }
      bool custody = s_.end_to_end || f.route_tag != 0;  // see instance_setup::end_to_end
      custody_ = custody_ || custody;
      inbox_.push_back({std::move(f), key, sender, kind, custody});
    }
    if (fresh > 0) s_.stats->frames_in.Increment(static_cast<double>(fresh));
    if (bytes > 0) s_.stats->bytes_in.Increment(static_cast<double>(bytes));
    if (duplicates > 0) s_.stats->duplicates.Increment(static_cast<double>(duplicates));
    s_.stats->queue_depth.Set(static_cast<double>(held_));
    pump();
  }

  void heartbeat() {
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

  struct inbound {
    frame f;  // moved into the batch that processes it
    frame_key key;
    caf::strong_actor_ptr sender;
    input_kind kind = input_kind::fresh;
    bool custody = false;    // acknowledged only once its outputs are (see acknowledge)
    bool submitted = false;  // in a batch: f is gone, the key stays
  };

  void report(instance_state st, failure_class fc = failure_class::none, std::string error = {}, bool finished = false,
              carried_frames carry = {}, std::optional<frame_key> culprit = {}) {
    state_ = st;
    s_.stats->set_state(st);
    if (fc != failure_class::none) {
      s_.stats->failure.store(fc);
      s_.stats->last_failure.store(fc);
      s_.stats->set_error(error);
    }
    instance_report r{.slot = s_.slot,
                      .generation = s_.generation,
                      .state = st,
                      .failure = fc,
                      .error = std::move(error),
                      .finished = finished,
                      .carry = std::move(carry),
                      .culprit = culprit};
    send<caf::message_priority::high>(s_.manager, report_atom::value, std::move(r));
  }

  // Runs fn(worker, site, call id, self) on the executor; a call past the stage deadline
  // comes back as (lost_atom, call id, why).
  template <class F>
  void run_on_executor(F fn) {
    busy_ = true;
    auto call = ++call_id_;
    instance_self_actor self = this;
    auto site = std::make_shared<call_site>();
    site_ = site;
    auto deadline = deadline_;
    s_.executor->submit([self, call, site, deadline, fn = std::move(fn)](executor::worker& w) mutable {
      w.on_overrun([self, call, site, deadline] {
        auto why = "call passed its deadline of " + std::to_string(deadline.count()) + " ms";
        if (auto k = site->input())
          why += " (stream " + std::to_string(k->stream) + " seq " + std::to_string(k->seq) + ")";
        caf::anon_send<caf::message_priority::high>(self, lost_atom::value, call, std::move(why));
      });
      fn(w, *site, call, self);
    });
  }

  // Runs one lifecycle call, work(adapter) -> call_result, on the executor under deadline;
  // its result comes back as (call_kind_atom).
  template <class Work>
  void run_call(call_kind kind, std::chrono::milliseconds deadline, Work work) {
    run_on_executor([adapter = adapter_, kind, deadline, work = std::move(work)](
                        executor::worker& w, call_site&, uint64_t call, const instance_self_actor& self) mutable {
      call_result r;
      {
        executor::call_scope scope(w, deadline);
        r = work(*adapter);
      }
      handover::made();  // what the call made goes to the actor, and on to the next job
      caf::anon_send<caf::message_priority::high>(self, call_kind_atom::value, call, kind, std::move(r));
    });
  }

  template <class F>
  static call_result guarded(F&& f) {
    try {
      return f();
    } catch (const std::exception& e) {
      return {TROUPE_FATAL, std::string("exception crossed the plugin ABI: ") + e.what()};
    } catch (...) {
      return {TROUPE_FATAL, "exception of unknown type crossed the plugin ABI"};
    }
  }

  // The worker's use of memory and CPU, as its adapter last sampled it, into the metrics.
  void note_use() {
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

  void start() {
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

  void stop() {
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

  void on_call(call_kind kind, call_result& r) {
    busy_ = false;
    if (kind == call_kind::release) {
      note_use();
      adapter_.reset();
      released_ = true;
      s_.stats->idle_releases.Increment();
      s_.stats->worker_pid.store(-1);
      s_.stats->worker_memory.Set(0);
      if (!r.ok()) spdlog::warn("[{}] its idle worker did not stop cleanly: {}", tag_, r.error);
      spdlog::info("[{}] idle for {} s: its worker ended (the next frame starts one)", tag_,
                   stage_.spec.idle_release_s);
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

  // The current call passed its deadline: keep what the batch completed, then give up the
  // instance.
  void on_overrun(const std::string& why) {
    if (batch_) {
      auto partial = close_batch(*batch_);
      batch_.reset();
      handle_results(partial);
    }
    lose(why, site_ ? site_->input() : std::nullopt);
  }

  // The plugin is gone: report with the outputs not yet delivered, then quit.
  void lose(const std::string& why, std::optional<frame_key> culprit = std::nullopt) {
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
    report(instance_state::failed, failure_class::lost, why, false, router_.take_carry(), culprit);
    quit(make_error(errc::lost, why));
  }

  void pump() {
    if (state_ != instance_state::running || busy_) return;
    if (stop_requested_) {
      stop();
      return;
    }
    if (router_.blocked() || paused_) return;
    if (stage_.is_source()) {
      if (!source_ended_ && !tick_pending_) submit_source_turn();
    } else {
      acknowledge_skipped();
      if (!inbox_.empty()) {
        if (released_)
          respawn();
        else
          submit_batch();
      }
    }
    if (!busy_) {
      check_finished();
      check_drained();
    }
  }

  // Scaled away: reports once no input can come (every upstream instance said so), all
  // input was processed and every output acknowledged.
  void check_drained() {
    if (!draining_ || drained_reported_ || !inbox_.empty() || !router_.idle() || !deferred_.empty()) return;
    for (auto u : drain_from_)
      if (!drained_by_.count(u)) return;
    drained_reported_ = true;
    spdlog::debug("[{}] drained", tag_);
    instance_report r;
    r.slot = s_.slot;
    r.generation = s_.generation;
    r.state = instance_state::running;
    r.drained = true;
    send<caf::message_priority::high>(s_.manager, report_atom::value, std::move(r));
  }

  void check_finished() {
    if (finished_reported_ || !router_.idle() || !deferred_.empty()) return;
    bool done = stage_.is_source() ? source_ended_ : (upstream_done_ && inbox_.empty());
    if (!done) return;
    finished_reported_ = true;
    report(instance_state::running, failure_class::none, {}, true);
  }

  // Skipped inputs (duplicates, dead letters) at the head of the inbox are acknowledged
  // now, unprocessed.
  void acknowledge_skipped() {
    size_t n = 0, dead = 0;
    for (; n < inbox_.size() && inbox_[n].kind != input_kind::fresh; ++n)
      dead += inbox_[n].kind == input_kind::dead ? 1 : 0;
    if (dead > 0) s_.stats->dead_letters.Increment(static_cast<double>(dead));
    if (n > 0) acknowledge(n);
  }

  // A batch is the run of fresh frames at the head of the inbox (a skipped one ends it, so
  // that acknowledgements stay in arrival order).
  void submit_batch() {
    std::vector<frame> frames;
    frames.reserve(std::min(inbox_.size(), max_batch));
    for (size_t i = 0; i < inbox_.size() && frames.size() < max_batch && inbox_[i].kind == input_kind::fresh; ++i) {
      frames.push_back(std::move(inbox_[i].f));  // the inbox keeps key and sender until acked
      inbox_[i].submitted = true;
    }
    auto outputs = frames.size();  // one each, commonly
    submit_job(
        [frames = std::move(frames)](plugin_adapter& adapter, batch_state& b, executor::worker& w, call_site& site,
                                     std::chrono::milliseconds deadline, slot_stats& stats) {
          batch_job sink(frames, b, w, site, deadline, stats);
          auto r = guarded([&] {
            adapter.process_batch(frames, sink);
            return call_result{};
          });
          if (!r.ok()) sink.fail(std::move(r));
          sink.timings.flush_to(stats.processing);
          return sink.stale;
        },
        outputs);
  }

  // Takes the results of one batch as the adapter reports them, into the batch state.
  struct batch_job final : batch_sink {
    batch_job(const std::vector<frame>& frames, batch_state& b, executor::worker& w, call_site& site,
              std::chrono::milliseconds deadline, slot_stats& stats)
        : frames(frames), b(b), w(w), site(site), deadline(deadline), stats(stats) {}

    void begin(size_t i, time_point now) override {
      current = i;
      auto& f = frames[i];
      site.stream.store(f.stream, std::memory_order_relaxed);
      site.seq.store(f.seq, std::memory_order_relaxed);
      site.part.store(f.part, std::memory_order_relaxed);
      site.has_input.store(true, std::memory_order_relaxed);
      scope.reset();
      scope.emplace(w, deadline, now);  // releases the site's stores to the watchdog
    }

    bool done(size_t i, call_result& r, std::vector<frame>& outs, std::chrono::nanoseconds took) override {
      current = i;
      scope.reset();
      timings.add(std::chrono::duration<double>(took).count());
      if (r.status == TROUPE_FATAL) {
        fail(std::move(r));
        stale += outs.size();
        return false;
      }
      bool ok = r.status == TROUPE_OK;
      if (!add_to_batch(b, outs, ok, frames[i].seq, ok ? nullptr : &r.error)) {
        stale += outs.size();
        return false;
      }
      return !b.cancel.load(std::memory_order_relaxed);
    }

    // The call on input `current` failed fatally: that input is the culprit.
    void fail(call_result r) {
      scope.reset();
      std::lock_guard<std::mutex> lock(b.mutex);
      if (b.closed) return;
      auto& f = frames[current];
      b.fatal = std::move(r);
      b.fatal_input = frame_key{f.stream, f.seq, f.part};
    }

    const std::vector<frame>& frames;
    batch_state& b;
    executor::worker& w;
    call_site& site;
    std::chrono::milliseconds deadline;
    slot_stats& stats;
    std::optional<executor::call_scope> scope;
    call_timings timings;  // added to the histogram when the job ends (not if it hangs)
    size_t current = 0;
    size_t stale = 0;  // outputs made after the batch was closed under the job
  };

  void submit_source_turn() {
    submit_job([](plugin_adapter& adapter, batch_state& b, executor::worker& w, call_site&,
                  std::chrono::milliseconds deadline, slot_stats&) {
      std::vector<frame> outs;
      size_t emitted = 0;
      while (emitted < max_source_outputs && !b.cancel.load(std::memory_order_relaxed)) {
        call_result cr;
        {
          executor::call_scope scope(w, deadline);
          cr = guarded([&] { return adapter.process(nullptr, outs); });
        }
        auto n = outs.size();
        std::lock_guard<std::mutex> lock(b.mutex);
        if (b.closed) return n;
        if (cr.status == TROUPE_END) b.end = true;
        if (cr.status == TROUPE_FATAL) b.fatal = std::move(cr);
        if (cr.status == TROUPE_ERROR) b.errors.emplace_back(0, std::move(cr.error));
        for (auto& f : outs) b.outputs.push_back(std::move(f));
        outs.clear();
        emitted += n;
        if (b.end || b.fatal.status == TROUPE_FATAL || n == 0) break;  // n == 0: nothing due yet
      }
      return size_t{0};
    });
  }

  // Runs work(adapter, batch, ...) on the executor. Outputs the work made after the batch
  // was closed under it (work returns their count) are stale: their generation was given
  // up. They are dropped here, counted, before anyone sees them.
  template <class Work>
  void submit_job(Work work, size_t outputs = 0) {
    batch_ = std::make_shared<batch_state>();
    batch_->outputs.reserve(outputs);
    run_on_executor([adapter = adapter_, b = batch_, stats = s_.stats, deadline = deadline_, work = std::move(work)](
                        executor::worker& w, call_site& site, uint64_t call, const instance_self_actor& self) mutable {
      size_t stale = work(*adapter, *b, w, site, deadline, *stats);
      bool closed;
      {
        std::lock_guard<std::mutex> lock(b->mutex);
        closed = b->closed;
      }
      if (closed) {
        if (stale > 0) {
          stats->stale_dropped.Increment(static_cast<double>(stale));
          spdlog::debug("dropped {} stale outputs of a superseded generation", stale);
        }
        return;
      }
      handover::made();
      caf::anon_send<caf::message_priority::high>(self, batch_atom::value, call, std::move(b));
    });
  }

  void on_batch(batch_result r) {
    busy_ = false;
    batch_.reset();
    if (state_ != instance_state::running) return;
    const bool made_outputs = !r.outputs.empty();  // handle_results hands them on
    handle_results(r);
    note_use();
    if (r.fatal.status == TROUPE_FATAL) {
      lose(r.fatal.error, r.fatal_input);
      return;
    }
    if (r.end) {
      source_ended_ = true;
      spdlog::debug("[{}] source finished", tag_);
    } else if (stage_.is_source() && !made_outputs) {
      // Nothing due yet: back off a little before asking again.
      s_.stats->source_waits.Increment();
      idle_backoff_ = std::min(source_idle_max, idle_backoff_ * 2);
      tick_pending_ = true;
      delayed_send(this, idle_backoff_, tick_atom::value);
      return;
    }
    if (made_outputs) idle_backoff_ = source_idle_min / 2;
    arm_idle();
    pump();
  }

  // With idle_release_s, an isolated worker that gets no input for that long ends; the next
  // frame starts one again (scale to zero). Each batch starts the wait anew.
  void arm_idle() {
    if (stage_.spec.idle_release_s <= 0 || stage_.mode != exec_mode::isolated || stage_.is_source()) return;
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::duration<double>(stage_.spec.idle_release_s));
    delayed_send(this, wait, idle_atom::value, ++idle_check_);
  }

  void release_if_idle() {
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

  void respawn() {
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

  // Counts a batch's results, hands its outputs to the router and acknowledges its inputs.
  void handle_results(batch_result& r) {
    auto& st = *s_.stats;
    if (r.completed > 0) st.frames_completed.Increment(static_cast<double>(r.completed));
    if (r.filtered > 0) st.frames_filtered.Increment(static_cast<double>(r.filtered));
    if (!r.errors.empty()) {
      st.errors.Increment(static_cast<double>(r.errors.size()));
      for (auto& [seq, msg] : r.errors) spdlog::warn("[{}] frame seq {} failed: {}", tag_, seq, msg);
    }
    uint64_t bytes_out = 0;
    for (auto& f : r.outputs) bytes_out += f.size;
    st.frames_out.Increment(static_cast<double>(r.outputs.size()));
    st.bytes_out.Increment(static_cast<double>(bytes_out));
    if (custody_)  // outputs of inputs from another node: counted until acknowledged
      for (auto& f : r.outputs) outstanding_[{f.stream, f.seq}] += router_.edge_count();
    router_.route_all(std::move(r.outputs));
    r.outputs.clear();
    s_.stats->in_flight.Set(static_cast<double>(router_.in_flight()));
    // The input of a fatal call is not in `processed`: it stays unacknowledged and is sent
    // again to the next generation.
    if (!stage_.is_source()) acknowledge(r.processed);
  }

  // Acknowledges the first n inputs to their senders, in arrival order per sender. An input
  // from another node is acknowledged only once its outputs are: while they are not, the node
  // it came from keeps it, so that losing this node loses no frame (the sender's node replays
  // it elsewhere; receivers drop what they had).
  void acknowledge(size_t n) {
    size_t i = 0;
    while (i < n && !inbox_.empty()) {
      auto sender = inbox_.front().sender;
      uint32_t count = 0;
      while (i < n && !inbox_.empty() && inbox_.front().sender == sender) {
        auto& in = inbox_.front();
        if (in.kind != input_kind::duplicate) --held_;
        if (in.custody)
          deferred_.push_back({in.sender, {in.key.stream, in.key.seq}});
        else
          ++count;
        inbox_.pop_front();
        ++i;
      }
      if (sender && count > 0)
        send<caf::message_priority::high>(caf::actor_cast<sender_actor>(sender), ack_atom::value, count);
    }
    s_.stats->queue_depth.Set(static_cast<double>(held_));
    if (!deferred_.empty()) release_deferred();
  }

  // Acknowledges the inputs at the front of deferred_ whose outputs are all acknowledged.
  void release_deferred() {
    while (!deferred_.empty()) {
      auto sender = deferred_.front().sender;
      uint32_t count = 0;
      while (!deferred_.empty() && deferred_.front().sender == sender && !outstanding_.count(deferred_.front().key)) {
        deferred_.pop_front();
        ++count;
      }
      if (count == 0) return;
      if (sender) send<caf::message_priority::high>(caf::actor_cast<sender_actor>(sender), ack_atom::value, count);
    }
  }

  instance_setup s_;
  const planned_stage& stage_;
  std::chrono::milliseconds deadline_;
  router router_;
  std::string tag_;
  std::shared_ptr<plugin_adapter> adapter_;
  instance_state state_ = instance_state::loaded;
  ring<inbound> inbox_;
  struct deferred_ack {
    caf::strong_actor_ptr sender;
    std::pair<uint64_t, uint64_t> key;  // (stream, seq) of the input, which its outputs carry
  };
  std::deque<deferred_ack> deferred_;                            // processed inputs from other nodes, in arrival order
  std::map<std::pair<uint64_t, uint64_t>, size_t> outstanding_;  // unacknowledged outputs per input
  bool custody_ = false;                                         // it has had input from another node
  size_t held_ = 0;  // inputs in the inbox that are not duplicates (the books' "in flight")
  dedupe_window dedupe_;
  batch_ptr batch_;                  // the batch on the executor, if any
  std::shared_ptr<call_site> site_;  // what the call on the executor is working on
  uint64_t call_id_ = 0;             // of the call on the executor; older replies are ignored
  bool busy_ = false;
  bool released_ = false;      // its worker ended for want of input (idle_release_s)
  uint64_t idle_check_ = 0;    // the idle wait in force; earlier ones are void
  bool paused_ = false;        // see instance_setup::paused
  double throttled_seen_ = 0;  // of the adapter's cpu_throttled_seconds, counted already
  double cpu_seen_ = 0;        // of its cpu_seconds, likewise
  bool stop_requested_ = false;
  bool upstream_done_ = false;
  bool source_ended_ = false;
  bool tick_pending_ = false;
  bool finished_reported_ = false;
  bool draining_ = false;  // scaled away: finish what was taken, then report drained
  bool drained_reported_ = false;
  std::set<size_t> drain_from_;  // upstream slots that must say they will send nothing more
  std::set<size_t> drained_by_;  // ... and those that did
  std::chrono::microseconds idle_backoff_ = source_idle_min / 2;
};

}  // namespace

instance_actor spawn_instance(caf::actor_system& sys, instance_setup setup) {
  return sys.spawn<instance_impl>(std::move(setup));
}

}  // namespace troupe
