#include <troupe/router.hpp>

#include <algorithm>
#include <deque>

namespace troupe {

router::edge* router::find_edge(size_t stage) {
  for (auto& e : edges_)
    if (e.stage == stage) return &e;
  return nullptr;
}

std::vector<size_t> router::edge::sent_in_order() const {
  std::vector<size_t> out;
  out.reserve(sent.size());
  for (auto& [i, s] : sent) out.push_back(i);
  std::sort(out.begin(), out.end());
  return out;
}

size_t router::set_routes(const route_table& routes) {
  std::vector<edge> next;
  size_t replayed = 0;
  for (auto& r : routes.edges) {
    edge e;
    e.stage = r.stage;
    e.policy = r.policy;
    e.receivers = r.receivers;
    auto& list = *e.receivers;
    if (auto* old = find_edge(r.stage)) {
      e.pending = std::move(old->pending);
      e.next = old->next;
      // A receiver still in place keeps its unacked frames; a replaced or removed one
      // gives them back, in order, ahead of what was pending.
      std::unordered_map<caf::actor_addr, size_t> index;
      if (!old->sent.empty())
        for (size_t i = 0; i < list.size(); ++i)
          if (list[i].handle) index.emplace(list[i].handle.address(), i);
      std::deque<routed> resend;
      for (auto oi : old->sent_in_order()) {
        auto& o = old->sent[oi];
        auto& handle = (*old->receivers)[oi].handle;
        auto it = handle ? index.find(handle.address()) : index.end();
        if (it != index.end()) {
          if (o.unacked.empty() && !o.told_drained) continue;  // nothing to keep
          auto& n = e.sent[it->second];
          n.unacked = std::move(o.unacked);
          n.told_drained = o.told_drained && list[it->second].draining;
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
    for (auto& [i, s] : e.sent) {
      in_flight_ += s.unacked.size();
      s.unacked_bytes = 0;
      for (auto& u : s.unacked) s.unacked_bytes += u.f.payload.size();
    }
  for (auto& e : edges_) {
    flush(e);
    auto& list = *e.receivers;
    for (size_t i = 0; i < list.size(); ++i)
      if (list[i].draining && list[i].handle) tell_drained(e, i, e.sent[i]);
  }
  return replayed;
}

void router::tell_drained(const edge& e, size_t i, sent_to& s) {
  auto& r = (*e.receivers)[i];
  if (!r.draining || s.told_drained || !r.handle || !s.unacked.empty()) return;
  s.told_drained = true;
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
  auto& list = *e.receivers;
  auto n = list.size();
  auto has_credit = [&](size_t i) {
    auto& r = list[i];
    if (!r.handle || r.draining) return false;
    auto it = e.sent.find(i);
    if (it == e.sent.end()) return true;
    auto& s = it->second;
    return s.unacked.size() < window_ && (s.unacked.empty() || s.unacked_bytes + f.payload.size() <= window_bytes_);
  };
  switch (e.policy) {
    case route_policy::by_stream: {
      // Among live receivers, the stream decides; order per stream holds while the set of
      // live receivers does not change.
      size_t live = 0;
      for (auto& r : list) live += r.handle && !r.draining ? 1 : 0;
      if (live == 0) return -1;
      size_t k = f.stream % live;
      for (size_t i = 0; i < n; ++i) {
        if (!list[i].handle || list[i].draining) continue;
        if (k-- == 0) return has_credit(i) ? static_cast<int>(i) : -1;
      }
      return -1;
    }
    case route_policy::least_loaded: {
      int best = -1;
      size_t best_load = 0;
      for (size_t i = 0; i < n; ++i)
        if (has_credit(i)) {
          auto load = e.unacked(i);
          if (best < 0 || load < best_load) {
            best = static_cast<int>(i);
            best_load = load;
          }
        }
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
    auto& s = e.sent[static_cast<size_t>(i)];
    s.unacked.push_back(std::move(e.pending.front()));
    s.unacked_bytes += s.unacked.back().f.payload.size();
    e.pending.pop_front();
    ++in_flight_;
    auto it = std::find_if(out.begin(), out.end(), [&](auto& o) { return o.first == static_cast<size_t>(i); });
    if (it == out.end()) {
      it = out.insert(out.end(), {static_cast<size_t>(i), {}});
      it->second.reserve(std::min<size_t>(e.pending.size(), window_));
    }
    it->second.push_back(s.unacked.back().f);  // the copy shares the payload
  }
  for (auto& [i, frames] : out) {
    auto& h = (*e.receivers)[i].handle;
    if (frames.size() > 1 && batch_) {
      batch_(h, std::move(frames));
      continue;
    }
    for (auto& f : frames) send_(h, std::move(f));
  }
}

void router::on_ack(const caf::actor_addr& from, uint32_t n) {
  for (auto& e : edges_)
    for (auto& [i, s] : e.sent) {
      auto& h = (*e.receivers)[i].handle;
      if (h && h.address() == from) {
        auto k = std::min<size_t>(n, s.unacked.size());
        for (size_t j = 0; j < k; ++j) {
          s.unacked_bytes -= s.unacked[j].f.payload.size();
          if (acked_) acked_(s.unacked[j].f, s.unacked[j].note);
        }
        s.unacked.pop_front(k);
        in_flight_ -= k;
        tell_drained(e, i, s);
        flush(e);
        return;
      }
    }
  // From a receiver that has been replaced since (its frames were queued again already), or
  // one this router has sent nothing to.
}

carried_frames router::take_carry() {
  carried_frames c;
  for (auto& e : edges_) {
    std::vector<frame> frames;
    // Unacknowledged frames may or may not have been taken: the successor sends them again
    // and receivers drop the ones they have (their acknowledgements came back here).
    for (auto i : e.sent_in_order()) {
      auto& s = e.sent[i];
      for (auto& u : s.unacked) frames.push_back(std::move(u.f));
      s.unacked.clear();
      s.unacked_bytes = 0;
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
    for (auto& [i, s] : e.sent)
      if (!s.unacked.empty()) return false;
  }
  return true;
}

}  // namespace troupe
