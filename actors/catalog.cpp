#include <troupe/catalog.hpp>

#include <troupe/nearest.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#ifndef TROUPE_SYSTEM_PLUGIN_DIR
#define TROUPE_SYSTEM_PLUGIN_DIR "/usr/local/lib/troupe/plugins"
#endif

namespace troupe {

namespace fs = std::filesystem;

std::vector<std::string> catalog::default_search_paths() {
  std::vector<std::string> paths;
  std::vector<fs::path> seen;
  auto add = [&](const std::string& p) {
    std::error_code ec;
    auto key = fs::weakly_canonical(p, ec);
    if (ec) key = fs::path(p).lexically_normal();
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) return;
    seen.push_back(key);
    paths.push_back(p);
  };
  add("./plugins");
  if (const char* env = std::getenv("TROUPE_PLUGIN_PATH")) {
    std::istringstream in(env);
    std::string p;
    while (std::getline(in, p, ':'))
      if (!p.empty()) add(p);
  }
  std::error_code ec;
  auto exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto dir = exe.parent_path();
    if (fs::is_directory(dir / "plugins", ec)) add((dir / "plugins").string());
    add((dir.parent_path() / "lib" / "troupe" / "plugins").string());
  }
  add(TROUPE_SYSTEM_PLUGIN_DIR);
  return paths;
}

catalog catalog::discover(const std::vector<std::string>& paths) {
  catalog c;
  c.paths_ = paths;
  auto consider = [&](const fs::path& manifest_path) {
    auto m = load_manifest(manifest_path.string());
    if (!m) {
      c.problems_.push_back({manifest_path.string(), describe(m.error())});
      return;
    }
    auto it = std::find_if(c.entries_.begin(), c.entries_.end(), [&](auto& e) { return e.manifest.name == m->name; });
    if (it == c.entries_.end()) {
      c.entries_.push_back({std::move(*m), {}, {}});
      return;
    }
    if (it->manifest.path == m->path) return;
    std::error_code ec;
    if (!fs::exists(it->manifest.library, ec) && fs::exists(m->library, ec)) {
      c.passed_over_.push_back(it->manifest.path + " was passed over for " + m->path + ": the library it names (" +
                               it->manifest.library + ") is missing");
      it->passed_over.push_back(it->manifest.path);
      it->manifest = std::move(*m);
      return;
    }
    it->shadowed.push_back(m->path);
  };
  for (auto& p : paths) {
    std::error_code ec;
    fs::path dir(p);
    if (!fs::is_directory(dir, ec)) continue;
    if (fs::exists(dir / "plugin.yaml", ec)) {
      consider(dir / "plugin.yaml");
      continue;
    }
    std::vector<fs::path> subdirs;
    for (auto& d : fs::directory_iterator(dir, ec))
      if (d.is_directory(ec) && fs::exists(d.path() / "plugin.yaml", ec)) subdirs.push_back(d.path());
    std::sort(subdirs.begin(), subdirs.end());  // stable, readable order
    for (auto& d : subdirs) consider(d / "plugin.yaml");
  }
  return c;
}

expected<const manifest*> catalog::lookup(const std::string& name) const {
  for (auto& e : entries_)
    if (e.manifest.name == name) return &e.manifest;
  std::vector<std::string> known;
  for (auto& e : entries_) known.push_back(e.manifest.name);
  std::string msg = "plugin '" + name + "' not found on the search paths (";
  for (size_t i = 0; i < paths_.size(); ++i) msg += (i ? ":" : "") + paths_[i];
  msg += ")" + did_you_mean(name, known);
  for (auto& p : problems_) msg += "; note: " + p.message;
  return make_error(errc::plugin_not_found, msg);
}

}  // namespace troupe
