#include <troupe/router.hpp>

#include <algorithm>
#include <deque>

namespace troupe {

router::edge* router::find_edge(size_t stage) {
  for (auto& e : edges_)
    if (e.stage == stage) return &e;
  return nullptr;
}

size_t router::set_routes(const route_table& routes) {
  std::vector<edge> next;
  size_t replayed = 0;
  for (auto& r : routes.edges) {
    edge e;
    e.stage = r.stage;
    e.policy = r.policy;
    e.receivers.resize(r.receivers.size());
    for (size_t i = 0; i < r.receivers.size(); ++i) {
      e.receivers[i].handle = r.receivers[i].handle;
      e.receivers[i].draining = r.receivers[i].draining;
    }
    if (auto* old = find_edge(r.stage)) {
      e.pending = std::move(old->pending);
      e.next = old->next;
      // A receiver still in place keeps its unacked frames; a replaced or removed one
      // gives them back, in order, ahead of what was pending.
      std::deque<routed> resend;
      for (auto& o : old->receivers) {
        auto it = std::find_if(e.receivers.begin(), e.receivers.end(),
                               [&](const receiver& n) { return o.handle && n.handle == o.handle; });
        if (it != e.receivers.end()) {
          it->unacked = std::move(o.unacked);
          it->told_drained = o.told_drained && it->draining;
        } else {
          for (auto& u : o.unacked) resend.push_back(std::move(u));
        }
      }
      replayed += resend.size();
      for (auto it = resend.rbegin(); it != resend.rend(); ++it) e.pending.push_front(std::move(*it));
    }
    next.push_back(std::move(e));
  }
  edges_ = std::move(next);
  in_flight_ = 0;
  for (auto& e : edges_)
    for (auto& r : e.receivers) {
      in_flight_ += r.unacked.size();
      r.unacked_bytes = 0;
      for (auto& u : r.unacked) r.unacked_bytes += u.f.payload.size();
    }
  for (auto& e : edges_) {
    flush(e);
    for (auto& r : e.receivers) tell_drained(r);
  }
  return replayed;
}

void router::tell_drained(receiver& r) {
  if (!r.draining || r.told_drained || !r.handle || !r.unacked.empty()) return;
  r.told_drained = true;
  if (drained_) drained_(r.handle);
}

void router::route_all(std::vector<frame>&& fs, const std::vector<uint64_t>& notes) {
  for (size_t i = 0; i < edges_.size(); ++i) {
    auto& e = edges_[i];
    for (size_t j = 0; j < fs.size(); ++j) {
      const uint64_t note = j < notes.size() ? notes[j] : 0;
      if (i + 1 == edges_.size())
        e.pending.push_back(routed{std::move(fs[j]), note});
      else
        e.pending.push_back(routed{fs[j], note});  // fan-out shares the payload
    }
    flush(e);
  }
  fs.clear();
}

int router::pick(edge& e, const frame& f) {
  auto n = e.receivers.size();
  auto has_credit = [&](size_t i) {
    auto& r = e.receivers[i];
    return r.handle && !r.draining && r.unacked.size() < window_ &&
           (r.unacked.empty() || r.unacked_bytes + f.payload.size() <= window_bytes_);
  };
  switch (e.policy) {
    case route_policy::by_stream: {
      // Among live receivers, the stream decides; order per stream holds while the set of
      // live receivers does not change.
      size_t live = 0;
      for (auto& r : e.receivers) live += r.handle && !r.draining ? 1 : 0;
      if (live == 0) return -1;
      size_t k = f.stream % live;
      for (size_t i = 0; i < n; ++i) {
        if (!e.receivers[i].handle || e.receivers[i].draining) continue;
        if (k-- == 0) return has_credit(i) ? static_cast<int>(i) : -1;
      }
      return -1;
    }
    case route_policy::least_loaded: {
      int best = -1;
      for (size_t i = 0; i < n; ++i)
        if (has_credit(i) && (best < 0 || e.receivers[i].unacked.size() < e.receivers[best].unacked.size()))
          best = static_cast<int>(i);
      return best;
    }
    case route_policy::round_robin:
      for (size_t k = 0; k < n; ++k) {
        size_t i = (e.next + k) % n;
        if (has_credit(i)) {
          e.next = (i + 1) % n;
          return static_cast<int>(i);
        }
      }
      return -1;
  }
  return -1;
}

void router::flush(edge& e) {
  // What each receiver gets now, in order, sent once the credits are spent.
  std::vector<std::pair<size_t, std::vector<frame>>> out;
  while (!e.pending.empty()) {
    int i = pick(e, e.pending.front().f);
    if (i < 0) break;
    auto& r = e.receivers[static_cast<size_t>(i)];
    r.unacked.push_back(std::move(e.pending.front()));
    r.unacked_bytes += r.unacked.back().f.payload.size();
    e.pending.pop_front();
    ++in_flight_;
    auto it = std::find_if(out.begin(), out.end(), [&](auto& o) { return o.first == static_cast<size_t>(i); });
    if (it == out.end()) {
      it = out.insert(out.end(), {static_cast<size_t>(i), {}});
      it->second.reserve(std::min<size_t>(e.pending.size(), window_));
    }
    it->second.push_back(r.unacked.back().f);  // the copy shares the payload
  }
  for (auto& [i, frames] : out) {
    auto& h = e.receivers[i].handle;
    if (frames.size() > 1 && batch_) {
      batch_(h, std::move(frames));
      continue;
    }
    for (auto& f : frames) send_(h, std::move(f));
  }
}

void router::on_ack(const caf::actor_addr& from, uint32_t n) {
  for (auto& e : edges_)
    for (auto& r : e.receivers)
      if (r.handle && r.handle.address() == from) {
        auto k = std::min<size_t>(n, r.unacked.size());
        for (size_t j = 0; j < k; ++j) {
          r.unacked_bytes -= r.unacked[j].f.payload.size();
          if (acked_) acked_(r.unacked[j].f, r.unacked[j].note);
        }
        r.unacked.pop_front(k);
        in_flight_ -= k;
        tell_drained(r);
        flush(e);
        return;
      }
  // From a receiver that has been replaced since: its frames were queued again already.
}

carried_frames router::take_carry() {
  carried_frames c;
  for (auto& e : edges_) {
    std::vector<frame> frames;
    // Unacknowledged frames may or may not have been taken: the successor sends them again
    // and receivers drop the ones they have (their acknowledgements came back here).
    for (auto& r : e.receivers) {
      for (auto& u : r.unacked) frames.push_back(std::move(u.f));
      r.unacked.clear();
      r.unacked_bytes = 0;
    }
    for (auto& u : e.pending) frames.push_back(std::move(u.f));
    e.pending.clear();
    if (!frames.empty()) c.per_stage.emplace_back(e.stage, std::move(frames));
  }
  in_flight_ = 0;
  return c;
}

void router::add_carry(carried_frames&& c) {
  for (auto& [stage, frames] : c.per_stage) {
    auto* e = find_edge(stage);
    if (e == nullptr) continue;
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) e->pending.push_front(routed{std::move(*it), 0});
    flush(*e);
  }
}

bool router::blocked() const {
  return std::any_of(edges_.begin(), edges_.end(), [](auto& e) { return !e.pending.empty(); });
}

bool router::idle() const {
  for (auto& e : edges_) {
    if (!e.pending.empty()) return false;
    for (auto& r : e.receivers)
      if (!r.unacked.empty()) return false;
  }
  return true;
}

}  // namespace troupe
