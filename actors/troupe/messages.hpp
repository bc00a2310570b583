// The messages between instance actors, the manager and whoever drives a pipeline.
// All are local (never serialised): frames cross nodes through the network layer instead.
// Each is inspectable all the same, so that CAF can print one (an unexpected message, a log).
#pragma once

#include <troupe/dead_letters.hpp>
#include <troupe/frame.hpp>
#include <troupe/pipeline.hpp>
#include <troupe/stats.hpp>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace troupe {

using start_atom = caf::atom_constant<caf::atom("start")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using frame_atom = caf::atom_constant<caf::atom("frame")>;
using ack_atom = caf::atom_constant<caf::atom("ack")>;
using routes_atom = caf::atom_constant<caf::atom("routes")>;
using upstream_done_atom = caf::atom_constant<caf::atom("updone")>;
using report_atom = caf::atom_constant<caf::atom("report")>;
using lost_atom = caf::atom_constant<caf::atom("lost")>;
using batch_atom = caf::atom_constant<caf::atom("batch")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using completed_atom = caf::atom_constant<caf::atom("completed")>;
using stopped_atom = caf::atom_constant<caf::atom("stopped")>;
using skip_atom = caf::atom_constant<caf::atom("skip")>;
using scale_atom = caf::atom_constant<caf::atom("scale")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using drained_atom = caf::atom_constant<caf::atom("drained")>;
using reload_atom = caf::atom_constant<caf::atom("reload")>;
using end_atom = caf::atom_constant<caf::atom("end")>;
using frames_atom = caf::atom_constant<caf::atom("frames")>;
using pause_atom = caf::atom_constant<caf::atom("pause")>;
using finished_atom = caf::atom_constant<caf::atom("finished")>;

/// Several inputs from one sender in one message (frames_atom), taken in order as if each
/// had come as (frame_atom, frame): a sender whose credits free up sends what they allow at
/// once.
struct frame_batch {
  std::vector<frame> frames;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, frame_batch& x) {
  return f(caf::meta::type_name("frame_batch"), x.frames);
}

/// Takes a stage's inputs: an instance, or another node's replica of the stage (a remote
/// stage, which sends them there).
///   (frame_atom, frame), (frames_atom, frame_batch)
///       inputs, in order; each is acknowledged to its sender (ack_atom) once taken on
///   (drained_atom, size_t slot)
///       the sender in slot has nothing unacknowledged here and sends nothing more (this
///       receiver is being scaled away or retired, see edge_route)
using receiver_actor = caf::typed_actor<caf::reacts_to<frame_atom, frame>, caf::reacts_to<frames_atom, frame_batch>,
                                        caf::reacts_to<drained_atom, size_t>>;

/// Sends a stage's inputs: an instance, or the ingress of frames from other nodes.
///   (ack_atom, uint32_t n)   its receiver took n more of the frames it was sent, in order
using sender_actor = caf::typed_actor<caf::reacts_to<ack_atom, uint32_t>>;

/// One replica of a downstream stage, as its senders see it: an invalid handle marks a replica
/// that is not running. A draining receiver (being scaled away or retired) gets no new frames;
/// once every frame sent to it is acknowledged, the sender tells it so (drained).
struct route_receiver {
  receiver_actor handle;
  bool draining = false;
};

using route_receivers = std::vector<route_receiver>;

/// Where one downstream stage's frames go: its receivers, by replica index. The list is shared
/// by every sender it goes to (and kept by their routers): a stage of a thousand replicas
/// behind one of a thousand holds one list, not a thousand.
struct edge_route {
  size_t stage = 0;
  route_policy policy = route_policy::round_robin;
  std::shared_ptr<const route_receivers> receivers = std::make_shared<const route_receivers>();
};

/// An edge to these receivers, in a list of its own.
inline edge_route make_edge(size_t stage, route_policy policy, route_receivers receivers) {
  return {stage, policy, std::make_shared<const route_receivers>(std::move(receivers))};
}

struct route_table {
  std::vector<edge_route> edges;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, route_receiver& x) {
  return f(caf::meta::type_name("route_receiver"), x.handle, x.draining);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, edge_route& x) {
  // The list goes by value; a loaded one is shared from then on.
  route_receivers receivers;
  if constexpr (Inspector::reads_state) receivers = *x.receivers;
  return f(caf::meta::type_name("edge_route"), x.stage, x.policy, receivers,
           caf::meta::load_callback([&]() -> caf::error {
             x.receivers = std::make_shared<const route_receivers>(std::move(receivers));
             return caf::none;
           }));
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, route_table& x) {
  return f(caf::meta::type_name("route_table"), x.edges);
}

/// Outputs an instance had not yet delivered (sent but unacknowledged, or not sent) when it
/// was lost, per downstream stage, in order; its successor sends them on.
struct carried_frames {
  std::vector<std::pair<size_t, std::vector<frame>>> per_stage;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, carried_frames& x) {
  return f(caf::meta::type_name("carried_frames"), x.per_stage);
}

/// An instance's lifecycle transition, for its manager.
struct instance_report {
  size_t slot = 0;
  uint64_t generation = 0;
  instance_state state = instance_state::loaded;
  failure_class failure = failure_class::none;
  std::string error;
  carried_frames carry;
  std::optional<frame_key> culprit;  // the input being processed when it was lost
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, instance_report& x) {
  // The culprit as a flag and a key.
  bool has_culprit = x.culprit.has_value();
  frame_key culprit = x.culprit.value_or(frame_key{});
  auto load = caf::meta::load_callback([&]() -> caf::error {
    x.culprit = has_culprit ? std::optional<frame_key>(culprit) : std::nullopt;
    return caf::none;
  });
  return f(caf::meta::type_name("instance_report"), x.slot, x.generation, x.state, x.failure, x.error, x.carry,
           has_culprit, culprit, load);
}

/// Which instance says something to its manager: its slot and generation.
struct instance_ref {
  size_t slot = 0;
  uint64_t generation = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, instance_ref& x) {
  return f(caf::meta::type_name("instance_ref"), x.slot, x.generation);
}

/// Supervises instances: the manager; in tests, whatever stands in for it. From an instance:
///   (report_atom, instance_report)   a lifecycle transition (started, running, stopping,
///                                    stopped, or failed with its class)
///   (finished_atom, instance_ref)    its stream is finished: all input processed, every
///                                    output acknowledged
///   (drained_atom, instance_ref)     draining: no input will come, and all it took was
///                                    processed and delivered
using supervisor_actor =
    caf::typed_actor<caf::reacts_to<report_atom, instance_report>, caf::reacts_to<finished_atom, instance_ref>,
                     caf::reacts_to<drained_atom, instance_ref>>;

/// A stage's plugin to load again: from its manifest as it is on disk now (or another
/// manifest of the same plugin), with some config fields changed.
struct reload_request {
  std::string stage;
  std::string manifest;                                     // plugin.yaml to load; empty: the stage's own, read again
  std::vector<std::pair<std::string, std::string>> config;  // fields to change
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, reload_request& x) {
  return f(caf::meta::type_name("reload_request"), x.stage, x.manifest, x.config);
}

/// What the driver of a pipeline hears from the manager when it is over.
struct pipeline_outcome {
  bool ok = false;
  std::string reason;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, pipeline_outcome& x) {
  return f(caf::meta::type_name("pipeline_outcome"), x.ok, x.reason);
}

}  // namespace troupe
