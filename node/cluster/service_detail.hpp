// What the node's peer and admin services share (services.cpp, admin_changes.cpp): refusals,
// and placements, media sides and node lists on the wire. Internal to the cluster library.
#pragma once

#include "node.hpp"
#include "placement.hpp"

#include <node.capnp.h>

#include <kj/exception.h>

#include <set>
#include <string>

namespace troupe::cluster::service_detail {

/// A call refused by node n, saying why.
kj::Exception refusal(const cluster_node& n, const std::string& why);
void write_placement(capnp::List<wire::StagePlacement>::Builder list, const pipeline_placement& pl);
void write_info(wire::NodeInfo::Builder b, const node_info& n, int64_t lease);
/// "a, b, c"
std::string names(const std::set<std::string>& s);
void write_side(wire::MediaSide::Builder b, const media_side& s);
media_side read_side(wire::MediaSide::Reader r);

}  // namespace troupe::cluster::service_detail
