// Pipelines a cluster node runs: deployed, scaled and stopped through the admin interface.
// The actor system lives here; callers see plain values (the network side of a node keeps
// out of CAF).
#pragma once

#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace troupe::cli {

struct hosted_instance {
  std::string pipeline, stage, instance, mode, state;
  uint64_t generation = 0, frames_in = 0, frames_out = 0, restarts = 0;
};

class pipeline_host {
 public:
  /// node names the node in logs and metrics; plugin_paths are searched before the defaults.
  pipeline_host(std::string node, std::vector<std::string> plugin_paths);
  /// Stops every pipeline still running (bounded), then the actor system.
  ~pipeline_host();
  pipeline_host(const pipeline_host&) = delete;
  pipeline_host& operator=(const pipeline_host&) = delete;

  /// Runs the pipeline file's text (source: the file name it came from, for messages).
  /// Returns an error naming what was wrong, or empty with the pipeline's name in `name`.
  std::string deploy(const std::string& text, const std::string& source, std::string& name);
  /// Empty, or why not.
  std::string scale(const std::string& pipeline, const std::string& stage, uint32_t replicas);
  std::string stop(const std::string& pipeline);
  std::vector<hosted_instance> instances() const;
  std::shared_ptr<prometheus::Registry> registry() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::cli
