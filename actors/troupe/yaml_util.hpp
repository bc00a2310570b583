// Small helpers for reading user-written YAML with errors that name file, line and field.
// Internal to actors/; callers outside see only the typed results.
#pragma once

#include <troupe/error.hpp>

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <initializer_list>
#include <optional>
#include <string>
#include <type_traits>

namespace troupe::yaml {

/// "file:line" of a node (1-based line), or just "file" when the node has no mark.
std::string where(const std::string& file, const YAML::Node& node);

/// Files users write (pipelines, manifests, node configs) are at most this big.
constexpr size_t max_file_bytes = 4 << 20;

/// Parses a whole file; errors name the file and the line where parsing failed. A file over
/// max_file_bytes and a map with a key twice (naming both lines) are errors too.
expected<YAML::Node> load_file(const std::string& path, errc code);

/// Error if the map has a key outside `known`; names the key and lists what was expected.
caf::error check_keys(const std::string& file, const YAML::Node& map, const std::string& what,
                      std::initializer_list<const char*> known, errc code);

/// Reads a scalar as T; a non-scalar or a value of another type is an error naming field.
template <class T>
expected<T> scalar(const std::string& file, const YAML::Node& node, const std::string& field, const char* expected_what,
                   errc code) {
  if (!node.IsScalar())
    return make_error(code, where(file, node) + ": field '" + field + "': expected " + expected_what);
  try {
    auto v = node.as<T>();
    if constexpr (std::is_floating_point_v<T>)
      if (!std::isfinite(v))
        return make_error(code, where(file, node) + ": field '" + field + "': expected " + expected_what +
                                    " (a finite number), got '" + node.Scalar() + "'");
    return v;
  } catch (const YAML::Exception&) {
    return make_error(code, where(file, node) + ": field '" + field + "': expected " + expected_what + ", got '" +
                                node.Scalar() + "'");
  }
}

}  // namespace troupe::yaml
