// What the cluster keeps in its store (etcd), under one prefix per cluster:
//
//   <root>nodes/<node>            node_info, JSON; written at each registration, kept
//   <root>members/<node>          the node's lease id; under that lease: a member is up while
//                                 its key exists, and down for everyone at once when it goes
//   <root>pipelines/<pipeline>    placement_record, JSON; changed only by a transaction that
//                                 compares the revision it read; its mod revision is the
//                                 placement's epoch
//   <root>leaders/<pipeline>      the node that re-places the pipeline, under that node's lease
//   <root>parts/<pipeline>/<node> the run whose part finished on that node
//   <root>refusals/<pipeline>/<node>  room_refusal, JSON, under the node's lease: stages placed
//                                 there that it has no room for (its capacity), in that run
//
// Records are values: parsed from and written to JSON (nlohmann-json); a record that does not
// parse is an error naming its key and what is wrong, and is left alone.
#pragma once

#include "etcd.hpp"

#include <troupe/error.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace troupe::cluster {

/// The keys of one cluster in the store.
struct keyspace {
  std::string root;  // "/troupe/<cluster>/"
  explicit keyspace(const std::string& cluster) : root("/troupe/" + cluster + "/") {}
  std::string node(const std::string& n) const { return root + "nodes/" + n; }
  std::string member(const std::string& n) const { return root + "members/" + n; }
  std::string pipeline(const std::string& p) const { return root + "pipelines/" + p; }
  std::string leader(const std::string& p) const { return root + "leaders/" + p; }
  std::string part(const std::string& p, const std::string& n) const { return root + "parts/" + p + "/" + n; }
  std::string refusal(const std::string& p, const std::string& n) const { return root + "refusals/" + p + "/" + n; }
};

/// A node's word that it has no room (capacity) for stages placed on it: the leader moves
/// `node: any` ones elsewhere. Withdrawn by the node once it takes them, or they leave it.
struct room_refusal {
  std::string run;                  // the pipeline's run it is about
  std::vector<std::string> stages;  // the stages it cannot take
  std::string why;                  // the admission's refusal: node, stage and shortfall
};
std::string to_json(const room_refusal& r);
expected<room_refusal> parse_room_refusal(const std::string& key, const std::string& text);

/// How a node is reached.
struct node_info {
  std::string name, peer, admin, metrics, data;
};
std::string to_json(const node_info& n);
expected<node_info> parse_node_info(const std::string& key, const std::string& text);

/// One stage of a placed pipeline.
struct stage_placement {
  std::string stage;
  std::vector<std::string> allowed;  // the nodes the file allows, in its order (not for any)
  bool any = false;                  // node: any
  std::vector<std::string> nodes;    // where it runs now; empty: nowhere for now (it waits)
  uint32_t moves = 0;                // times it started anew elsewhere: its generations start past it
  /// The stage may run on a node other than `node` (a node that loses its lease stops it).
  bool movable_from(const std::string& node) const { return any || allowed.size() != 1 || allowed[0] != node; }
};

enum class pipeline_state { running, stopping, finished };
const char* to_string(pipeline_state s);

/// A pipeline placed on the cluster: its file, and where each stage runs.
struct placement_record {
  std::string pipeline, run, source, text, deployed_to;
  pipeline_state state = pipeline_state::running;
  std::vector<stage_placement> stages;
  /// node -> the epoch at which stages moved away from it: what it sends under that epoch or
  /// an older one is dropped.
  std::map<std::string, int64_t> fences;

  const stage_placement* find(const std::string& stage) const;
  /// Some stage runs on node now.
  bool runs_on(const std::string& node) const;
  /// Every node some stage runs on now.
  std::set<std::string> nodes() const;
};
std::string to_json(const placement_record& r);
expected<placement_record> parse_record(const std::string& key, const std::string& text);

/// The cluster as one read of the store shows it.
struct cluster_view {
  struct pipeline {
    placement_record record;
    int64_t epoch = 0;                            // the record's mod revision
    std::string leader;                           // empty: none now
    std::map<std::string, std::string> done;      // node -> the run whose part finished there
    std::map<std::string, room_refusal> refused;  // node -> what it has no room for
    /// The stages node refused for want of room in the record's run (empty: none).
    const room_refusal* refused_by(const std::string& node) const;
  };
  int64_t revision = 0;
  std::map<std::string, node_info> nodes;  // every node that ever registered
  std::map<std::string, int64_t> members;  // the members up now: node -> lease
  std::map<std::string, pipeline> pipelines;

  bool up(const std::string& node) const { return members.count(node) > 0; }
  std::set<std::string> live() const;
};

/// Reads a range over the keyspace's root; records that do not parse go to problems (named).
cluster_view read_view(const keyspace& keys, const etcd_range& range, std::vector<std::string>& problems);

}  // namespace troupe::cluster
