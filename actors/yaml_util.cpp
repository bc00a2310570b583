#include "yaml_util.hpp"

#include <algorithm>
#include <fstream>

namespace troupe::yaml {

std::string where(const std::string& file, const YAML::Node& node) {
  auto mark = node.Mark();
  if (mark.is_null()) return file;
  return file + ":" + std::to_string(mark.line + 1);
}

expected<YAML::Node> load_file(const std::string& path, errc code) {
  std::ifstream in(path);
  if (!in) return make_error(code, path + ": cannot open file");
  try {
    return YAML::Load(in);
  } catch (const YAML::ParserException& e) {
    return make_error(code, path + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
  } catch (const YAML::Exception& e) {
    return make_error(code, path + ": not valid YAML: " + e.msg);
  }
}

caf::error check_keys(const std::string& file, const YAML::Node& map, const std::string& what,
                      std::initializer_list<const char*> known, errc code) {
  if (!map.IsMap()) return make_error(code, where(file, map) + ": " + what + ": expected a map");
  for (auto it = map.begin(); it != map.end(); ++it) {
    auto key = it->first.Scalar();
    if (std::none_of(known.begin(), known.end(), [&](const char* k) { return key == k; })) {
      std::string list;
      for (auto* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      return make_error(code, where(file, it->first) + ": " + what + ": unknown field '" + key +
                                  "' (expected one of: " + list + ")");
    }
  }
  return {};
}

}  // namespace troupe::yaml
