// The troupe subcommands. Each returns the process exit status.
#pragma once

#include <cstddef>
#include <cstdint>
#include <troupe/worker_landlock.hpp>

#include <string>
#include <vector>

namespace troupe::cli {

struct common_options {
  std::string log_level = "info";
  std::vector<std::string> plugin_paths;  // searched before the default paths
};

struct run_options {
  std::string pipeline;
  std::string metrics_address;  // empty: no /metrics
  std::string report_path;      // empty: no JSON report
  std::string events_path;      // empty: events are not written out
  double timeout_s = 0;         // 0: none
  bool progress = true;         // live progress when stdout is a terminal
  std::string scale_stage;      // SIGUSR1 adds a replica to it, SIGUSR2 removes one
  bool fail_on_errors = false;  // exit 3 if a frame failed or was given up on
  bool instances = false;       // a line per instance in the summary, however many there are
};

/// `troupe worker`: started by a node for an isolated instance, never by users.
struct worker_options {
  std::string manifest;  // plugin.yaml of the plugin to serve
  uint64_t generation = 1;
  std::string tag;  // log tag of the instance
  int parent = 0;   // the node's pid: the worker ends if its node is gone
  size_t region_bytes = 0;
  std::string cgroup;      // cgroup.procs files to join before the plugin is loaded, ':'-separated
  landlock::grants files;  // paths it may read, or write, besides the system's and its scratch directory
};

/// `troupe conformance`: the plugin contract, checked under both adapters.
struct conformance_options {
  std::string plugin;               // name, found on the plugin paths
  std::vector<std::string> config;  // KEY=VALUE for the plugin under test
  std::string source = "testsrc";   // where known inputs come from (a source plugin)
  uint32_t frames = 8;              // known inputs, or a source's turns
};

/// `troupe new-plugin`: an out-of-tree plugin folder to start from.
struct new_plugin_options {
  std::string name;
  std::string kind = "filter";  // filter, source or sink
  std::string dir;              // empty: ./<name>
};

struct node_options {
  std::string config;       // node.yaml
  bool check_only = false;  // check the config, print it, exit
};

/// troupe status / deploy / scale / stop: a node's admin calls.
struct admin_options {
  std::string node;  // admin address of the node (status: of any node)
  std::string token;
  std::string token_file;        // if set, the token is its first line
  std::string ca;                // the cluster's CA (PEM file): TLS to the node; empty: plain
  std::string tls_name;          // the name the node's certificate must carry; empty: the host of `node`
  std::string pipeline;          // deploy: the pipeline file; scale, stop: the pipeline's name
  std::string stage;             // scale
  uint32_t replicas = 1;         // scale
  std::string on;                // scale: the node the stage runs on (checked), empty: wherever
  std::string output = "table";  // status, events: table or json
  bool follow = false;           // events: keep printing
  std::string since;             // events: only those of the last DURATION ("30s", "10m", "2h")
};

int run(const common_options& common, const run_options& opts);
int cluster_deploy(const common_options& common, const admin_options& opts);
int cluster_scale(const common_options& common, const admin_options& opts);
int cluster_stop(const common_options& common, const admin_options& opts);
int run_node(const common_options& common, const node_options& opts);
int cluster_status(const common_options& common, const admin_options& opts);
int cluster_events(const common_options& common, const admin_options& opts);
int conformance(const common_options& common, const conformance_options& opts);
int serve_worker(const worker_options& opts);
int new_plugin(const new_plugin_options& opts);
/// troupe plugins [NAME] [--capability C] [--output table|json].
struct plugins_query {
  std::string output = "table";
  std::string name;        // one plugin, described in full
  std::string capability;  // only plugins with this capability, or taking or giving this media type
};
int list_plugins(const common_options& common, const plugins_query& q);
int validate(const common_options& common, const std::string& pipeline);

/// Sets up spdlog (stderr, level from the option); false if the level is unknown.
bool setup_logging(const std::string& level);

}  // namespace troupe::cli
