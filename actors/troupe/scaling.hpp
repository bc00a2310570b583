// Scaling a stage's replicas on this node, apart from the actors that carry it out.
//
// `scale_step` says what asking for n replicas means given the replicas the stage has: how
// many to add, and which to retire (the newest first). A retired replica drains before it
// stops: it takes nothing new, finishes what it holds, and waits until the replicas upstream
// of it say they sent it nothing more (see manager_changes.cpp). Replicas that other nodes
// run are theirs to scale; quarantined ones are not counted. While a replica is still
// draining from an earlier change, the stage is not scaled again.
#pragma once

#include <troupe/error.hpp>
#include <troupe/pipeline.hpp>  // max_replicas

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace troupe {

/// A replica of the stage as scaling sees it.
struct replica_view {
  size_t slot = 0;
  bool here = true;  // runs on this node (otherwise another node's share)
  bool retiring = false;
  bool quarantined = false;
};

/// What scaling a stage to n replicas does.
struct scale_plan {
  uint32_t from = 0;           // active replicas here before
  uint32_t add = 0;            // replicas to start
  std::vector<size_t> retire;  // slots to drain and stop, newest first
};

/// The step from `replicas` (in the order they were added) to n active replicas here;
/// errc::refused for n outside [1, max_replicas], errc::busy while one still drains. The
/// stage's name is for the errors.
expected<scale_plan> scale_step(const std::string& stage, const std::vector<replica_view>& replicas, uint32_t n);

}  // namespace troupe
