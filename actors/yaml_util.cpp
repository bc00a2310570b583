#include <troupe/yaml_util.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <vector>

namespace troupe::yaml {

std::string where(const std::string& file, const YAML::Node& node) {
  auto mark = node.Mark();
  if (mark.is_null()) return file;
  return file + ":" + std::to_string(mark.line + 1);
}

namespace {

// A key given twice in one map (yaml-cpp keeps one of them silently): names both lines.
// Walks the document without recursion, so that nesting depth costs no stack.
caf::error duplicate_key(const std::string& path, const YAML::Node& doc, errc code) {
  std::vector<YAML::Node> todo{doc};
  while (!todo.empty()) {
    auto node = todo.back();
    todo.pop_back();
    if (node.IsMap()) {
      std::map<std::string, YAML::Node> seen;
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (it->first.IsScalar()) {
          auto [at, fresh] = seen.emplace(it->first.Scalar(), it->first);
          if (!fresh)
            return make_error(code, where(path, it->first) + ": field '" + it->first.Scalar() +
                                        "' is given twice (first at line " +
                                        std::to_string(at->second.Mark().line + 1) + ")");
        }
        todo.push_back(it->second);
      }
    } else if (node.IsSequence()) {
      for (auto it = node.begin(); it != node.end(); ++it) todo.push_back(*it);
    }
  }
  return {};
}

}  // namespace

expected<YAML::Node> load_file(const std::string& path, errc code) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(code, path + ": cannot open file");
  std::string text;
  char buffer[65536];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    text.append(buffer, static_cast<size_t>(in.gcount()));
    if (text.size() > max_file_bytes)
      return make_error(code, path + ": the file is over " + std::to_string(max_file_bytes >> 20) +
                                  " MiB; a pipeline, manifest or node config is at most that");
  }
  try {
    auto doc = YAML::Load(text);
    if (auto err = duplicate_key(path, doc, code)) return err;
    return doc;
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
      return make_error(
          code, where(file, it->first) + ": " + what + ": unknown field '" + key + "' (expected one of: " + list + ")");
    }
  }
  return {};
}

}  // namespace troupe::yaml
