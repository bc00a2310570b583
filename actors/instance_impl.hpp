// The instance actor's class (instance.hpp), shared by the files that define it:
//   instance.cpp        its lifecycle: the plugin's start, stop and health, losses, idle release
//   instance_flow.cpp   its inputs and outputs: the inbox, batches on the executor, outputs
//                       routed, acknowledgements, finishing and draining
// Internal to the runtime library.
#pragma once

#include <troupe/instance.hpp>

#include <troupe/handover.hpp>

#include <troupe/dedupe.hpp>
#include <troupe/embedded_adapter.hpp>
#include <troupe/isolated_adapter.hpp>
#include <troupe/ring.hpp>
#include <troupe/router.hpp>

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <span>
#include <tuple>
namespace troupe {

namespace instance_detail {

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
inline batch_result close_batch(batch_state& b) {
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
inline bool add_to_batch(batch_state& b, std::vector<frame>& outs, bool ok, uint64_t seq, std::string* error) {
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

}  // namespace instance_detail

using namespace instance_detail;

}  // namespace troupe

// An instance's own message about a batch on the executor: it shares the batch's state with
// the executor's threads, which means nothing outside this process.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::batch_ptr)

namespace troupe {

namespace instance_detail {

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

// Beside its lifecycle (instance_state), an instance's stream and its drain each move
// forward only, one step at a time, in advance():
//   stream: open -> ending (no more input will come: its upstream is done, or a source's
//           streams end) -> finished (all of it processed and acknowledged; the manager
//           was told)
//   drain:  serving -> draining (scaled away or retired: it finishes what it took) ->
//           drained (nothing left here or unacknowledged downstream; the manager was told)
enum class stream_phase : uint8_t { open, ending, finished };
enum class drain_phase : uint8_t { serving, draining, drained };

}  // namespace instance_detail

class instance_impl : public instance_self_actor::base {
 public:
  instance_impl(caf::actor_config& cfg, instance_setup s);

  const char* name() const override { return "troupe.instance"; }

  // Handles to the manager, to receivers (routes) and to senders (inbox) would otherwise
  // keep each other's actors alive after they all quit. The rest goes too, storage included:
  // a timer the instance set (a heartbeat, every few seconds) keeps the actor object itself
  // alive until it fires, and in a burst of restarts thousands of quit generations would
  // otherwise keep their inboxes.
  void on_exit() override {
    inbox_ = {};
    deferred_ = {};
    outstanding_ = {};
    dedupe_ = dedupe_window(1);
    drain_from_ = {};
    drained_by_ = {};
    s_.dead = {};
    s_.library = nullptr;
    router_.clear();
    s_.manager = nullptr;
    s_.routes = {};
    s_.carry = {};
    batch_.reset();
    site_.reset();
    adapter_.reset();
  }

  // The only places stream_ and drain_ change: forward, one step at a time (see stream_phase).
  // A step already taken is no change (upstream_done_atom or drain_atom may come again).
  void advance(stream_phase next) {
    assert(static_cast<int>(next) <= static_cast<int>(stream_) + 1 && "a stream phase skipped");
    stream_ = std::max(stream_, next);
  }
  void advance(drain_phase next) {
    assert(static_cast<int>(next) <= static_cast<int>(drain_) + 1 && "a drain phase skipped");
    drain_ = std::max(drain_, next);
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
          if (stage_.is_source()) return;  // a source's streams end by themselves, or by end_atom
          advance(stream_phase::ending);
          pump();
        },
        [this](pause_atom, bool on) {
          paused_ = on;
          s_.stats->paused.store(on);
          pump();
        },
        [this](end_atom) {
          if (!stage_.is_source() || stream_ != stream_phase::open) return;
          advance(stream_phase::ending);  // the turn in progress, if any, is the last
          spdlog::debug("[{}] told to end its streams", tag_);
          pump();
        },
        [this](drain_atom, std::vector<size_t>& upstream) {
          advance(drain_phase::draining);
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
  void take(std::span<frame> fs);

  void heartbeat();

  struct inbound {
    frame f;  // moved into the batch that processes it
    frame_key key;
    caf::strong_actor_ptr sender;
    input_kind kind = input_kind::fresh;
    bool submitted = false;  // in a batch: f is gone, the key stays
  };

  void report(instance_state st, failure_class fc = failure_class::none, std::string error = {},
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
  void note_use();

  void start();

  void stop();

  void on_call(call_kind kind, call_result& r);

  // The current call passed its deadline: keep what the batch completed, then give up the
  // instance.
  void on_overrun(const std::string& why);

  // The plugin is gone: report with the outputs not yet delivered, then quit.
  void lose(const std::string& why, std::optional<frame_key> culprit = std::nullopt);

  void pump();

  // Scaled away: reports once no input can come (every upstream instance said so), all
  // input was processed and every output acknowledged.
  void check_drained();

  void check_finished();

  // Skipped inputs (duplicates, dead letters) at the head of the inbox are acknowledged
  // now, unprocessed.
  void acknowledge_skipped();

  // A batch is the run of fresh frames at the head of the inbox (a skipped one ends it, so
  // that acknowledgements stay in arrival order).
  void submit_batch();

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

  void submit_source_turn();

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

  void on_batch(batch_result r);

  // With idle_release_s, an isolated worker that gets no input for that long ends; the next
  // frame starts one again (scale to zero). Each batch starts the wait anew.
  void arm_idle();

  void release_if_idle();

  void respawn();

  // Counts a batch's results, hands its outputs to the router and acknowledges its inputs.
  void handle_results(batch_result& r);

  // Acknowledges the first n inputs to their senders, in arrival order per sender. In a
  // pipeline across nodes (end_to_end) an input is acknowledged only once its outputs are:
  // while they are not, the node it came from keeps it, so that losing this node loses no
  // frame (the sender's node replays it elsewhere; receivers drop what they had).
  void acknowledge(size_t n);

  // Acknowledges the inputs at the front of deferred_ whose outputs are all acknowledged.
  void release_deferred();

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
  // Processed inputs whose outputs are not all acknowledged yet (end_to_end), in arrival order.
  std::deque<deferred_ack> deferred_;
  std::map<std::pair<uint64_t, uint64_t>, size_t> outstanding_;  // unacknowledged outputs per input
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
  bool tick_pending_ = false;
  stream_phase stream_ = stream_phase::open;
  drain_phase drain_ = drain_phase::serving;
  std::set<size_t> drain_from_;  // upstream slots that must say they will send nothing more
  std::set<size_t> drained_by_;  // ... and those that did
  std::chrono::microseconds idle_backoff_ = source_idle_min / 2;
};

}  // namespace troupe
