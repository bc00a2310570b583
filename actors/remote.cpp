#include <troupe/remote.hpp>

#include <troupe/router.hpp>

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include <deque>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace troupe {

namespace {

using resend_atom = caf::atom_constant<caf::atom("resend")>;
constexpr auto retry_delay = std::chrono::milliseconds(200);

// A remote stage runs a slot as an instance does (instance_actor), and hears from the data
// link (acknowledgements, reconnects) and from itself (frames to send again).
using remote_stage_self_actor =
    instance_actor::extend_with<link_channel_actor>::extend<caf::reacts_to<resend_atom, std::vector<uint64_t>>>;

class remote_stage_impl : public remote_stage_self_actor::base {
 public:
  remote_stage_impl(caf::actor_config& cfg, remote_stage_setup s)
      : remote_stage_self_actor::base(cfg), s_(std::move(s)) {}

  const char* name() const override { return "troupe.remote_stage"; }

  void on_exit() override {
    if (channel_ != 0) s_.plane->close_channel(channel_);
    channel_ = 0;
    entries_.clear();
    senders_.clear();
    s_.manager = nullptr;
  }

  behavior_type make_behavior() override {
    return {
        [this](start_atom) {
          channel_ = s_.plane->open_channel(s_.address, s_.pipeline, s_.stage, this, s_.node);
          report(instance_state::started);
          report(instance_state::running);
        },
        [this](frame_atom, frame& f) {
          std::vector<std::pair<uint64_t, frame>> out;
          take(std::move(f), out);
          s_.plane->send(channel_, std::move(out));
        },
        [this](frames_atom, frame_batch& b) {
          std::vector<std::pair<uint64_t, frame>> out;
          out.reserve(b.frames.size());
          for (auto& f : b.frames) take(std::move(f), out);
          s_.plane->send(channel_, std::move(out));
        },
        [this](link_acks_atom, const std::vector<uint64_t>& acked, const std::vector<uint64_t>& retry) {
          std::set<caf::actor_addr> touched;
          for (auto id : acked)
            if (auto it = entries_.find(id); it != entries_.end()) {
              it->second.acked = true;
              touched.insert(it->second.from);
            }
          for (auto& who : touched) release(who);
          if (!retry.empty()) delayed_send(this, retry_delay, resend_atom::value, retry);
        },
        [this](resend_atom, const std::vector<uint64_t>& ids) {
          std::vector<std::pair<uint64_t, frame>> out;
          for (auto id : ids)
            if (auto it = entries_.find(id); it != entries_.end() && !it->second.acked)
              out.emplace_back(id, it->second.f);
          s_.plane->send(channel_, std::move(out));
        },
        [this](link_up_atom, uint64_t connection) {
          if (connection <= connection_) return;  // heard of this connection already
          connection_ = connection;
          // Whatever the last connection carried may be lost: all of it goes again.
          if (!entries_.empty())
            spdlog::debug("[node={} stage={}] sending {} unacknowledged frames again", s_.plane->node(), s_.stage,
                          entries_.size());
          std::vector<std::pair<uint64_t, frame>> out;
          for (auto& [id, e] : entries_)
            if (!e.acked) out.emplace_back(id, e.f);
          s_.plane->send(channel_, std::move(out));
        },
        [this](stop_atom) {
          report(instance_state::stopping);
          report(instance_state::stopped);
          quit();
        },
        // What the manager tells a slot about its stream, its routes and its plugin concerns
        // the instances on the stage's own node, whose manager hears it from that node's
        // view of the pipeline; a remote stage only carries frames. It sends nothing on
        // (no routes, so no acknowledgements come to it).
        [](upstream_done_atom) {},
        [](end_atom) {},
        [](skip_atom, const frame_key&) {},
        [](pause_atom, bool) {},
        [](drain_atom, std::vector<size_t>&) {},
        [](drained_atom, size_t) {},
        [](routes_atom, const route_table&) {},
        [](ack_atom, uint32_t) {},
    };
  }

 private:
  struct entry {
    frame f;
    caf::actor_addr from;
    bool acked = false;
  };
  struct sender {
    sender_actor who;
    std::deque<uint64_t> ids;  // in the order it sent them
  };

  // Numbers a frame from the current sender and keeps it until acknowledged; out gets a copy
  // to send (the copy shares the payload).
  void take(frame&& f, std::vector<std::pair<uint64_t, frame>>& out) {
    auto id = ++next_id_;
    auto from = caf::actor_cast<sender_actor>(current_sender());
    auto& q = senders_[from.address()];
    if (!q.who) q.who = from;
    q.ids.push_back(id);
    auto& e = entries_[id];
    e.f = std::move(f);
    e.from = from.address();
    out.emplace_back(id, e.f);
  }

  // Acknowledges to a sender the frames at the front of its order that are acknowledged.
  void release(const caf::actor_addr& who) {
    auto it = senders_.find(who);
    if (it == senders_.end()) return;
    auto& q = it->second;
    uint32_t n = 0;
    while (!q.ids.empty()) {
      auto e = entries_.find(q.ids.front());
      if (e != entries_.end() && !e->second.acked) break;
      if (e != entries_.end()) entries_.erase(e);
      q.ids.pop_front();
      ++n;
    }
    if (n > 0) send(q.who, ack_atom::value, n);
    if (q.ids.empty()) senders_.erase(it);
  }

  void report(instance_state st) {
    instance_report r;
    r.slot = s_.slot;
    r.generation = s_.generation;
    r.state = st;
    send<caf::message_priority::high>(s_.manager, report_atom::value, std::move(r));
  }

  remote_stage_setup s_;
  uint32_t channel_ = 0;
  uint64_t connection_ = 0;
  uint64_t next_id_ = 0;
  std::map<uint64_t, entry> entries_;
  std::map<caf::actor_addr, sender> senders_;
};

class ingress_impl : public ingress_actor::base {
 public:
  ingress_impl(caf::actor_config& cfg, ingress_setup s)
      : ingress_actor::base(cfg),
        s_(std::move(s)),
        router_(
            s_.window, [this](const receiver_actor& to, frame&& f) { send(to, frame_atom::value, std::move(f)); },
            [this](const receiver_actor& to) {
              for (auto slot : s_.fence.upstream_slots)
                send<caf::message_priority::high>(to, drained_atom::value, slot);
            }) {
    router_.on_batch([this](const receiver_actor& to, std::vector<frame>&& fs) {
      send(to, frames_atom::value, frame_batch{std::move(fs)});
    });
    router_.limit_bytes(s_.window_bytes);
    router_.set_routes(s_.routes);
    s_.routes = {};
    router_.on_acked([this](const frame&, uint64_t tag) {
      auto it = origins_.find(tag);
      if (it == origins_.end()) return;
      auto o = it->second;
      acked_[{o.node, o.channel}].push_back(o.id);
      held_.erase(o);
      origins_.erase(it);
    });
  }

  const char* name() const override { return "troupe.ingress"; }

  void on_exit() override { router_.clear(); }

  behavior_type make_behavior() override {
    return {
        [this](routes_atom, const route_table& rt) { router_.set_routes(rt); },
        [this](fence_atom, ingress_fence& f) { s_.fence = std::move(f); },
        [this](link_frames_atom, link_batch& b) {
          if (auto why = fenced(b)) {
            // Asked for again: once its node reads the placement it acts on now, it sends
            // them again if they are still its to send.
            s_.plane->fenced(b.from, s_.run, b.frames.size(), *why);
            std::vector<uint64_t> ids;
            ids.reserve(b.frames.size());
            for (auto& [id, f] : b.frames) ids.push_back(id);
            s_.plane->refuse(b.from, b.channel, std::move(ids), *why);
            return;
          }
          auto from = node_index(b.from);
          // Each frame is routed with a tag of the ingress's own, which the router hands back
          // with its acknowledgement: the tag says where to send it upstream.
          std::vector<frame> fresh;
          std::vector<uint64_t> tags;
          fresh.reserve(b.frames.size());
          tags.reserve(b.frames.size());
          for (auto& [id, f] : b.frames) {
            origin o{from, b.channel, id};
            if (!held_.insert(o).second) continue;  // sent again while it is still here
            auto tag = ++next_tag_;
            origins_.emplace(tag, o);
            fresh.push_back(std::move(f));
            tags.push_back(tag);
          }
          router_.route_all(std::move(fresh), tags);
        },
        [this](ack_atom, uint32_t n) {
          router_.on_ack(caf::actor_cast<caf::actor_addr>(current_sender()), n);
          for (auto& [key, ids] : acked_)
            if (!ids.empty()) s_.plane->ack(nodes_[key.first], key.second, std::move(ids));
          acked_.clear();
        },
        [this](stop_atom) { quit(); },
    };
  }

 private:
  // Why a batch is not taken (nothing: it is): its node no longer runs a stage feeding this
  // one, or it sent the batch under a placement it lost stages in.
  std::optional<std::string> fenced(const link_batch& b) const {
    if (!s_.fence.senders.count(b.from)) return "it no longer runs the stage that sent them";
    auto e = s_.fence.epochs.find(b.from);
    if (e != s_.fence.epochs.end() && b.epoch <= e->second)
      return "they were sent under placement revision " + std::to_string(b.epoch) +
             ", and stages moved away from it at " + std::to_string(e->second);
    return std::nullopt;
  }

  // Where a frame came from: the sending node (an index into nodes_), its channel, its number.
  struct origin {
    uint32_t node, channel;
    uint64_t id;
    bool operator==(const origin& o) const { return node == o.node && channel == o.channel && id == o.id; }
  };
  struct origin_hash {
    size_t operator()(const origin& o) const {
      return std::hash<uint64_t>()(o.id * 0x9e3779b97f4a7c15ULL ^ (uint64_t{o.node} << 32 | o.channel));
    }
  };
  uint32_t node_index(const std::string& node) {
    for (uint32_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i] == node) return i;
    nodes_.push_back(node);
    return static_cast<uint32_t>(nodes_.size() - 1);
  }

  ingress_setup s_;
  router router_;
  uint64_t next_tag_ = 0;
  std::vector<std::string> nodes_;
  std::unordered_map<uint64_t, origin> origins_;  // by route tag
  std::unordered_set<origin, origin_hash> held_;
  std::map<std::pair<uint32_t, uint32_t>, std::vector<uint64_t>> acked_;
};

}  // namespace

instance_actor spawn_remote_stage(caf::actor_system& sys, remote_stage_setup setup) {
  return sys.spawn<remote_stage_impl>(std::move(setup));
}

ingress_actor spawn_ingress(caf::actor_system& sys, ingress_setup setup) {
  return sys.spawn<ingress_impl>(std::move(setup));
}

}  // namespace troupe
