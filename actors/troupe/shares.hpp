// Other nodes' shares of a pipeline placed across nodes, apart from the actors that run them.
//
// A stage of such a pipeline runs here, elsewhere, or both; `planned_stage::elsewhere` names
// the other nodes running a share of it. When the pipeline is placed anew, `share_changes`
// says for each stage what that means here: shares of nodes that run it no more (what they
// did not acknowledge goes to the rest), shares of nodes new to it, and whether the stage
// arrives here or leaves. The manager stops, spawns and reroutes; this reads two plans.
#pragma once

#include <troupe/pipeline.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace troupe {

/// How a new placement changes one stage, seen from this node.
struct share_change {
  size_t stage = 0;
  std::vector<std::string> gone;   // nodes that ran a share of it and run none now
  std::vector<std::string> added;  // nodes that run a share of it now and did not
  bool arrives = false;            // it runs here now and did not
  bool leaves = false;             // it ran here and does not now (it runs elsewhere, or nowhere yet)
  uint64_t generation = 0;         // of the instances a move starts: the update's, else 0

  bool operator==(const share_change&) const = default;
};

/// The stages whose placement differs between `old` and `next` (plans of the same pipeline:
/// the same stages in the same order), in stage order. `moves` gives, by stage name, the
/// generation the instances of a moved stage start at.
std::vector<share_change> share_changes(const plan& old, const plan& next,
                                        const std::map<std::string, uint32_t>& moves);

/// The other nodes that run some part of the pipeline.
std::set<std::string> participants(const plan& p);

}  // namespace troupe
