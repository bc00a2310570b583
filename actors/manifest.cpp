#include <troupe/manifest.hpp>

#include <troupe/nearest.hpp>
#include <troupe/yaml_util.hpp>

#include <troupe/plugin.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>

namespace troupe {

namespace fs = std::filesystem;

// -- versions -------------------------------------------------------------------------------

std::optional<version> version::parse(const std::string& text) {
  version v;
  uint32_t* parts[] = {&v.major, &v.minor, &v.patch};
  const char* p = text.data();
  const char* end = text.data() + text.size();
  for (int i = 0; i < 3; ++i) {
    auto [next, ec] = std::from_chars(p, end, *parts[i]);
    if (ec != std::errc{} || next == p) return std::nullopt;
    p = next;
    if (p == end) return v;  // "1" and "1.2" are fine: missing parts are 0
    if (*p != '.' || i == 2) return std::nullopt;
    ++p;
  }
  return std::nullopt;
}

std::string version::to_string() const {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::optional<version_range> version_range::parse(const std::string& text) {
  version_range r;
  r.text = text;
  std::string spec = text;
  std::replace(spec.begin(), spec.end(), ',', ' ');
  std::istringstream in(spec);
  std::string tok;
  while (in >> tok) {
    size_t n = 0;
    while (n < tok.size() && std::string_view("<>=^~").find(tok[n]) != std::string_view::npos) ++n;
    auto op = tok.substr(0, n);
    auto v = version::parse(tok.substr(n));
    if (!v) return std::nullopt;
    if (op.empty()) op = "=";
    if (op == "^") {
      r.comparators.push_back({">=", *v});
      r.comparators.push_back({"<", v->major > 0 ? version{v->major + 1, 0, 0} : version{0, v->minor + 1, 0}});
    } else if (op == "~") {
      r.comparators.push_back({">=", *v});
      r.comparators.push_back({"<", version{v->major, v->minor + 1, 0}});
    } else if (op == "=" || op == "==" || op == ">=" || op == ">" || op == "<=" || op == "<") {
      r.comparators.push_back({op == "==" ? "=" : op, *v});
    } else {
      return std::nullopt;
    }
  }
  return r;
}

bool version_range::contains(const version& v) const {
  for (auto& [op, x] : comparators) {
    bool ok = op == "=" ? v == x : op == ">=" ? v >= x : op == ">" ? v > x : op == "<=" ? v <= x : v < x;
    if (!ok) return false;
  }
  return true;
}

// -- schema ---------------------------------------------------------------------------------

const char* to_string(field_type t) {
  switch (t) {
    case field_type::integer: return "int";
    case field_type::real: return "float";
    case field_type::boolean: return "bool";
    case field_type::string: return "string";
    case field_type::enumeration: return "enum";
  }
  return "?";
}

const char* to_string(exec_mode m) { return m == exec_mode::embedded ? "embedded" : "isolated"; }

const config_field* manifest::field(const std::string& n) const {
  for (auto& f : config)
    if (f.name == n) return &f;
  return nullptr;
}

bool manifest::has_capability(const std::string& c) const {
  return std::find(capabilities.begin(), capabilities.end(), c) != capabilities.end();
}

std::string joined(const std::vector<std::string>& words, const char* sep) {
  std::string out;
  for (auto& w : words) out += (out.empty() ? "" : sep) + w;
  return out;
}

// -- media types and capabilities -------------------------------------------------------------

const std::vector<std::string>& known_media_types() {
  static const std::vector<std::string> types = {"video/rgb24",      "video/gray8", "video/yuv420p",
                                                 "audio/s16",        "audio/f32",   "application/octet-stream",
                                                 "application/json", "text/plain",  "meta/detections"};
  return types;
}

const std::vector<std::string>& known_capabilities() {
  static const std::vector<std::string> words = {"source",  "sink",    "filter",   "hook",
                                                 "decoder", "encoder", "analyzer", "muxer"};
  return words;
}

bool is_media_type(const std::string& t) {
  auto& known = known_media_types();
  if (std::find(known.begin(), known.end(), t) != known.end()) return true;
  auto slash = t.find('/');
  return slash != std::string::npos && slash > 0 && t.compare(slash + 1, 2, "x-") == 0 && t.size() > slash + 3 &&
         t.find_first_of(" /{}", slash + 1) == std::string::npos;
}

namespace {

// The config field an output type names ("format" of "video/{format}"), or empty.
std::string type_field(const std::string& t) {
  auto open = t.find('{'), close = t.find('}');
  if (open == std::string::npos || close == std::string::npos || close < open) return {};
  return t.substr(open + 1, close - open - 1);
}

// An output type with its `{field}` filled in from config: a media type, or "same".
std::string resolve_type(const std::string& t, const config_values& config) {
  auto field = type_field(t);
  if (field.empty()) return t;
  for (auto& [k, v] : config)
    if (k == field) return v == "same" ? std::string("same") : t.substr(0, t.find('{')) + v + t.substr(t.find('}') + 1);
  return t;
}

void add_unique(std::vector<std::string>& to, const std::string& t) {
  if (std::find(to.begin(), to.end(), t) == to.end()) to.push_back(t);
}

}  // namespace

bool manifest::offers(const std::string& c) const {
  if (has_capability(c)) return true;
  for (auto* side : {&inputs, &outputs})
    for (auto& t : side->types) {
      if (t == c) return true;
      // "video/{format}": any of the types its field's values make
      auto name = type_field(t);
      if (auto* f = name.empty() ? nullptr : field(name))
        for (auto& v : f->values)
          if (resolve_type(t, {{name, v}}) == c) return true;
    }
  return false;
}

std::optional<std::vector<std::string>> manifest::output_types(
    const config_values& config, const std::optional<std::vector<std::string>>& in) const {
  if (outputs.any_type()) return std::nullopt;
  std::vector<std::string> out;
  for (auto& t : outputs.types) {
    auto r = resolve_type(t, config);
    if (r != "same") {
      add_unique(out, r);
      continue;
    }
    if (!in) return std::nullopt;
    for (auto& x : *in) add_unique(out, x);
  }
  return out;
}

namespace {

std::optional<field_type> parse_field_type(const std::string& s) {
  if (s == "int") return field_type::integer;
  if (s == "float") return field_type::real;
  if (s == "bool") return field_type::boolean;
  if (s == "string") return field_type::string;
  if (s == "enum") return field_type::enumeration;
  return std::nullopt;
}

std::optional<double> parse_number(const std::string& s, bool integer) {
  if (s.empty()) return std::nullopt;
  if (integer) {
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
    return static_cast<double>(v);
  }
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::string format_number(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

// Checks one value against a field; returns the normalised value or an explanation.
expected<std::string> check_value(const config_field& f, const std::string& value) {
  auto fail = [&](std::string why) { return make_error(errc::invalid_config, std::move(why)); };
  switch (f.type) {
    case field_type::integer:
    case field_type::real: {
      bool integer = f.type == field_type::integer;
      auto n = parse_number(value, integer);
      if (!n) return fail("'" + value + "' is not " + (integer ? "an integer" : "a number"));
      if (f.min && *n < *f.min) return fail(value + " is below the minimum " + format_number(*f.min));
      if (f.max && *n > *f.max) return fail(value + " is above the maximum " + format_number(*f.max));
      return value;
    }
    case field_type::boolean:
      if (value == "true" || value == "false") return value;
      if (value == "yes" || value == "on") return std::string("true");
      if (value == "no" || value == "off") return std::string("false");
      return fail("'" + value + "' is not a bool (true or false)");
    case field_type::enumeration: {
      if (std::find(f.values.begin(), f.values.end(), value) != f.values.end()) return value;
      return fail("'" + value + "' is not one of: " + joined(f.values));
    }
    case field_type::string: return value;
  }
  return value;
}

expected<config_field> parse_field(const std::string& file, const std::string& name, const YAML::Node& node) {
  const auto code = errc::invalid_manifest;
  std::string what = "config field '" + name + "'";
  if (auto err =
          yaml::check_keys(file, node, what, {"type", "default", "min", "max", "values", "description", "path"}, code))
    return err;
  config_field f;
  f.name = name;
  if (!node["type"])
    return make_error(code, yaml::where(file, node) + ": " + what +
                                ": missing 'type' (expected one of: int, float, bool, string, enum)");
  auto type_name = node["type"].Scalar();
  auto type = parse_field_type(type_name);
  if (!type)
    return make_error(code, yaml::where(file, node["type"]) + ": " + what + ": unknown type '" + type_name +
                                "' (expected one of: int, float, bool, string, enum)");
  f.type = *type;
  if (node["description"]) f.description = node["description"].Scalar();
  if (auto p = node["path"]) {
    auto v = p.IsScalar() ? p.Scalar() : std::string();
    if (v != "read" && v != "write")
      return make_error(code, yaml::where(file, p) + ": " + what + ": 'path' expected read or write");
    if (f.type != field_type::string)
      return make_error(code, yaml::where(file, p) + ": " + what + ": 'path' is for string fields");
    f.path = v == "read" ? config_field::path_access::read : config_field::path_access::write;
  }
  for (auto [key, slot] : {std::pair{"min", &f.min}, std::pair{"max", &f.max}}) {
    if (!node[key]) continue;
    auto n = parse_number(node[key].Scalar(), false);
    if (!n || (f.type != field_type::integer && f.type != field_type::real))
      return make_error(
          code, yaml::where(file, node[key]) + ": " + what + ": '" + key + "' needs a number on an int or float field");
    *slot = n;
  }
  if (f.type == field_type::enumeration) {
    auto values = node["values"];
    if (!values || !values.IsSequence() || values.size() == 0)
      return make_error(code, yaml::where(file, node) + ": " + what + ": an enum needs 'values', a non-empty list");
    for (auto v : values) f.values.push_back(v.Scalar());
  }
  if (!node["default"] || !node["default"].IsScalar())
    return make_error(code, yaml::where(file, node) + ": " + what + ": missing 'default'");
  auto def = check_value(f, node["default"].Scalar());
  if (!def)
    return make_error(code, yaml::where(file, node["default"]) + ": " + what + ": default " + describe(def.error()));
  f.default_value = *def;
  return f;
}

// Reads `inputs:` or `outputs:` (after the config schema, whose enum fields an output type may
// name as "{field}").
caf::error parse_side(const std::string& file, const YAML::Node& node, bool outputs, manifest& m) {
  const auto code = errc::invalid_manifest;
  const std::string what = outputs ? "outputs" : "inputs";
  const char* keys_name = outputs ? "gives" : "needs";
  if (!node.IsMap())
    return make_error(
        code, yaml::where(file, node) + ": field '" + what + "': expected a map with 'types' and '" + keys_name + "'");
  if (auto err = yaml::check_keys(file, node, what, {"types", keys_name}, code)) return err;
  auto& side = outputs ? m.outputs : m.inputs;
  side.declared = true;
  const std::string expected_types =
      "a media type (" + joined(known_media_types()) + ", or namespaced as MAJOR/x-NAME)" +
      (outputs ? ", same (the input's type), a {field} of an enum config field (video/{format})," : ",") + " or any";
  if (auto types = node["types"]) {
    if (!types.IsSequence())
      return make_error(code, yaml::where(file, types) + ": field '" + what + ".types': expected a list");
    for (auto t : types) {
      auto name = t.IsScalar() ? t.Scalar() : std::string();
      auto bad = [&](const std::string& why) {
        return make_error(code, yaml::where(file, t) + ": field '" + what + ".types': " + why);
      };
      if (name == "any") {
        if (types.size() > 1) return bad("'any' stands alone (any type at all)");
        continue;
      }
      if (outputs && name == "same") {
        if (m.has_capability("source")) return bad("'same' keeps the input's type, and a source has no input");
        side.types.push_back(name);
        continue;
      }
      if (outputs && name.find('{') != std::string::npos) {
        auto field = type_field(name);
        auto* f = m.field(field);
        if (f == nullptr || f->type != field_type::enumeration)
          return bad("'" + name + "' names '{" + field + "}', which is not an enum field of the config schema");
        for (auto& v : f->values) {
          auto r = resolve_type(name, {{field, v}});
          if (r != "same" && !is_media_type(r))
            return bad("'" + name + "' with " + field + " '" + v + "' gives '" + r + "', which is not " +
                       expected_types);
        }
        side.types.push_back(name);
        continue;
      }
      if (!is_media_type(name)) {
        auto near = nearest(name, known_media_types());
        return bad("'" + name + "' is not " + expected_types + (near.empty() ? "" : "; did you mean '" + near + "'?"));
      }
      add_unique(side.types, name);
    }
  }
  if (auto keys = node[keys_name]) {
    side.keys_declared = true;
    if (!keys.IsSequence())
      return make_error(
          code, yaml::where(file, keys) + ": field '" + what + "." + keys_name + "': expected a list of metadata keys");
    for (auto k : keys) {
      if (!k.IsScalar() || k.Scalar().empty())
        return make_error(code, yaml::where(file, k) + ": field '" + what + "." + keys_name +
                                    "': expected a metadata key (a non-empty string)");
      add_unique(side.keys, k.Scalar());
    }
  }
  return {};
}

// A capability is a documented word or a namespaced one ("x-mine").
caf::error check_capability(const std::string& file, const YAML::Node& c) {
  auto word = c.IsScalar() ? c.Scalar() : std::string();
  auto& known = known_capabilities();
  if (std::find(known.begin(), known.end(), word) != known.end()) return {};
  if (word.size() > 2 && word.compare(0, 2, "x-") == 0) return {};
  auto list = joined(known);
  auto at = yaml::where(file, c) + ": field 'capabilities': ";
  if (is_media_type(word))
    return make_error(errc::invalid_manifest, at + "'" + word +
                                                  "' is a media type: declare it under 'inputs: {types: [...]}' or "
                                                  "'outputs: {types: [...]}'");
  auto near = nearest(word, known);
  return make_error(errc::invalid_manifest, at + "'" + word + "' is not a capability (" + list +
                                                ", or namespaced as x-NAME)" +
                                                (near.empty() ? "" : "; did you mean '" + near + "'?"));
}

}  // namespace

expected<manifest> load_manifest(const std::string& path) {
  const auto code = errc::invalid_manifest;
  auto doc = yaml::load_file(path, code);
  if (!doc) return doc.error();
  auto& root = *doc;
  if (auto err = yaml::check_keys(path, root, "manifest",
                                  {"name", "version", "abi", "library", "description", "capabilities", "dependencies",
                                   "config", "inputs", "outputs", "mode", "resources", "enforce"},
                                  code))
    return err;
  manifest m;
  m.path = fs::absolute(path).lexically_normal().string();
  auto require = [&](const char* key) -> caf::error {
    if (!root[key] || !root[key].IsScalar()) return make_error(code, path + ": missing required field '" + key + "'");
    return {};
  };
  for (auto* key : {"name", "version", "abi"})
    if (auto err = require(key)) return err;
  m.name = root["name"].Scalar();
  auto v = version::parse(root["version"].Scalar());
  if (!v)
    return make_error(code, yaml::where(path, root["version"]) + ": field 'version': expected " +
                                "MAJOR.MINOR.PATCH, got '" + root["version"].Scalar() + "'");
  m.version = *v;
  auto abi = yaml::scalar<uint32_t>(path, root["abi"], "abi", "an integer ABI version", code);
  if (!abi) return abi.error();
  m.abi = *abi;
  if (m.abi != TROUPE_ABI_VERSION)
    return make_error(code, yaml::where(path, root["abi"]) + ": field 'abi': plugin '" + m.name + "' declares ABI " +
                                std::to_string(m.abi) + ", this host speaks ABI " + std::to_string(TROUPE_ABI_VERSION));
  auto dir = fs::absolute(path).parent_path();
  m.library =
      (dir / (root["library"] ? root["library"].Scalar() : "libtroupe_" + m.name + ".so")).lexically_normal().string();
  if (root["description"]) m.description = root["description"].Scalar();
  if (auto caps = root["capabilities"]) {
    if (!caps.IsSequence())
      return make_error(code, yaml::where(path, caps) + ": field 'capabilities': expected a list");
    for (auto c : caps) {
      if (auto err = check_capability(path, c)) return err;
      m.capabilities.push_back(c.Scalar());
    }
  }
  if (auto deps = root["dependencies"]) {
    if (!deps.IsSequence())
      return make_error(code, yaml::where(path, deps) + ": field 'dependencies': expected a list");
    for (auto d : deps) {
      if (auto err = yaml::check_keys(path, d, "dependency", {"name", "version"}, code)) return err;
      if (!d["name"]) return make_error(code, yaml::where(path, d) + ": dependency: missing 'name'");
      dependency dep;
      dep.name = d["name"].Scalar();
      auto text = d["version"] ? d["version"].Scalar() : std::string();
      auto range = version_range::parse(text);
      if (!range)
        return make_error(code, yaml::where(path, d["version"]) + ": dependency '" + dep.name + "': version range '" +
                                    text + "' is not understood (expected e.g. \">=1.0.0 <2.0.0\" or \"^1.2\")");
      dep.range = *range;
      m.dependencies.push_back(std::move(dep));
    }
  }
  if (auto cfg = root["config"]) {
    if (!cfg.IsMap() && !cfg.IsNull())
      return make_error(code, yaml::where(path, cfg) + ": field 'config': expected a map of fields");
    for (auto it = cfg.begin(); it != cfg.end(); ++it) {
      auto f = parse_field(path, it->first.Scalar(), it->second);
      if (!f) return f.error();
      m.config.push_back(std::move(*f));
    }
  }
  for (auto [key, outputs] : {std::pair{"inputs", false}, std::pair{"outputs", true}})
    if (auto side = root[key])
      if (auto err = parse_side(path, side, outputs, m)) return err;
  if (m.has_capability("source") && m.inputs.declared)
    return make_error(code, yaml::where(path, root["inputs"]) + ": field 'inputs': a source takes no input");
  if (auto mode = root["mode"]) {
    if (mode.Scalar() == "embedded")
      m.mode = exec_mode::embedded;
    else if (mode.Scalar() == "isolated")
      m.mode = exec_mode::isolated;
    else
      return make_error(
          code, yaml::where(path, mode) + ": field 'mode': expected embedded or isolated, got '" + mode.Scalar() + "'");
  }
  if (auto enforce = root["enforce"]) {
    auto v = enforce.IsScalar() ? enforce.Scalar() : std::string();
    if (v != "strict" && v != "declared")
      return make_error(code,
                        yaml::where(path, enforce) + ": field 'enforce': expected strict or declared, got '" + v + "'");
    m.strict = v == "strict";
    if (m.strict && root["mode"] && m.mode == exec_mode::embedded)
      return make_error(code, yaml::where(path, enforce) +
                                  ": field 'enforce': strict runs the plugin isolated only, but field 'mode' says "
                                  "embedded");
    if (m.strict) m.mode = exec_mode::isolated;
  }
  if (auto res = root["resources"]) {
    std::set<std::string> given;
    if (auto err = read_resources(path, res, "resources", true, m.resources, given, code)) return err;
  }
  return m;
}

expected<config_values> validate_config(const manifest& m, const std::vector<config_entry>& entries,
                                        const std::string& where) {
  for (auto& e : entries) {
    if (m.field(e.key) != nullptr) continue;
    std::string list;
    for (auto& f : m.config) list += (list.empty() ? "" : ", ") + f.name;
    return make_error(errc::invalid_config, where + ":" + std::to_string(e.line) + ": config field '" + e.key +
                                                "' is not in the schema of plugin '" + m.name + "' (" + m.path +
                                                "; fields: " + (list.empty() ? "none" : list) + ")");
  }
  config_values out;
  for (auto& f : m.config) {
    auto it = std::find_if(entries.begin(), entries.end(), [&](auto& e) { return e.key == f.name; });
    if (it == entries.end()) {
      out.emplace_back(f.name, f.default_value);
      continue;
    }
    auto v = check_value(f, it->value);
    if (!v)
      return make_error(errc::invalid_config, where + ":" + std::to_string(it->line) + ": config field '" + f.name +
                                                  "' (" + to_string(f.type) + ") of plugin '" + m.name +
                                                  "': " + describe(v.error()));
    out.emplace_back(f.name, std::move(*v));
  }
  return out;
}

}  // namespace troupe
