// What the benchmarks share: a frame over a payload, an upstream feeder that keeps to the
// credits a stage would, and a sink that acknowledges like a sink stage.
#pragma once

#include <troupe/messages.hpp>

#include <caf/all.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace troupe::bench {

using go_atom = caf::atom_constant<caf::atom("go")>;
using done_atom = caf::atom_constant<caf::atom("benchdone")>;

/// A frame of stream 0 whose bytes are the whole payload (shared, not copied).
inline frame frame_over(const std::shared_ptr<const buffer>& payload, uint64_t seq = 0, std::string type = "bytes") {
  frame f;
  f.seq = seq;
  f.type = std::move(type);
  f.payload = payload_slice(payload);
  return f;
}

/// Feeds `to` as an upstream instance would, once told (go_atom): at most `window` frames
/// unacknowledged, `n` frames in all (UINT64_MAX: until stopped).
inline caf::behavior feeder(caf::event_based_actor* self, receiver_actor to, std::shared_ptr<const buffer> payload,
                            uint32_t window, uint64_t n) {
  auto sent = std::make_shared<uint64_t>(0);
  auto send_up_to = [=](uint32_t k) {
    for (uint32_t i = 0; i < k && *sent < n; ++i) self->send(to, frame_atom::value, frame_over(payload, (*sent)++));
  };
  return {
      [=](go_atom) { send_up_to(window); },
      [=](ack_atom, uint32_t k) { send_up_to(k); },
  };
}

/// Takes frames like a sink stage: acknowledges each message's frames to their sender, then
/// calls took(how many).
inline caf::behavior acking_sink(caf::event_based_actor* self, std::function<void(uint64_t)> took) {
  auto take = [=](uint32_t n) {
    self->send(caf::actor_cast<caf::actor>(self->current_sender()), ack_atom::value, n);
    took(n);
  };
  return {[=](frame_atom, const frame&) { take(1); },
          [=](frames_atom, const frame_batch& b) { take(static_cast<uint32_t>(b.frames.size())); }};
}

}  // namespace troupe::bench
