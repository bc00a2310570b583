// Where a pipeline's stages run on a cluster, as pure functions of the pipeline file's
// placement fields and the members that are up. No I/O: the node reads the store, calls these,
// and writes what they return with a compare-and-swap.
//
// A stage with `node: NAME` runs there and nowhere else; one with no field runs on the node
// it was deployed through, and nowhere else (both are pinned: while that node is down the
// stage waits for it). `nodes: [A, B, ...]` runs on each of them that is up, and again on one
// that comes back. `node: any` runs on the live node running the fewest of the pipeline's
// stages among those with room for it, and moves to another when that node is down.
#pragma once

#include "records.hpp"

#include <troupe/error.hpp>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace troupe::cluster {

/// A stage as the pipeline file places it: stage_spec::nodes (empty: the node deployed
/// through; {"*"}: any node).
struct stage_request {
  std::string stage;
  std::vector<std::string> nodes;
};

/// The first placement of a pipeline deployed through node `self`. Every node a stage names
/// must be known and up; errors name the file (source), the stage and the node. `node: any`
/// stages go to the nodes of `room` (default: live), those that have room for them.
expected<std::vector<stage_placement>> place(const std::vector<stage_request>& stages, const std::string& self,
                                             const std::set<std::string>& known, const std::set<std::string>& live,
                                             const std::string& source,
                                             const std::optional<std::set<std::string>>& room = std::nullopt);

/// The record as it should be with these members up, if anything changes: stages leave nodes
/// that are down (a `node: any` stage moves, a stage on several nodes goes on on the live ones),
/// come back to listed nodes that are up again, and every node a stage left is fenced at
/// `epoch` (the revision the record was read at). A `node: any` stage also leaves a node that
/// said it has no room for it (`refused`, of the record's run), for a live one that did not.
/// changes and waiting say what and why, for the log.
struct replacement {
  placement_record next;
  std::vector<std::string> changes;
};
std::optional<replacement> replace(const placement_record& r, int64_t epoch, const std::set<std::string>& live,
                                   const std::map<std::string, room_refusal>& refused = {});

/// Stages that wait: placed on no live node, and allowed no other; or on a node that has no
/// room for them.
std::vector<std::string> waiting(const placement_record& r, const std::set<std::string>& live,
                                 const std::map<std::string, room_refusal>& refused = {});

/// What node may go on running while it cannot keep its lease (others may take its stages
/// meanwhile): the record without node on every stage that could run elsewhere.
placement_record self_fenced(const placement_record& r, const std::string& node);

/// The pipeline is over: every node its stages run on finished its part of this run (while
/// stopping, a node that is down counts as finished: its part ended with it).
bool complete(const placement_record& r, const std::map<std::string, std::string>& done,
              const std::set<std::string>& live);

}  // namespace troupe::cluster
