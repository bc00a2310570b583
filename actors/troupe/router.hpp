// The outbound side of one instance: which receiver gets each output, and the credits.
//
// Per downstream stage, outputs wait in `pending` until a receiver has credit (fewer than
// `window` frames sent and not yet acknowledged, and the frame's payload fits in what is
// left of the byte limit; a receiver with nothing unacknowledged always takes one frame).
// Sent frames stay in the receiver's `unacked` list until acknowledged; when a receiver is
// replaced (a new generation) or removed, its unacked frames go back to the front of
// pending and are sent again. A receiver is known by its handle, wherever it sits in the
// list. A draining receiver gets nothing new. Not thread-safe: owned by one instance actor.
//
// The list of receivers is the route table's, shared with the other senders of the stage;
// the router keeps state only for the receivers it has sent to. A sender among a thousand
// replicas sending to a thousand costs a thousand lists of nothing, not a million entries.
#pragma once

#include <troupe/frame.hpp>
#include <troupe/messages.hpp>
#include <troupe/ring.hpp>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

namespace troupe {

class router {
 public:
  using send_fn = std::function<void(const receiver_actor&, frame&&)>;
  using drained_fn = std::function<void(const receiver_actor&)>;

  /// drained(r) is called once per draining receiver r, when nothing sent to it is left
  /// unacknowledged.
  router(uint32_t window, send_fn send, drained_fn drained = {})
      : window_(window), send_(std::move(send)), drained_(std::move(drained)) {}

  /// Installs receivers; replaced receivers' unacked frames are queued again (returns how
  /// many).
  size_t set_routes(const route_table& routes);
  /// Queues outputs, in order, for every downstream stage and sends what credits allow; what
  /// one receiver gets at once goes in one batch (see on_batch). notes, if not empty, holds
  /// the caller's note on each frame (one per frame): the router keeps it beside the frame
  /// and hands it back to on_acked; it is not sent.
  void route_all(std::vector<frame>&& fs, const std::vector<uint64_t>& notes = {});
  void route(frame&& f) {
    std::vector<frame> one;
    one.push_back(std::move(f));
    route_all(std::move(one));
  }
  /// Payload bytes unacknowledged per receiver, at most (default: no limit but the window).
  void limit_bytes(uint64_t bytes) { window_bytes_ = bytes; }
  /// Frames that go to one receiver at once are handed to batch (more than one) instead of
  /// send, in one call.
  void on_batch(std::function<void(const receiver_actor&, std::vector<frame>&&)> batch) { batch_ = std::move(batch); }
  /// A receiver acknowledged n frames; sends what the freed credits allow.
  void on_ack(const caf::actor_addr& receiver, uint32_t n);
  /// Frames to hand to a successor: unacknowledged, then pending, per stage. Empties the
  /// router.
  carried_frames take_carry();
  /// Queues a predecessor's frames ahead of anything else.
  void add_carry(carried_frames&& c);

  /// acked(f, note) is called for each frame a receiver acknowledges, before it is let go;
  /// note is the one route_all took with it (0: none).
  void on_acked(std::function<void(const frame&, uint64_t note)> acked) { acked_ = std::move(acked); }

  /// Drops every route and frame (and so every actor handle) the router holds.
  void clear() {
    edges_.clear();
    in_flight_ = 0;
  }

  /// Outputs wait for credit: the instance should not take more input.
  bool blocked() const;
  /// Nothing pending and nothing unacknowledged.
  bool idle() const;
  bool has_edges() const { return !edges_.empty(); }
  size_t edge_count() const { return edges_.size(); }
  uint64_t in_flight() const { return in_flight_; }

 private:
  // A frame the router holds, with its caller's note.
  struct routed {
    frame f;
    uint64_t note = 0;
  };
  // What this router keeps of a receiver it has sent to.
  struct sent_to {
    ring<routed> unacked;
    uint64_t unacked_bytes = 0;
    bool told_drained = false;
  };
  struct edge {
    size_t stage = 0;
    route_policy policy = route_policy::round_robin;
    std::shared_ptr<const route_receivers> receivers = std::make_shared<const route_receivers>();
    std::unordered_map<size_t, sent_to> sent;  // by index in receivers
    ring<routed> pending;
    size_t next = 0;  // round robin position
    size_t unacked(size_t i) const {
      auto it = sent.find(i);
      return it == sent.end() ? 0 : it->second.unacked.size();
    }
    // The indices of sent, in order.
    std::vector<size_t> sent_in_order() const;
  };
  // Index of the receiver that should get f now, or -1 if none can.
  int pick(edge& e, const frame& f);
  void flush(edge& e);
  edge* find_edge(size_t stage);
  void tell_drained(const edge& e, size_t i, sent_to& s);

  uint32_t window_;
  uint64_t window_bytes_ = UINT64_MAX;
  send_fn send_;
  drained_fn drained_;
  std::function<void(const frame&, uint64_t)> acked_;
  std::function<void(const receiver_actor&, std::vector<frame>&&)> batch_;
  std::vector<edge> edges_;
  uint64_t in_flight_ = 0;  // sum of unacked over all receivers
};

}  // namespace troupe
