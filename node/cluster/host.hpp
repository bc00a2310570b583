// Pipelines a cluster node runs: deployed, scaled and stopped through the admin interface.
// The actor system lives here; callers see plain values and errors as values (errc codes),
// never an actor (the network side of a node keeps out of CAF's actors).
#pragma once

#include <troupe/admission.hpp>
#include <troupe/lifecycle.hpp>

#include <troupe/error.hpp>
#include <troupe/pipeline.hpp>

#include <prometheus/registry.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace troupe {
class data_plane;
class event_log;
}  // namespace troupe

namespace troupe::cluster {

/// A pipeline placed across nodes: each stage's node, each node's data address.
struct pipeline_placement {
  std::map<std::string, std::vector<std::string>> nodes_of;  // stage -> the nodes running it
  std::map<std::string, std::string> data_address;
  std::string run;                         // this deployment's name on the data links, the same on every node
  std::map<std::string, uint32_t> moves;   // stage -> times placed again after a node died
  uint64_t epoch = 0;                      // the placement's revision (see manager_setup)
  std::map<std::string, uint64_t> fences;  // node -> the revision it lost stages at

  /// Some stage runs on `node`.
  bool runs_on(const std::string& node) const {
    for (auto& [stage, nodes] : nodes_of)
      if (std::find(nodes.begin(), nodes.end(), node) != nodes.end()) return true;
    return false;
  }
};

/// A stage as the node running it found it: its plugin's version and what it needs.
struct stage_part {
  std::string stage, plugin, version;
  std::vector<std::pair<std::string, std::string>> needs;  // plugin, version range
  stage_types types;                                       // what it takes and gives
};

struct hosted_instance {
  std::string pipeline, stage, instance;
  exec_mode mode = exec_mode::embedded;
  instance_status state = instance_status::loaded;
  uint64_t generation = 0, frames_in = 0, frames_out = 0, restarts = 0;
  failure_class failure = failure_class::none;  // the last failure's class
  std::string last_error;                       // and its error; empty: none
  uint64_t errors = 0, dead_letters = 0;
  double p50_ms = 0, p99_ms = 0;  // processing time per input
};

class pipeline_host {
 public:
  /// node names the node in logs and metrics; plugin_paths are searched before the defaults;
  /// the node admits pipelines and replicas up to capacity (admission.hpp).
  pipeline_host(std::string node, std::vector<std::string> plugin_paths, std::shared_ptr<data_plane> plane = nullptr,
                node_capacity capacity = machine_capacity());
  /// Stops every pipeline still running (bounded), then the actor system.
  /// Drops every data connection of the node, both ways: senders send again what is not
  /// acknowledged (see data_plane::cut_connections).
  void reset_links();
  ~pipeline_host();
  pipeline_host(const pipeline_host&) = delete;
  pipeline_host& operator=(const pipeline_host&) = delete;

  /// Runs the pipeline file's text (source: the file name it came from, for messages).
  /// Returns the pipeline's name, or an error naming what was wrong (the code of the file's
  /// problem, or errc::refused: already running here, no data plane for a placement).
  /// With a placement, only this node's stages run here, and frames for the others go to
  /// their nodes; check_only plans and loads but starts nothing. A placement for the run
  /// this node already runs part of moves stages: those now placed here start here, those
  /// placed on other nodes are sent their frames there, and if none is placed here any more
  /// the part here stops. Thread-safe; it may wait on the actor system.
  expected<std::string> deploy(const std::string& text, const std::string& source,
                               const pipeline_placement* placed = nullptr, bool check_only = false,
                               std::vector<stage_part>* parts = nullptr);
  /// A pipeline file's name and placement: stage -> the nodes the file names (see
  /// stage_spec::nodes).
  struct outline {
    std::string name;
    std::vector<std::pair<std::string, std::vector<std::string>>> stages;
  };
  expected<outline> read_placement(const std::string& text, const std::string& source);
  /// The pipeline file's edges across the nodes whose parts are given (node -> its stages):
  /// empty, or why an edge's types or metadata do not meet (see check_placed_edges).
  std::string check_edges(const std::string& text, const std::string& source,
                          const std::map<std::string, std::vector<stage_part>>& by_node);
  /// Pipeline runs whose part here has ended since the last call: (pipeline, run).
  std::vector<std::pair<std::string, std::string>> finished_parts();
  /// The run of the pipeline's part here while it runs; empty if none runs.
  std::string running(const std::string& pipeline) const;
  /// Asks the pipeline's manager here for `replicas` instances of `stage` (see
  /// scale_stage): errc::not_found if the pipeline does not run here.
  expected<void> scale(const std::string& pipeline, const std::string& stage, uint32_t replicas);
  /// Drains the pipeline's part here, then stops it: errc::not_found if none runs here.
  expected<void> stop(const std::string& pipeline);
  std::vector<hosted_instance> instances() const;
  /// Its instances' series (and troupe_build_info), for the node's exposer.
  std::shared_ptr<prometheus::Collectable> instance_metrics() const;
  /// The node's capacity and what its pipelines hold of it, read at each scrape:
  /// troupe_node_capacity_{memory_bytes,cpu_cores} and troupe_node_requested_{memory_bytes,cpu_cores}.
  std::shared_ptr<prometheus::Collectable> capacity_metrics() const;
  /// What happened to the pipelines here (every manager of the node records into it).
  const event_log& events() const;
  event_log& events();

  struct impl;  // defined in host.cpp only

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::cluster
