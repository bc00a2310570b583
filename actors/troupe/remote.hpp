// The two ends of an edge that crosses nodes, as actors of the pipeline's manager.
//
// Another node's share of a stage is one slot here per replica there, each run by a
// remote_stage actor: local instances send it frames as to any receiver; it numbers them and
// sends them over the data link to that node, and acknowledges each frame to its sender
// once that node says the stage took it and handed on its outputs (so acknowledgements stay
// end to end, in each sender's order). When the link reconnects it sends again whatever is
// unacknowledged.
//
// A local stage fed from other nodes has one ingress actor: it takes the frames the data
// link brings, routes them to the stage's replicas with the stage's policy and window (so
// replacement, replay and draining work as for local senders), and tells the link which
// numbers its replicas acknowledged. A number it already holds (sent again after a
// reconnect) is not routed twice.
#pragma once

#include <troupe/instance.hpp>
#include <troupe/link.hpp>
#include <troupe/messages.hpp>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace troupe {

struct remote_stage_setup {
  size_t slot = 0;
  uint64_t generation = 1;
  supervisor_actor manager;
  std::shared_ptr<data_plane> plane;
  std::string node, address;  // the stage's node, and its data address
  std::string pipeline, stage;
};

/// Runs the slot as instance_actor: reports (report_atom, instance_report) running once
/// started, stopped on (stop_atom); sends its inputs to the stage's node.
instance_actor spawn_remote_stage(caf::actor_system& sys, remote_stage_setup setup);

/// (fence_atom, ingress_fence): the nodes an ingress takes frames from now, the slots of their
/// shares (they say drained), and per node the epoch at or below which its frames are dropped.
using fence_atom = caf::atom_constant<caf::atom("fence")>;

struct ingress_fence {
  std::set<std::string> senders;           // the nodes running the stages that feed it
  std::vector<size_t> upstream_slots;      // the remote slots feeding the stage, for drained
  std::map<std::string, uint64_t> epochs;  // node -> frames under this epoch or older are dropped
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ingress_fence& x) {
  return f(caf::meta::type_name("ingress_fence"), x.senders, x.upstream_slots, x.epochs);
}

struct ingress_setup {
  std::shared_ptr<data_plane> plane;
  std::string run;  // the pipeline's run, for logs
  ingress_fence fence;
  uint32_t window = default_window;
  uint64_t window_bytes = default_window_bytes;
  route_table routes;  // the stage's edge as it is now
};

/// The ingress's protocol, from the manager unless noted:
///   (routes_atom, route_table)     the stage's edge, as an upstream instance takes it
///   (fence_atom, ingress_fence)    the nodes it takes frames from now
///   (ack_atom, uint32_t)           from the stage's replicas (sender_actor)
///   (stop_atom)                    quit
///   (link_frames_atom, link_batch)  frames from other nodes, from the data link
using ingress_actor = sender_actor::extend_with<link_ingress_actor>::extend<
    caf::reacts_to<routes_atom, route_table>, caf::reacts_to<fence_atom, ingress_fence>, caf::reacts_to<stop_atom>>;

ingress_actor spawn_ingress(caf::actor_system& sys, ingress_setup setup);

}  // namespace troupe
