// The pipeline file (pipeline.yaml) and the plan the manager runs.
//
// load_pipeline checks the file's shape; plan_pipeline resolves it against a catalog:
// plugins found, configs valid, manifest dependencies present and in range, and a start
// order (consumers before producers, dependencies before dependents) with cycles named.
#pragma once

#include <troupe/catalog.hpp>
#include <troupe/manifest.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace troupe {

/// At most max_restarts restarts within period; backoff doubles from initial to max, with
/// jitter; the count resets after stable_after without a loss.
struct restart_policy {
  uint32_t max_restarts = 5;
  double period_s = 60;
  uint32_t backoff_initial_ms = 100;
  uint32_t backoff_max_ms = 5000;
  double stable_after_s = 30;
};

enum class route_policy { round_robin, least_loaded, by_stream };
const char* to_string(route_policy p);

/// The most replicas a stage may have on one node: in a pipeline file, and scaled while it
/// runs.
constexpr uint32_t max_replicas = 1024;

struct stage_spec {
  std::string name;
  std::string plugin;
  std::vector<config_entry> config;
  uint32_t replicas = 1;
  std::optional<exec_mode> mode;  // default: the manifest's
  std::optional<bool> strict;     // `enforce: strict` (true) or `declared` (false); default: the manifest's
  restart_policy restart;
  route_policy routing = route_policy::round_robin;
  std::optional<uint32_t> deadline_ms;  // default: the manifest's
  double idle_release_s =
      0;  // isolated: its worker ends after this long without input, and starts on the next; 0: never
  resource_limits resources;  // tighter limits than the plugin's: those named in resources_given
  std::set<std::string> resources_given;
  // On a cluster, the nodes it runs on, `replicas` instances on each; if one dies, the others
  // take its share. Empty: the node deployed to; {"*"}: any one node (another if it dies).
  std::vector<std::string> nodes;
  int line = 0;
};

struct edge_spec {
  std::string from, to;
  int line = 0;
};

/// Credits per receiving instance unless the pipeline file says otherwise: many small frames
/// (they travel in batches, so a wide window is what makes them cheap), few large ones.
constexpr uint32_t default_window = 256;
constexpr uint64_t default_window_bytes = uint64_t{64} << 20;

struct pipeline_spec {
  std::string path;
  std::string name;
  uint32_t window = default_window;              // unacknowledged frames per receiving instance
  uint64_t window_bytes = default_window_bytes;  // ... and their payload bytes (one frame always goes)
  uint32_t dead_letter_after = 3;                // losses on one frame before it is given up
  std::string dead_letters;                      // file for dead-letter records; empty: none
  int32_t priority = 0;  // a node that is full gives replicas of lower ones back for higher ones
  std::vector<stage_spec> stages;
  std::vector<edge_spec> edges;
};

expected<pipeline_spec> load_pipeline(const std::string& path);

struct planned_stage {
  stage_spec spec;
  troupe::manifest manifest;
  config_values config;
  exec_mode mode = exec_mode::embedded;
  uint32_t deadline_ms = 0;
  std::vector<size_t> upstream;        // indices into plan::stages
  std::vector<size_t> downstream;      // likewise
  std::vector<std::string> nodes;      // the nodes it runs on, when placed
  std::vector<std::string> elsewhere;  // of those, the ones other than this node
  bool remote = false;                 // no instance of it here: it is only sent to (manifest: a stand-in)
  // The media types it gives with its config and inputs (nullopt: any, or not declared).
  std::optional<std::vector<std::string>> gives;
  bool is_source() const { return upstream.empty(); }
};

struct plan {
  std::string path;
  std::string name;
  uint32_t window = default_window;
  uint64_t window_bytes = default_window_bytes;
  uint32_t dead_letter_after = 3;
  std::string dead_letters;
  int32_t priority = 0;
  std::vector<planned_stage> stages;
  std::vector<size_t> start_order;  // stop in reverse
  const planned_stage* find(const std::string& stage) const;
};

/// Where a cluster runs each stage: stage name -> the nodes running it, as seen from node
/// `self`. A stage not named runs on `self`.
struct placement {
  std::string self;
  std::map<std::string, std::vector<std::string>> nodes_of;
};

/// The media types an edge carries: what its producer gives (`gives`) and its consumer takes;
/// nullopt: any; empty: they do not meet.
std::optional<std::vector<std::string>> edge_types(const planned_stage& from, const planned_stage& to);

/// A stage as the node running it found it, for checking edges across nodes: its plugin's
/// declared sides and the stage's config (a {field} of an output type reads it).
struct stage_types {
  std::string node, plugin, manifest;
  media_side inputs, outputs;
  config_values config;
};

/// The edges of a pipeline placed across nodes, checked as plan_pipeline checks those among a
/// node's own stages (types that cannot meet, metadata a consumer needs and its producer does
/// not give): `types` has each stage, by name, as its node found it; a stage missing from it
/// is not checked. Empty, or why not, naming the edge, the stages and their nodes.
caf::error check_placed_edges(const pipeline_spec& spec, const std::map<std::string, stage_types>& types);

/// Without a placement every stage runs here. With one, a stage on another node is only
/// named: its plugin, config and manifest are that node's to check.
expected<plan> plan_pipeline(const pipeline_spec& spec, const catalog& plugins, const placement* where = nullptr);

}  // namespace troupe
