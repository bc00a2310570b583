// A plugin's or a stage's `resources:` (what it may use: memory, CPU, files, processes, the
// network, the filesystem), read from YAML, and how a stage tightens its plugin's.
#include <troupe/manifest.hpp>
#include <troupe/yaml_util.hpp>

#include <filesystem>
#include <optional>
#include <set>
#include <sstream>
#include <string>

namespace troupe {

caf::error read_resources(const std::string& path, const YAML::Node& res, const std::string& what, bool manifest,
                          resource_limits& r, std::set<std::string>& given, errc code) {
  auto keys =
      manifest
          ? yaml::check_keys(path, res, what,
                             {"memory_mb", "cpu_seconds", "cpu_cores", "open_files", "processes", "network",
                              "deadline_ms", "filesystem", "gpus"},
                             code)
          : yaml::check_keys(
                path, res, what,
                {"memory_mb", "cpu_seconds", "cpu_cores", "open_files", "processes", "network", "filesystem"}, code);
  if (!manifest && res.IsMap() && res["gpus"])
    return make_error(code, yaml::where(path, res["gpus"]) + ": field '" + what +
                                ".gpus': how many GPUs a replica needs is its plugin's to say (its manifest's "
                                "resources.gpus), not a stage's");
  if (keys) return keys;
  for (auto [key, slot] : {std::pair{"memory_mb", &r.memory_mb}, std::pair{"cpu_seconds", &r.cpu_seconds},
                           std::pair{"open_files", &r.open_files}, std::pair{"processes", &r.processes}}) {
    if (!res[key]) continue;
    auto x = yaml::scalar<uint64_t>(path, res[key], what + "." + key, "a non-negative integer", code);
    if (!x) return x.error();
    *slot = *x;
    given.insert(key);
  }
  if (res["cpu_cores"]) {
    auto x = yaml::scalar<double>(path, res["cpu_cores"], what + ".cpu_cores", "a number of cores", code);
    if (!x) return x.error();
    if (*x < 0 || *x > 4096)
      return make_error(code, yaml::where(path, res["cpu_cores"]) + ": field '" + what +
                                  ".cpu_cores': expected 0 (no limit) to 4096 cores");
    r.cpu_cores = *x;
    given.insert("cpu_cores");
  }
  if (res["gpus"]) {
    auto x = yaml::scalar<uint32_t>(path, res["gpus"], what + ".gpus", "a number of GPUs", code);
    if (!x) return x.error();
    if (*x > 64)
      return make_error(code, yaml::where(path, res["gpus"]) + ": field '" + what + ".gpus': expected 0 to 64 GPUs");
    r.gpus = *x;
    given.insert("gpus");
  }
  if (res["network"]) {
    auto x = yaml::scalar<bool>(path, res["network"], what + ".network", "true or false", code);
    if (!x) return x.error();
    r.network = *x;
    given.insert("network");
  }
  if (res["deadline_ms"]) {
    auto x = yaml::scalar<uint32_t>(path, res["deadline_ms"], what + ".deadline_ms",
                                    "a positive integer (milliseconds)", code);
    if (!x) return x.error();
    if (*x == 0)
      return make_error(code, yaml::where(path, res["deadline_ms"]) + ": field '" + what +
                                  ".deadline_ms': expected a positive integer");
    r.deadline_ms = *x;
    given.insert("deadline_ms");
  }
  if (auto fs = res["filesystem"]) {
    const auto field = what + ".filesystem";
    if (auto err = yaml::check_keys(path, fs, field, {"read", "write"}, code)) return err;
    // A manifest's paths are its plugin's folder's, a pipeline's the working directory's.
    auto base = manifest ? std::filesystem::absolute(path).parent_path() : std::filesystem::current_path();
    for (auto [key, out] : {std::pair{"read", &r.fs_read}, std::pair{"write", &r.fs_write}}) {
      auto list = fs[key];
      if (!list) continue;
      if (!list.IsSequence())
        return make_error(code,
                          yaml::where(path, list) + ": field '" + field + "." + key + "': expected a list of paths");
      for (auto item : list) {
        if (!item.IsScalar() || item.Scalar().empty())
          return make_error(code, yaml::where(path, item) + ": field '" + field + "." + key + "': expected a path");
        out->push_back((base / item.Scalar()).lexically_normal().string());
      }
    }
    given.insert("filesystem");
  }
  return {};
}

std::optional<std::string> tighten(resource_limits& plugin, const resource_limits& stage,
                                   const std::set<std::string>& given) {
  auto tighter = [&](const char* key, auto& mine, auto theirs) -> std::optional<std::string> {
    if (!given.count(key)) return std::nullopt;
    auto text = [](auto v) {
      std::ostringstream s;
      s << v;
      return s.str();
    };
    if (theirs == 0 && mine != 0)
      return std::string("resources.") + key + " 0 (no limit) would lift the plugin's limit of " + text(mine);
    if (mine != 0 && theirs > mine)
      return std::string("resources.") + key + " " + text(theirs) + " is above the plugin's limit of " + text(mine);
    mine = theirs;
    return std::nullopt;
  };
  for (auto e : {tighter("memory_mb", plugin.memory_mb, stage.memory_mb),
                 tighter("cpu_seconds", plugin.cpu_seconds, stage.cpu_seconds),
                 tighter("cpu_cores", plugin.cpu_cores, stage.cpu_cores),
                 tighter("open_files", plugin.open_files, stage.open_files),
                 tighter("processes", plugin.processes, stage.processes)})
    if (e) return *e + " (a stage may only tighten its plugin's resources)";
  // Where a plugin may read and write depends on where it is deployed: a stage adds to it.
  for (auto& p : stage.fs_read) plugin.fs_read.push_back(p);
  for (auto& p : stage.fs_write) plugin.fs_write.push_back(p);
  if (given.count("network")) {
    if (stage.network && !plugin.network)
      return "resources.network true would grant what the plugin's manifest does not (a stage may only tighten its "
             "plugin's resources)";
    plugin.network = stage.network;
  }
  return std::nullopt;
}

}  // namespace troupe
