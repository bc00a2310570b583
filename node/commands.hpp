// The troupe subcommands. Each returns the process exit status.
#pragma once

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
  double timeout_s = 0;         // 0: none
  bool progress = true;         // live progress when stdout is a terminal
};

int run(const common_options& common, const run_options& opts);
int list_plugins(const common_options& common);
int validate(const common_options& common, const std::string& pipeline);

/// Sets up spdlog (stderr, level from the option); false if the level is unknown.
bool setup_logging(const std::string& level);

}  // namespace troupe::cli
