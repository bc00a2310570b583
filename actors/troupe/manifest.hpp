// The plugin manifest (plugin.yaml) and the config schema it declares.
//
// load_manifest reads and checks one manifest: every key known, every value of its type.
// validate_config checks a stage's config against a manifest's schema and fills defaults;
// both name the file, line and field in their errors.
#pragma once

#include <troupe/error.hpp>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace YAML {
class Node;
}

namespace troupe {

struct version {
  uint32_t major = 0, minor = 0, patch = 0;
  static std::optional<version> parse(const std::string& text);
  std::string to_string() const;
  auto operator<=>(const version&) const = default;
};

/// Comparators such as ">=1.2.0 <2.0.0", "^1.2", "~1.4.1", "1.0.0"; empty matches any.
struct version_range {
  std::vector<std::pair<std::string, version>> comparators;
  std::string text;
  static std::optional<version_range> parse(const std::string& text);
  bool contains(const version& v) const;
};

enum class field_type { integer, real, boolean, string, enumeration };
const char* to_string(field_type t);

struct config_field {
  std::string name;
  field_type type = field_type::string;
  std::string default_value;
  std::optional<double> min, max;
  std::vector<std::string> values;  // enumeration only
  std::string description;
  // `path: read` or `path: write` on a string field: the file it names is granted to an isolated
  // worker (to read; or to write, with the folder it is in). none: not a path.
  enum class path_access { none, read, write } path = path_access::none;
};

struct dependency {
  std::string name;
  version_range range;
};

enum class exec_mode { embedded, isolated };
const char* to_string(exec_mode m);

struct resource_limits {
  uint64_t memory_mb = 0;    // 0: unlimited
  uint64_t cpu_seconds = 0;  // CPU time an isolated worker may use on one input; 0: unlimited
  uint64_t open_files = 0;   // 0: inherit
  double cpu_cores = 0;      // CPU time per second of wall-clock time, throttled (where cgroups serve); 0: none
  uint64_t processes = 256;  // processes and threads of an isolated worker (where cgroups serve); 0: no limit
  uint32_t gpus = 0;         // GPUs one replica needs (admission; an isolated worker may open their devices)
  bool network = false;
  uint32_t deadline_ms = 5000;  // per process call
  // Paths an isolated worker may read, or also write beneath (Landlock), absolute: a
  // manifest's relative to its plugin's folder, a stage's to the working directory. A stage's
  // add to its plugin's.
  std::vector<std::string> fs_read, fs_write;
};

using config_values = std::vector<std::pair<std::string, std::string>>;

/// The words, `sep` between them ("a, b, c").
std::string joined(const std::vector<std::string>& words, const char* sep = ", ");

/// The media types Troupe names (a frame's type tag), besides namespaced ones ("video/x-mine").
const std::vector<std::string>& known_media_types();
/// The capability words a manifest may use, besides namespaced ones ("x-mine").
const std::vector<std::string>& known_capabilities();
/// A media type a manifest may name: a known one, or MAJOR/x-NAME.
bool is_media_type(const std::string& t);

/// One side of a plugin (`inputs:` or `outputs:` in its manifest): the media types of the
/// frames it takes or gives, and the metadata keys it needs on an input or gives on an output
/// (beyond what an output inherits from its input). Not declared: any type, keys unknown.
///
/// An output type may be `same` (the input's type) or hold a `{field}` of an enum config
/// field ("video/{format}"), whose value the stage's config fills in (a value `same` is the
/// input's type again).
struct media_side {
  bool declared = false;
  std::vector<std::string> types;  // empty: any
  std::vector<std::string> keys;   // inputs: needs; outputs: gives
  bool keys_declared = false;      // outputs: `gives` is there (possibly empty): the keys are known
  bool any_type() const { return types.empty(); }
};

struct manifest {
  std::string path;     // of plugin.yaml
  std::string library;  // absolute path of the shared library
  std::string name;
  troupe::version version;
  uint32_t abi = 0;
  std::string description;
  std::vector<std::string> capabilities;
  std::vector<dependency> dependencies;
  std::vector<config_field> config;
  media_side inputs, outputs;
  exec_mode mode = exec_mode::embedded;
  bool strict = false;  // `enforce: strict`: its resources are always enforced, so it runs isolated only
  resource_limits resources;

  const config_field* field(const std::string& name) const;
  bool has_capability(const std::string& c) const;
  /// A capability word, or a media type it takes or gives (types as declared).
  bool offers(const std::string& c) const;
  /// The media types a stage of this plugin gives with `config` when fed `in` (empty: any),
  /// `same` and `{field}` resolved; nullopt if any type may come out.
  std::optional<std::vector<std::string>> output_types(const config_values& config,
                                                       const std::optional<std::vector<std::string>>& in) const;
};

expected<manifest> load_manifest(const std::string& path);

/// Reads a `resources` map into r (the fields given are named in `given`): a manifest's
/// (manifest: true, deadline_ms allowed) or a stage's in a pipeline file, `what` naming it.
caf::error read_resources(const std::string& path, const YAML::Node& res, const std::string& what, bool manifest,
                          resource_limits& r, std::set<std::string>& given, errc code);

/// Applies a stage's resources (the fields given) to its plugin's: each may only be tighter.
/// Nothing, or what is not.
std::optional<std::string> tighten(resource_limits& plugin, const resource_limits& stage,
                                   const std::set<std::string>& given);

/// A config value as a user wrote it, with where they wrote it.
struct config_entry {
  std::string key;
  std::string value;
  int line = 0;
};

/// Checks entries against m's schema; returns every field, defaults filled in, in schema
/// order. `where` names the file (and stage) for messages.
expected<config_values> validate_config(const manifest& m, const std::vector<config_entry>& entries,
                                        const std::string& where);

}  // namespace troupe
