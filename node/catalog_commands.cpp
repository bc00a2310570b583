// troupe plugins, troupe validate, and what the commands share: logging and plan loading.
#include "commands.hpp"
#include "loading.hpp"

#include <catalog.hpp>
#include <manager.hpp>
#include <pipeline.hpp>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace troupe::cli {

bool setup_logging(const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") return false;
  auto logger = spdlog::stderr_color_mt("troupe");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
  spdlog::set_level(lvl);
  return true;
}

catalog discover(const common_options& common) {
  auto paths = common.plugin_paths;
  for (auto& p : catalog::default_search_paths()) paths.push_back(p);
  auto c = catalog::discover(paths);
  // One line, however many: a source tree's plugins/ passes over every example plugin.
  auto& over = c.passed_over();
  if (!over.empty())
    spdlog::warn("{}{} (troupe plugins lists them)", over.front(),
                 over.size() > 1 ? "; and " + std::to_string(over.size() - 1) + " more manifests like it" : "");
  return c;
}

expected<loaded_pipeline> load(const common_options& common, const std::string& path) {
  auto plugins = discover(common);
  auto spec = load_pipeline(path);
  if (!spec) return spec.error();
  auto p = plan_pipeline(*spec, plugins);
  if (!p) return p.error();
  auto libs = load_libraries(*p);
  if (!libs) return libs.error();
  return loaded_pipeline{std::make_shared<const plan>(std::move(*p)), std::move(*libs)};
}

int list_plugins(const common_options& common, const std::string& output) {
  auto c = discover(common);
  if (output == "json") {
    using json = nlohmann::ordered_json;
    json plugins = json::array();
    for (auto& e : c.entries()) {
      auto& m = e.manifest;
      json config = json::object();
      for (auto& f : m.config) {
        json field = {{"type", to_string(f.type)}, {"default", f.default_value}};
        if (f.min) field["min"] = *f.min;
        if (f.max) field["max"] = *f.max;
        if (!f.values.empty()) field["values"] = f.values;
        if (!f.description.empty()) field["description"] = f.description;
        config[f.name] = std::move(field);
      }
      plugins.push_back({{"name", m.name},
                         {"version", m.version.to_string()},
                         {"abi", m.abi},
                         {"mode", to_string(m.mode)},
                         {"capabilities", m.capabilities},
                         {"description", m.description},
                         {"config", std::move(config)},
                         {"manifest", m.path},
                         {"library", m.library},
                         {"shadows", e.shadowed},
                         {"passes_over", e.passed_over}});
    }
    json problems = json::array();
    for (auto& p : c.problems()) problems.push_back({{"manifest", p.path}, {"error", p.message}});
    json out = {{"search_paths", c.paths()}, {"plugins", std::move(plugins)}, {"problems", std::move(problems)}};
    std::printf("%s\n", out.dump(2, ' ', false, json::error_handler_t::replace).c_str());
    return c.problems().empty() ? 0 : 1;
  }
  std::printf("%-14s %-9s %-4s %-9s %-28s %s\n", "NAME", "VERSION", "ABI", "MODE", "CAPABILITIES", "PATH");
  for (auto& e : c.entries()) {
    auto& m = e.manifest;
    std::string caps;
    for (auto& cap : m.capabilities) caps += (caps.empty() ? "" : ",") + cap;
    std::printf("%-14s %-9s %-4u %-9s %-28s %s\n", m.name.c_str(), m.version.to_string().c_str(), m.abi,
                to_string(m.mode), caps.c_str(), m.library.c_str());
    for (auto& s : e.shadowed) std::printf("  shadows %s\n", s.c_str());
    for (auto& s : e.passed_over) std::printf("  passes over %s (its library is missing)\n", s.c_str());
  }
  if (c.entries().empty()) {
    std::printf("no plugins found; searched:");
    for (auto& p : c.paths()) std::printf(" %s", p.c_str());
    std::printf("\n");
  }
  for (auto& p : c.problems()) std::fprintf(stderr, "troupe: skipped %s: %s\n", p.path.c_str(), p.message.c_str());
  return c.problems().empty() ? 0 : 1;
}

int validate(const common_options& common, const std::string& path) {
  auto lp = load(common, path);
  if (!lp) {
    std::fprintf(stderr, "troupe: %s\n", describe(lp.error()).c_str());
    return 1;
  }
  auto& p = *lp->plan;
  std::string order;
  for (auto i : p.start_order) order += (order.empty() ? "" : ", ") + p.stages[i].spec.name;
  size_t instances = 0;
  for (auto& s : p.stages) instances += s.spec.replicas;
  std::printf("%s: pipeline '%s' is valid: %zu stages, %zu instances; start order: %s\n", path.c_str(), p.name.c_str(),
              p.stages.size(), instances, order.c_str());
  return 0;
}

}  // namespace troupe::cli
