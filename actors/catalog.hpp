// Plugin discovery: which plugins exist on the search paths.
//
// A search path is a directory holding plugin.yaml itself or subdirectories that each hold
// one. Paths are searched in order; the first plugin of a name wins and shadows later ones,
// so ./plugins beats TROUPE_PLUGIN_PATH, which beats the system directory. A broken
// manifest is recorded as a problem and does not hide the other plugins.
#pragma once

#include "manifest.hpp"

#include <string>
#include <vector>

namespace troupe {

class catalog {
 public:
  struct entry {
    troupe::manifest manifest;
    std::vector<std::string> shadowed;  // manifests of the same name found later
  };
  struct problem {
    std::string path;
    std::string message;
  };

  /// ./plugins, then each entry of TROUPE_PLUGIN_PATH (colon-separated), then the system dir.
  static std::vector<std::string> default_search_paths();
  static catalog discover(const std::vector<std::string>& paths);

  /// The plugin of that name, or an error naming it and the paths searched.
  expected<const manifest*> lookup(const std::string& name) const;
  const std::vector<entry>& entries() const { return entries_; }
  const std::vector<problem>& problems() const { return problems_; }
  const std::vector<std::string>& paths() const { return paths_; }

 private:
  std::vector<std::string> paths_;
  std::vector<entry> entries_;
  std::vector<problem> problems_;
};

}  // namespace troupe
