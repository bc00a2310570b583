// troupe plugins, troupe validate, and what the commands share: logging and plan loading.
#include "commands.hpp"
#include "loading.hpp"

#include <troupe/admission.hpp>

#include <troupe/catalog.hpp>
#include <troupe/manager.hpp>
#include <troupe/nearest.hpp>
#include <troupe/pipeline.hpp>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <algorithm>
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
  auto launcher = std::make_shared<worker_launcher>();
  auto libs = load_libraries(*p, launcher);
  if (!libs) return libs.error();
  return loaded_pipeline{std::make_shared<const plan>(std::move(*p)), std::move(*libs), std::move(launcher)};
}

namespace {

using json = nlohmann::ordered_json;

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

json side_json(const media_side& side, const char* keys) {
  if (!side.declared) return nullptr;
  json j = {{"types", side.any_type() ? std::vector<std::string>{"any"} : side.types}};
  if (side.keys_declared || !side.keys.empty()) j[keys] = side.keys;
  return j;
}

json plugin_json(const catalog::entry& e) {
  auto& m = e.manifest;
  json config = json::object();
  for (auto& f : m.config) {
    json field = {{"type", to_string(f.type)}, {"default", f.default_value}};
    if (f.min) field["min"] = *f.min;
    if (f.max) field["max"] = *f.max;
    if (!f.values.empty()) field["values"] = f.values;
    if (!f.description.empty()) field["description"] = f.description;
    if (f.path != config_field::path_access::none)
      field["path"] = f.path == config_field::path_access::read ? "read" : "write";
    config[f.name] = std::move(field);
  }
  json deps = json::array();
  for (auto& d : m.dependencies) deps.push_back({{"name", d.name}, {"version", d.range.text}});
  auto& r = m.resources;
  json resources = {{"memory_mb", r.memory_mb},
                    {"cpu_seconds", r.cpu_seconds},
                    {"cpu_cores", r.cpu_cores},
                    {"open_files", r.open_files},
                    {"processes", r.processes},
                    {"network", r.network},
                    {"gpus", r.gpus},
                    {"deadline_ms", r.deadline_ms},
                    {"filesystem", {{"read", r.fs_read}, {"write", r.fs_write}}}};
  return {{"name", m.name},
          {"version", m.version.to_string()},
          {"abi", m.abi},
          {"mode", to_string(m.mode)},
          {"enforce", m.strict ? "strict" : "declared"},
          {"capabilities", m.capabilities},
          {"description", m.description},
          {"inputs", side_json(m.inputs, "needs")},
          {"outputs", side_json(m.outputs, "gives")},
          {"config", std::move(config)},
          {"dependencies", std::move(deps)},
          {"resources", std::move(resources)},
          {"manifest", m.path},
          {"library", m.library},
          {"shadows", e.shadowed},
          {"passes_over", e.passed_over}};
}

std::string side_text(const media_side& side, bool outputs) {
  if (!side.declared) return "not declared (any type; metadata not known)";
  std::string types;
  for (auto& t : side.types)
    types += (types.empty() ? "" : ", ") + (t == "same" ? std::string("same (the input's type)") : t);
  std::string text = side.any_type() ? "any type" : types;
  if (outputs) {
    if (side.keys_declared)
      text += side.keys.empty() ? "; metadata: the input's" : "; metadata: the input's, and gives " + joined(side.keys);
  } else if (!side.keys.empty()) {
    text += "; needs metadata " + joined(side.keys);
  }
  return text;
}

// troupe plugins NAME: everything its manifest says, and where it was found.
void print_plugin(const catalog::entry& e) {
  auto& m = e.manifest;
  std::printf("%s %s (ABI %u, %s%s)\n", m.name.c_str(), m.version.to_string().c_str(), m.abi, to_string(m.mode),
              m.strict ? ", enforce strict: isolated only" : "");
  if (!m.description.empty()) std::printf("  %s\n", m.description.c_str());
  std::printf("  capabilities: %s\n", m.capabilities.empty() ? "none" : joined(m.capabilities).c_str());
  if (!m.has_capability("source")) std::printf("  inputs:       %s\n", side_text(m.inputs, false).c_str());
  if (!m.has_capability("sink")) std::printf("  outputs:      %s\n", side_text(m.outputs, true).c_str());
  std::printf("  config:%s\n", m.config.empty() ? "       none" : "");
  for (auto& f : m.config) {
    std::string kind = to_string(f.type);
    if (f.type == field_type::enumeration) kind += " (" + joined(f.values, " | ") + ")";
    if (f.min || f.max)
      kind += " [" + (f.min ? number(*f.min) : std::string()) + ".." + (f.max ? number(*f.max) : std::string()) + "]";
    if (f.path != config_field::path_access::none)
      kind += f.path == config_field::path_access::read ? " (a file it reads)" : " (a file it writes)";
    std::printf("    %-14s %-28s default %-10s %s\n", f.name.c_str(), kind.c_str(),
                f.default_value.empty() ? "\"\"" : f.default_value.c_str(), f.description.c_str());
  }
  std::vector<std::string> deps;
  for (auto& d : m.dependencies) deps.push_back(d.name + (d.range.text.empty() ? "" : " " + d.range.text));
  std::printf("  dependencies: %s\n", deps.empty() ? "none" : joined(deps).c_str());
  auto& r = m.resources;
  auto limit = [](uint64_t v, const char* unit) {
    return v == 0 ? std::string("unlimited") : std::to_string(v) + unit;
  };
  std::printf(
      "  resources:    memory %s, cpu time per input %s, cpu cores %s, open files %s, processes %s, network %s, "
      "deadline %u "
      "ms per call (enforced in mode isolated)\n",
      limit(r.memory_mb, " MiB").c_str(), limit(r.cpu_seconds, " s").c_str(),
      r.cpu_cores == 0 ? "unlimited" : number(r.cpu_cores).c_str(),
      r.open_files == 0 ? "inherited" : std::to_string(r.open_files).c_str(), limit(r.processes, "").c_str(),
      r.network ? "allowed" : "denied", r.deadline_ms);
  if (r.gpus > 0)
    std::printf("  gpus:         %u per replica (admitted only where a node has them free; isolated: may open them)\n",
                r.gpus);
  // What a worker may touch (Landlock): see worker_landlock.hpp.
  std::vector<std::string> reads{"the system's libraries", "its folder"}, writes{"its scratch directory"};
  reads.insert(reads.end(), r.fs_read.begin(), r.fs_read.end());
  writes.insert(writes.end(), r.fs_write.begin(), r.fs_write.end());
  for (auto& f : m.config)
    if (f.path != config_field::path_access::none)
      (f.path == config_field::path_access::read ? reads : writes).push_back("the file '" + f.name + "' names");
  std::printf("  files:        reads %s; writes %s (enforced in mode isolated)\n", joined(reads).c_str(),
              joined(writes).c_str());
  std::printf("  manifest:     %s\n  library:      %s\n", m.path.c_str(), m.library.c_str());
  for (auto& s : e.shadowed) std::printf("  shadows       %s\n", s.c_str());
  for (auto& s : e.passed_over) std::printf("  passes over   %s (its library is missing)\n", s.c_str());
}

}  // namespace

