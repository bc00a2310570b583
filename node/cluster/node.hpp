// A cluster member: `troupe node`. It serves the Peer and Admin interfaces
// (schema/node.capnp), runs the pipelines it is given, and keeps the cluster's view of who
// is up and where each stage runs.
#pragma once

#include "node_config.hpp"

namespace troupe::cluster {

/// Runs the node until SIGINT or SIGTERM; returns the process exit status (errors that stop
/// it from starting are printed, naming the config file).
int serve(const node_config& config);

}  // namespace troupe::cluster
