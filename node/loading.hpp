// Reading a pipeline for a command: discovery, parsing, planning and library loading.
#pragma once

#include "commands.hpp"

#include <troupe/catalog.hpp>
#include <troupe/pipeline.hpp>
#include <troupe/plugin_library.hpp>
#include <troupe/worker_launcher.hpp>

#include <memory>
#include <vector>

namespace troupe::cli {

struct loaded_pipeline {
  std::shared_ptr<const troupe::plan> plan;
  std::vector<std::shared_ptr<plugin_library>> libraries;  // per stage
  std::shared_ptr<worker_launcher> launcher;               // started its check workers; starts its isolated stages
};

catalog discover(const common_options& common);
expected<loaded_pipeline> load(const common_options& common, const std::string& path);

}  // namespace troupe::cli