int list_plugins(const common_options& common, const plugins_query& q) {
  if (!q.capability.empty()) {
    auto& words = known_capabilities();
    bool known = std::find(words.begin(), words.end(), q.capability) != words.end() ||
                 q.capability.rfind("x-", 0) == 0 || is_media_type(q.capability);
    if (!known) {
      auto all = words;
      for (auto& t : known_media_types()) all.push_back(t);
      auto near = nearest(q.capability, all);
      std::fprintf(stderr, "troupe: '%s' is not a capability (%s, or x-NAME) nor a media type (%s)%s\n",
                   q.capability.c_str(), joined(words).c_str(), joined(known_media_types()).c_str(),
                   near.empty() ? "" : ("; did you mean '" + near + "'?").c_str());
      return 2;
    }
  }
  auto c = discover(common);
  std::vector<const catalog::entry*> chosen;
  for (auto& e : c.entries())
    if ((q.name.empty() || e.manifest.name == q.name) && (q.capability.empty() || e.manifest.offers(q.capability)))
      chosen.push_back(&e);
  if (!q.name.empty() && chosen.empty()) {
    auto m = c.lookup(q.name);
    std::fprintf(
        stderr, "troupe: %s\n",
        m ? ("plugin '" + q.name + "' does not offer '" + q.capability + "'").c_str() : describe(m.error()).c_str());
    return 1;
  }
  if (q.output == "json") {
    json plugins = json::array();
    for (auto* e : chosen) plugins.push_back(plugin_json(*e));
    json out;
    if (!q.name.empty()) {
      out = std::move(plugins[0]);
    } else {
      json problems = json::array();
      for (auto& p : c.problems()) problems.push_back({{"manifest", p.path}, {"error", p.message}});
      out = {{"search_paths", c.paths()}, {"plugins", std::move(plugins)}, {"problems", std::move(problems)}};
    }
    std::printf("%s\n", out.dump(2, ' ', false, json::error_handler_t::replace).c_str());
    return c.problems().empty() || !q.name.empty() ? 0 : 1;
  }
  if (!q.name.empty()) {
    print_plugin(*chosen[0]);
    return 0;
  }
  std::printf("%-14s %-9s %-4s %-9s %-24s %-44s %s\n", "NAME", "VERSION", "ABI", "MODE", "CAPABILITIES",
              "TAKES -> GIVES", "PATH");
  for (auto* e : chosen) {
    auto& m = e->manifest;
    // "video/rgb24|gray8,audio/s16": one major once
    auto types = [](const media_side& s) {
      if (!s.declared || s.any_type()) return std::string("any");
      std::string out, major;
      for (auto& t : s.types) {
        auto slash = t.find('/');
        auto m = slash == std::string::npos ? std::string() : t.substr(0, slash + 1);
        if (!m.empty() && m == major) {
          out += "|" + t.substr(slash + 1);
        } else {
          out += (out.empty() ? "" : ",") + t;
          major = m;
        }
      }
      return out;
    };
    std::string flow = m.has_capability("source") ? "-> " + types(m.outputs)
                       : m.has_capability("sink") ? types(m.inputs) + " ->"
                                                  : types(m.inputs) + " -> " + types(m.outputs);
    std::printf("%-14s %-9s %-4u %-9s %-24s %-44s %s\n", m.name.c_str(), m.version.to_string().c_str(), m.abi,
                to_string(m.mode), joined(m.capabilities, ",").c_str(), flow.c_str(), m.library.c_str());
    for (auto& s : e->shadowed) std::printf("  shadows %s\n", s.c_str());
    for (auto& s : e->passed_over) std::printf("  passes over %s (its library is missing)\n", s.c_str());
  }
  if (chosen.empty() && !q.capability.empty()) std::printf("no plugin offers '%s'\n", q.capability.c_str());
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
  // What it asks of a node's capacity (as one node runs it), and whether this machine has it.
  resources_amount held;
  auto asks = asks_of(p);
  auto here = machine_capacity();
  auto fits = admit(here, held, p, "local");
  std::printf("  asks for %s; this machine has %s%s\n", describe(asks).c_str(), describe_capacity(here.total).c_str(),
              fits ? "" : (" (" + describe(fits.error()) + ")").c_str());
  // What travels on each edge, as the manifests declare it.
  for (auto& from : p.stages)
    for (auto d : from.downstream) {
      auto& to = p.stages[d];
      auto types = edge_types(from, to);
      std::printf("  %s -> %s: %s\n", from.spec.name.c_str(), to.spec.name.c_str(),
                  types ? joined(*types).c_str() : "any (not declared)");
    }
  return 0;
}

}  // namespace troupe::cli
