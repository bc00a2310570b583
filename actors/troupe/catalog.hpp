// Plugin discovery: which plugins exist on the search paths.
//
// A search path is a directory holding plugin.yaml itself or subdirectories that each hold
// one. Paths are searched in order; the first plugin of a name wins and shadows later ones,
// so ./plugins beats TROUPE_PLUGIN_PATH, which beats the installation's own directory. A
// broken manifest is recorded as a problem and does not hide the other plugins; a manifest
// whose library is missing (a source tree's plugins/, say) does not hide a complete one of
// the same name found later, which takes its place.
#pragma once

#include <troupe/manifest.hpp>

#include <string>
#include <vector>

namespace troupe {

class catalog {
 public:
  struct entry {
    troupe::manifest manifest;
    std::vector<std::string> shadowed;     // manifests of the same name found later
    std::vector<std::string> passed_over;  // found earlier, but their libraries are missing
  };
  struct problem {
    std::string path;
    std::string message;
  };

  /// ./plugins, then each entry of TROUPE_PLUGIN_PATH (colon-separated), then the plugins
  /// of the running executable's installation: <dir of exe>/plugins in a build tree,
  /// <dir of exe>/../lib/troupe/plugins once installed, and the configured system directory.
  /// A directory is listed once.
  static std::vector<std::string> default_search_paths();
  static catalog discover(const std::vector<std::string>& paths);

  /// The plugin of that name, or an error naming it and the paths searched.
  expected<const manifest*> lookup(const std::string& name) const;
  const std::vector<entry>& entries() const { return entries_; }
  const std::vector<problem>& problems() const { return problems_; }
  /// One line for each manifest passed over for lack of its library, naming both manifests.
  const std::vector<std::string>& passed_over() const { return passed_over_; }
  const std::vector<std::string>& paths() const { return paths_; }

 private:
  std::vector<std::string> paths_;
  std::vector<entry> entries_;
  std::vector<problem> problems_;
  std::vector<std::string> passed_over_;
};

}  // namespace troupe
