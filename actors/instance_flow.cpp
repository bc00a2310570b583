// The instance's inputs and outputs (instance_impl.hpp): the inbox, batches of inputs on the
// executor, outputs routed downstream, acknowledgements upstream, finishing and draining.
#include "instance_impl.hpp"

namespace troupe {

void instance_impl::take(std::span<frame> fs) {
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
      bytes += f.payload.size();
      ++held_;
    }
    inbox_.push_back({std::move(f), key, sender, kind});
  }
  if (fresh > 0) s_.stats->frames_in.Increment(static_cast<double>(fresh));
  if (bytes > 0) s_.stats->bytes_in.Increment(static_cast<double>(bytes));
  if (duplicates > 0) s_.stats->duplicates.Increment(static_cast<double>(duplicates));
  s_.stats->queue_depth.Set(static_cast<double>(held_));
  pump();
}

void instance_impl::pump() {
  if (state_ != instance_state::running || busy_) return;
  if (stop_requested_) {
    stop();
    return;
  }
  if (router_.blocked() || paused_) return;
  if (stage_.is_source()) {
    if (stream_ == stream_phase::open && !tick_pending_) submit_source_turn();
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

void instance_impl::check_drained() {
  if (drain_ != drain_phase::draining || !inbox_.empty() || !router_.idle() || !deferred_.empty()) return;
  for (auto u : drain_from_)
    if (!drained_by_.count(u)) return;
  advance(drain_phase::drained);
  spdlog::debug("[{}] drained", tag_);
  send<caf::message_priority::high>(s_.manager, drained_atom::value, instance_ref{s_.slot, s_.generation});
}

void instance_impl::check_finished() {
  if (stream_ != stream_phase::ending || !router_.idle() || !deferred_.empty()) return;
  if (!stage_.is_source() && !inbox_.empty()) return;
  advance(stream_phase::finished);
  send<caf::message_priority::high>(s_.manager, finished_atom::value, instance_ref{s_.slot, s_.generation});
}

void instance_impl::acknowledge_skipped() {
  size_t n = 0, dead = 0;
  for (; n < inbox_.size() && inbox_[n].kind != input_kind::fresh; ++n)
    dead += inbox_[n].kind == input_kind::dead ? 1 : 0;
  if (dead > 0) s_.stats->dead_letters.Increment(static_cast<double>(dead));
  if (n > 0) acknowledge(n);
}

void instance_impl::submit_batch() {
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

void instance_impl::submit_source_turn() {
  submit_job([](plugin_adapter& adapter, batch_state& b, executor::worker& w, call_site&,
                std::chrono::milliseconds deadline, slot_stats& stats) {
    std::vector<frame> outs;
    size_t emitted = 0;
    call_timings timings;  // each call of the source, in its processing histogram
    struct flush_at_end {
      call_timings& t;
      slot_stats& s;
      ~flush_at_end() { t.flush_to(s.processing); }
    } flush{timings, stats};
    while (emitted < max_source_outputs && !b.cancel.load(std::memory_order_relaxed)) {
      call_result cr;
      {
        executor::call_scope scope(w, deadline);
        auto start = std::chrono::steady_clock::now();
        cr = guarded([&] { return adapter.process(nullptr, outs); });
        timings.add(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
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

void instance_impl::on_batch(batch_result r) {
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
    advance(stream_phase::ending);
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

void instance_impl::handle_results(batch_result& r) {
  auto& st = *s_.stats;
  if (r.completed > 0) st.frames_completed.Increment(static_cast<double>(r.completed));
  if (r.filtered > 0) st.frames_filtered.Increment(static_cast<double>(r.filtered));
  if (!r.errors.empty()) {
    st.errors.Increment(static_cast<double>(r.errors.size()));
    for (auto& [seq, msg] : r.errors) spdlog::warn("[{}] frame seq {} failed: {}", tag_, seq, msg);
  }
  uint64_t bytes_out = 0;
  for (auto& f : r.outputs) bytes_out += f.payload.size();
  st.frames_out.Increment(static_cast<double>(r.outputs.size()));
  st.bytes_out.Increment(static_cast<double>(bytes_out));
  if (s_.end_to_end)  // each input's outputs are counted until acknowledged
    for (auto& f : r.outputs) outstanding_[{f.stream, f.seq}] += router_.edge_count();
  router_.route_all(std::move(r.outputs));
  r.outputs.clear();
  s_.stats->in_flight.Set(static_cast<double>(router_.in_flight()));
  // The input of a fatal call is not in `processed`: it stays unacknowledged and is sent
  // again to the next generation.
  if (!stage_.is_source()) acknowledge(r.processed);
}

void instance_impl::acknowledge(size_t n) {
  size_t i = 0;
  while (i < n && !inbox_.empty()) {
    auto sender = inbox_.front().sender;
    uint32_t count = 0;
    while (i < n && !inbox_.empty() && inbox_.front().sender == sender) {
      auto& in = inbox_.front();
      if (in.kind != input_kind::duplicate) --held_;
      if (s_.end_to_end)
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

void instance_impl::release_deferred() {
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

}  // namespace troupe
