// node.yaml: the settings of one cluster member, read and checked.
#pragma once

#include <error.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace troupe::cluster {

/// node.yaml: one member of a cluster.
struct node_config {
  std::string path;
  std::string name;
  std::string listen;     // host:port to listen on for peers
  std::string advertise;  // host:port peers reach it at; default: listen
  std::string data;       // host:port to listen on for frames; default: listen's port + 1
  std::string advertise_data;  // where peers send frames: advertise's host, data's port
  std::string admin;    // host:port for the CLI
  std::string metrics;  // host:port for /metrics; empty: none
  std::vector<std::string> seeds;
  std::vector<std::string> plugin_paths;
  std::string token;
  uint32_t heartbeat_ms = 500;
  uint32_t down_after_ms = 3000;
};

/// Reads and checks node.yaml; errors name the file, line and field.
expected<node_config> load_node_config(const std::string& path);

}  // namespace troupe::cluster
