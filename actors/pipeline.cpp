#include <troupe/pipeline.hpp>

#include <troupe/nearest.hpp>
#include <troupe/yaml_util.hpp>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>

namespace troupe {

const char* to_string(route_policy p) {
  switch (p) {
    case route_policy::round_robin: return "round_robin";
    case route_policy::least_loaded: return "least_loaded";
    case route_policy::by_stream: return "by_stream";
  }
  return "?";
}

const planned_stage* plan::find(const std::string& stage) const {
  for (auto& s : stages)
    if (s.spec.name == stage) return &s;
  return nullptr;
}

namespace {

constexpr auto code = errc::invalid_pipeline;

// "1048576", "512KiB", "64MiB", "1GiB" -> bytes; nothing for zero or anything else.
std::optional<uint64_t> parse_bytes(const YAML::Node& node) {
  if (!node.IsScalar()) return std::nullopt;
  const std::string& text = node.Scalar();
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 12) return std::nullopt;
  uint64_t n = std::stoull(text.substr(0, digits));
  auto unit = text.substr(digits);
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  int shift = unit.empty() ? 0 : unit == "KiB" ? 10 : unit == "MiB" ? 20 : unit == "GiB" ? 30 : -1;
  if (shift < 0 || n == 0 || n > (UINT64_MAX >> shift)) return std::nullopt;
  return n << shift;
}

int line_of(const YAML::Node& n) { return n.Mark().is_null() ? 0 : n.Mark().line + 1; }

caf::error read_restart(const std::string& file, const YAML::Node& node, restart_policy& p) {
  if (auto err = yaml::check_keys(
          file, node, "restart", {"max_restarts", "period_s", "backoff_initial_ms", "backoff_max_ms", "stable_after_s"},
          code))
    return err;
  auto u32 = [&](const char* key, uint32_t& slot) -> caf::error {
    if (!node[key]) return {};
    auto v = yaml::scalar<uint32_t>(file, node[key], std::string("restart.") + key, "a non-negative integer", code);
    if (!v) return v.error();
    slot = *v;
    return {};
  };
  auto real = [&](const char* key, double& slot) -> caf::error {
    if (!node[key]) return {};
    auto v = yaml::scalar<double>(file, node[key], std::string("restart.") + key, "a number of seconds", code);
    if (!v) return v.error();
    if (*v <= 0)
      return make_error(
          code, yaml::where(file, node[key]) + ": field 'restart." + key + "': expected a positive number of seconds");
    slot = *v;
    return {};
  };
  if (auto e = u32("max_restarts", p.max_restarts)) return e;
  if (auto e = u32("backoff_initial_ms", p.backoff_initial_ms)) return e;
  if (auto e = u32("backoff_max_ms", p.backoff_max_ms)) return e;
  if (auto e = real("period_s", p.period_s)) return e;
  if (auto e = real("stable_after_s", p.stable_after_s)) return e;
  if (p.backoff_max_ms < p.backoff_initial_ms)
    return make_error(code, yaml::where(file, node) + ": restart: backoff_max_ms must be at least backoff_initial_ms");
  return {};
}

// "a -> b -> c" into edges a->b, b->c.
caf::error read_edge(const std::string& file, const YAML::Node& node, std::vector<edge_spec>& out) {
  auto bad = [&] {
    return make_error(code, yaml::where(file, node) +
                                ": edge: expected \"from -> to\" (or a chain \"a -> b -> c\"), got '" +
                                (node.IsScalar() ? node.Scalar() : std::string("a non-string")) + "'");
  };
  if (!node.IsScalar()) return bad();
  std::vector<std::string> names;
  std::string text = node.Scalar();
  size_t pos = 0;
  while (true) {
    auto arrow = text.find("->", pos);
    auto name = text.substr(pos, arrow == std::string::npos ? std::string::npos : arrow - pos);
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    if (name.empty()) return bad();
    names.push_back(name);
    if (arrow == std::string::npos) break;
    pos = arrow + 2;
  }
  if (names.size() < 2) return bad();
  for (size_t i = 0; i + 1 < names.size(); ++i) out.push_back({names[i], names[i + 1], line_of(node)});
  return {};
}

}  // namespace

expected<pipeline_spec> load_pipeline(const std::string& path) {
  auto doc = yaml::load_file(path, code);
  if (!doc) return doc.error();
  auto& root = *doc;
  if (auto err = yaml::check_keys(path, root, "pipeline",
                                  {"pipeline", "window", "window_bytes", "restart", "stages", "edges",
                                   "dead_letter_after", "dead_letters", "priority"},
                                  code))
    return err;
  pipeline_spec spec;
  spec.path = path;
  spec.name = root["pipeline"] ? root["pipeline"].Scalar() : "pipeline";
  if (root["window"]) {
    auto w = yaml::scalar<uint32_t>(path, root["window"], "window", "a positive integer", code);
    if (!w) return w.error();
    if (*w == 0)
      return make_error(code, yaml::where(path, root["window"]) + ": field 'window': expected a positive integer");
    spec.window = *w;
  }
  if (root["window_bytes"]) {
    auto b = parse_bytes(root["window_bytes"]);
    if (!b)
      return make_error(code, yaml::where(path, root["window_bytes"]) +
                                  ": field 'window_bytes': expected a positive size in bytes (e.g. 1048576, "
                                  "512KiB, 64MiB, 1GiB)");
    spec.window_bytes = *b;
  }
  if (root["dead_letter_after"]) {
    auto k = yaml::scalar<uint32_t>(path, root["dead_letter_after"], "dead_letter_after", "a positive integer", code);
    if (!k) return k.error();
    if (*k == 0)
      return make_error(code, yaml::where(path, root["dead_letter_after"]) +
                                  ": field 'dead_letter_after': expected a positive integer");
    spec.dead_letter_after = *k;
  }
  if (root["dead_letters"]) {
    auto f = yaml::scalar<std::string>(path, root["dead_letters"], "dead_letters", "a file path", code);
    if (!f) return f.error();
    spec.dead_letters = *f;
  }
  if (root["priority"]) {
    auto v = yaml::scalar<int32_t>(path, root["priority"], "priority", "an integer from -1000 to 1000", code);
    if (!v) return v.error();
    if (*v < -1000 || *v > 1000)
      return make_error(
          code, yaml::where(path, root["priority"]) + ": field 'priority': expected an integer from -1000 to 1000");
    spec.priority = *v;
  }
  restart_policy defaults;
  if (root["restart"])
    if (auto err = read_restart(path, root["restart"], defaults)) return err;
  auto stages = root["stages"];
  if (!stages || !stages.IsSequence() || stages.size() == 0)
    return make_error(code, path + ": field 'stages': expected a non-empty list of stages");
  std::set<std::string> names;
  for (auto s : stages) {
    if (auto err = yaml::check_keys(path, s, "stage",
                                    {"name", "plugin", "config", "replicas", "mode", "restart", "routing",
                                     "deadline_ms", "resources", "node", "nodes", "idle_release_s", "enforce"},
                                    code))
      return err;
    stage_spec st;
    st.line = line_of(s);
    st.restart = defaults;
    if (!s["plugin"] || !s["plugin"].IsScalar())
      return make_error(code, yaml::where(path, s) + ": stage: missing field 'plugin'");
    st.plugin = s["plugin"].Scalar();
    st.name = s["name"] ? s["name"].Scalar() : st.plugin;
    if (!names.insert(st.name).second)
      return make_error(code, yaml::where(path, s) + ": stage name '" + st.name +
                                  "' is used twice (names must be unique; set 'name')");
    if (auto cfg = s["config"]) {
      if (!cfg.IsMap() && !cfg.IsNull())
        return make_error(code, yaml::where(path, cfg) + ": stage '" + st.name + "': field 'config': expected a map");
      for (auto it = cfg.begin(); it != cfg.end(); ++it) {
        if (!it->second.IsScalar())
          return make_error(code, yaml::where(path, it->second) + ": stage '" + st.name + "': config field '" +
                                      it->first.Scalar() + "': expected a single value");
        st.config.push_back({it->first.Scalar(), it->second.Scalar(), line_of(it->second)});
      }
    }
    if (s["replicas"]) {
      auto r = yaml::scalar<uint32_t>(path, s["replicas"], "replicas", "a positive integer", code);
      if (!r) return r.error();
      if (*r == 0 || *r > max_replicas)
        return make_error(code, yaml::where(path, s["replicas"]) + ": stage '" + st.name +
                                    "': field 'replicas': expected 1 to " + std::to_string(max_replicas));
      st.replicas = *r;
    }
    if (auto m = s["mode"]) {
      if (m.Scalar() == "embedded")
        st.mode = exec_mode::embedded;
      else if (m.Scalar() == "isolated")
        st.mode = exec_mode::isolated;
      else
        return make_error(code, yaml::where(path, m) + ": stage '" + st.name +
                                    "': field 'mode': expected embedded or isolated, got '" + m.Scalar() + "'");
    }
    if (auto e = s["enforce"]) {
      auto v = e.IsScalar() ? e.Scalar() : std::string();
      if (v != "strict" && v != "declared")
        return make_error(code, yaml::where(path, e) + ": stage '" + st.name +
                                    "': field 'enforce': expected strict or declared, got '" + v + "'");
      st.strict = v == "strict";
    }
    if (auto r = s["routing"]) {
      auto v = r.Scalar();
      if (v == "round_robin")
        st.routing = route_policy::round_robin;
      else if (v == "least_loaded")
        st.routing = route_policy::least_loaded;
      else if (v == "by_stream")
        st.routing = route_policy::by_stream;
      else
        return make_error(code, yaml::where(path, r) + ": stage '" + st.name +
                                    "': field 'routing': expected round_robin, least_loaded or by_stream, got '" + v +
                                    "'");
    }
    if (s["deadline_ms"]) {
      auto d = yaml::scalar<uint32_t>(path, s["deadline_ms"], "deadline_ms", "a positive integer", code);
      if (!d) return d.error();
      if (*d == 0)
        return make_error(code,
                          yaml::where(path, s["deadline_ms"]) + ": field 'deadline_ms': expected a positive integer");
      st.deadline_ms = *d;
    }
    if (s["idle_release_s"]) {
      auto v = yaml::scalar<double>(path, s["idle_release_s"], "idle_release_s", "a number of seconds", code);
      if (!v) return v.error();
      if (!(*v > 0) || *v > 86400)
        return make_error(code, yaml::where(path, s["idle_release_s"]) + ": stage '" + st.name +
                                    "': field 'idle_release_s': expected more than 0 and up to 86400 seconds");
      st.idle_release_s = *v;
    }
    if (auto res = s["resources"]) {
      if (!res.IsMap())
        return make_error(code,
                          yaml::where(path, res) + ": stage '" + st.name + "': field 'resources': expected a map");
      if (auto err = read_resources(path, res, "resources", false, st.resources, st.resources_given, code)) return err;
    }
    if (s["node"] && s["nodes"])
      return make_error(
          code, yaml::where(path, s["nodes"]) + ": stage '" + st.name + "': give either 'node' or 'nodes', not both");
    if (s["node"]) {
      auto n = yaml::scalar<std::string>(path, s["node"], "node", "a node name", code);
      if (!n) return n.error();
      if (n->empty())
        return make_error(code, yaml::where(path, s["node"]) + ": stage '" + st.name +
                                    "': field 'node': expected a node name or 'any'");
      st.nodes.push_back(*n == "any" ? "*" : *n);
    }
    if (auto list = s["nodes"]) {
      if (!list.IsSequence() || list.size() == 0)
        return make_error(code, yaml::where(path, list) + ": stage '" + st.name +
                                    "': field 'nodes': expected a list of node names, in order of preference");
      for (auto item : list) {
        auto n = yaml::scalar<std::string>(path, item, "nodes", "a node name", code);
        if (!n) return n.error();
        if (n->empty() || *n == "any")
          return make_error(code, yaml::where(path, item) + ": stage '" + st.name +
                                      "': field 'nodes': expected node names (for any node, write node: any)");
        st.nodes.push_back(*n);
      }
    }
    if (s["restart"])
      if (auto err = read_restart(path, s["restart"], st.restart)) return err;
    spec.stages.push_back(std::move(st));
  }
  if (auto edges = root["edges"]) {
    if (!edges.IsSequence())
      return make_error(code, yaml::where(path, edges) + ": field 'edges': expected a list of \"from -> to\"");
    for (auto e : edges)
      if (auto err = read_edge(path, e, spec.edges)) return err;
  }
  for (auto& e : spec.edges)
    for (auto* n : {&e.from, &e.to})
      if (!names.count(*n))
        return make_error(code, path + ":" + std::to_string(e.line) + ": edge '" + e.from + " -> " + e.to +
                                    "': no stage named '" + *n + "'" + did_you_mean(*n, names));
  return spec;
}

std::optional<std::vector<std::string>> edge_types(const planned_stage& from, const planned_stage& to) {
  auto& takes = to.manifest.inputs;
  if (takes.any_type()) return from.gives;
  if (!from.gives) return takes.types;
  std::vector<std::string> meet;
  for (auto& t : *from.gives)
    if (std::find(takes.types.begin(), takes.types.end(), t) != takes.types.end()) meet.push_back(t);
  return meet;
}

namespace {

// Types and metadata along the edges, producers first (the reverse of the start order): each
// edge's types must meet what its consumer takes, and its keys cover what the consumer needs.
// An output inherits its input's metadata, so the keys known on a stage's outputs are what it
// gives and what all its inputs carried. A plugin that declares nothing is not checked.
caf::error check_edges(plan& p, const pipeline_spec& spec) {
  std::map<std::pair<std::string, std::string>, int> lines;
  for (auto& e : spec.edges) lines.emplace(std::pair{e.from, e.to}, e.line);
  std::vector<std::optional<std::set<std::string>>> keys(p.stages.size());
  for (auto it = p.start_order.rbegin(); it != p.start_order.rend(); ++it) {
    auto& s = p.stages[*it];
    if (s.remote) continue;  // its node knows its plugin
    auto& takes = s.manifest.inputs;
    std::optional<std::vector<std::string>> in = std::vector<std::string>{};
    std::optional<std::set<std::string>> carried;
    bool first = true;
    for (auto u : s.upstream) {
      auto& from = p.stages[u];
      auto at = spec.path + ":" + std::to_string(lines[{from.spec.name, s.spec.name}]) + ": edge '" + from.spec.name +
                " -> " + s.spec.name + "': ";
      auto by = [](const planned_stage& x) { return "stage '" + x.spec.name + "' (plugin " + x.manifest.name + ")"; };
      auto carries = edge_types(from, s);
      if (carries && carries->empty())
        return make_error(errc::type_mismatch, at + by(from) + " gives " + joined(*from.gives) + ", but " + by(s) +
                                                   " takes " + joined(takes.types) + " (" + s.manifest.path + ")");
      if (!carries)
        in.reset();
      else if (in)
        for (auto& t : *carries)
          if (std::find(in->begin(), in->end(), t) == in->end()) in->push_back(t);
      if (keys[u])
        for (auto& k : takes.keys)
          if (!keys[u]->count(k))
            return make_error(errc::type_mismatch, at + by(s) + " needs metadata '" + k + "', which " + by(from) +
                                                       " does not give (" + s.manifest.path + ")");
      if (first)
        carried = keys[u];
      else if (carried && keys[u]) {
        std::set<std::string> both;
        for (auto& k : *carried)
          if (keys[u]->count(k)) both.insert(k);
        carried = std::move(both);
      } else {
        carried.reset();
      }
      first = false;
    }
    if (s.is_source()) {
      in.reset();
      carried = std::set<std::string>{};
    }
    s.gives = s.manifest.output_types(s.config, in);
    if (s.manifest.outputs.keys_declared && carried) {
      carried->insert(s.manifest.outputs.keys.begin(), s.manifest.outputs.keys.end());
      keys[*it] = std::move(carried);
    }
  }
  return {};
}

}  // namespace

caf::error check_placed_edges(const pipeline_spec& spec, const std::map<std::string, stage_types>& types) {
  plan p;
  std::map<std::string, size_t> index;
  for (auto& s : spec.stages) {
    planned_stage ps;
    ps.spec = s;
    if (auto it = types.find(s.name); it != types.end()) {
      ps.manifest.name = it->second.plugin + " on node " + it->second.node;  // as errors name it
      ps.manifest.path = it->second.manifest;
      ps.manifest.inputs = it->second.inputs;
      ps.manifest.outputs = it->second.outputs;
      ps.config = it->second.config;
    } else {
      ps.remote = true;
    }
    index[s.name] = p.stages.size();
    p.stages.push_back(std::move(ps));
  }
  std::set<std::pair<size_t, size_t>> seen;
  for (auto& e : spec.edges) {
    auto a = index.find(e.from), b = index.find(e.to);
    if (a == index.end() || b == index.end() || a->second == b->second || !seen.insert({a->second, b->second}).second)
      continue;
    p.stages[a->second].downstream.push_back(b->second);
    p.stages[b->second].upstream.push_back(a->second);
  }
  // Producers first (Kahn), then reversed into a start order as plan_pipeline makes it.
  std::vector<size_t> waiting(p.stages.size()), ready, order;
  for (size_t i = 0; i < p.stages.size(); ++i)
    if ((waiting[i] = p.stages[i].upstream.size()) == 0) ready.push_back(i);
  while (!ready.empty()) {
    auto i = ready.back();
    ready.pop_back();
    order.push_back(i);
    for (auto d : p.stages[i].downstream)
      if (--waiting[d] == 0) ready.push_back(d);
  }
  if (order.size() != p.stages.size()) return {};  // a cycle: each node's planning names it
  p.start_order.assign(order.rbegin(), order.rend());
  return check_edges(p, spec);
}

expected<plan> plan_pipeline(const pipeline_spec& spec, const catalog& plugins, const placement* placed) {
  plan p;
  p.path = spec.path;
  p.name = spec.name;
  p.window = spec.window;
  p.window_bytes = spec.window_bytes;
  p.dead_letter_after = spec.dead_letter_after;
  p.dead_letters = spec.dead_letters;
  p.priority = spec.priority;
  std::map<std::string, size_t> index;
  for (auto& s : spec.stages) {
    std::vector<std::string> nodes, elsewhere;
    if (placed) {
      auto it = placed->nodes_of.find(s.name);
      nodes = it != placed->nodes_of.end() ? it->second : std::vector<std::string>{placed->self};
      for (auto& n : nodes)
        if (n != placed->self) elsewhere.push_back(n);
      if (elsewhere.size() == nodes.size()) {
        planned_stage ps;
        ps.spec = s;
        ps.manifest.name = s.plugin;
        ps.mode = s.strict.value_or(false) ? exec_mode::isolated : s.mode.value_or(exec_mode::embedded);
        ps.nodes = nodes;
        ps.elsewhere = elsewhere;
        ps.remote = true;
        index[s.name] = p.stages.size();
        p.stages.push_back(std::move(ps));
        continue;
      }
    }
    auto m = plugins.lookup(s.plugin);
    if (!m)
      return make_error(errc::plugin_not_found,
                        spec.path + ":" + std::to_string(s.line) + ": stage '" + s.name + "': " + describe(m.error()));
    auto where = spec.path + " (stage '" + s.name + "')";
    auto cfg = validate_config(**m, s.config, spec.path);
    if (!cfg) return cfg.error();
    planned_stage ps;
    ps.spec = s;
    ps.manifest = **m;
    ps.config = std::move(*cfg);
    ps.mode = s.mode.value_or(ps.manifest.mode);
    // enforce: strict (the stage's or its manifest's) runs it isolated, where its resources hold.
    auto at = spec.path + ":" + std::to_string(s.line) + ": stage '" + s.name + "'";
    if (ps.manifest.strict && s.strict == false)
      return make_error(errc::invalid_config,
                        at + ": enforce declared, but its plugin's manifest says enforce: strict (" + ps.manifest.path +
                            "); a stage may only tighten it");
    if (ps.manifest.strict || s.strict.value_or(false)) {
      if (s.mode == exec_mode::embedded)
        return make_error(errc::invalid_config,
                          at + ": mode embedded, but its resources must be enforced (enforce: strict" +
                              (ps.manifest.strict ? " in " + ps.manifest.path : std::string()) +
                              "): it runs isolated only");
      ps.mode = exec_mode::isolated;
    }
    if (!s.resources_given.empty() && ps.mode == exec_mode::embedded)
      return make_error(errc::invalid_config, spec.path + ":" + std::to_string(s.line) + ": stage '" + s.name +
                                                  "': runs embedded, in the node's process, where resources are not "
                                                  "enforced (set mode: isolated)");
    if (s.idle_release_s > 0 && ps.mode == exec_mode::embedded)
      return make_error(errc::invalid_config, spec.path + ":" + std::to_string(s.line) + ": stage '" + s.name +
                                                  "': idle_release_s ends an isolated worker when idle; this stage "
                                                  "runs embedded, in the node's process (set mode: isolated)");
    if (auto why = tighten(ps.manifest.resources, s.resources, s.resources_given))
      return make_error(errc::invalid_config, spec.path + ":" + std::to_string(s.line) + ": stage '" + s.name +
                                                  "': " + *why + " (" + ps.manifest.path + ")");
    ps.deadline_ms = s.deadline_ms.value_or(ps.manifest.resources.deadline_ms);
    ps.nodes = std::move(nodes);
    ps.elsewhere = std::move(elsewhere);
    index[s.name] = p.stages.size();
    p.stages.push_back(std::move(ps));
  }
  std::set<std::pair<size_t, size_t>> seen;
  for (auto& e : spec.edges) {
    auto a = index[e.from], b = index[e.to];
    if (a == b)
      return make_error(errc::cycle, spec.path + ":" + std::to_string(e.line) + ": edge '" + e.from + " -> " + e.to +
                                         "' feeds a stage into itself");
    if (!seen.insert({a, b}).second) continue;
    p.stages[a].downstream.push_back(b);
    p.stages[b].upstream.push_back(a);
  }
  for (auto& s : p.stages) {
    if (s.remote) continue;  // its node checks it
    bool source_plugin = s.manifest.has_capability("source");
    auto at = spec.path + ":" + std::to_string(s.spec.line) + ": stage '" + s.spec.name + "'";
    if (s.is_source() && s.spec.idle_release_s > 0)
      return make_error(code, at + ": field 'idle_release_s': a source makes frames, it is never idle");
    if (s.is_source() && !source_plugin)
      return make_error(code, at + " has no input edge, but plugin '" + s.manifest.name +
                                  "' is not a source (capability 'source'); add an edge into it");
    if (!s.is_source() && source_plugin)
      return make_error(
          code, at + ": plugin '" + s.manifest.name + "' is a source and takes no input, but an edge leads into it");
  }
  // Start-before relation: consumers before their producers, a plugin's dependencies before it.
  struct relation {
    size_t before;
    std::string why;
  };
  std::vector<std::vector<relation>> needs(p.stages.size());
  for (size_t i = 0; i < p.stages.size(); ++i) {
    auto& s = p.stages[i];
    for (auto d : s.downstream) needs[i].push_back({d, "feeds"});
    for (auto& dep : s.manifest.dependencies) {
      bool found = false;
      std::string near;
      for (size_t j = 0; j < p.stages.size(); ++j) {
        auto& o = p.stages[j];
        if (o.manifest.name != dep.name) continue;
        if (!o.remote && !dep.range.contains(o.manifest.version)) {
          near = "; stage '" + o.spec.name + "' runs version " + o.manifest.version.to_string();
          continue;
        }
        if (j != i) needs[i].push_back({j, "depends on"});
        found = true;
      }
      if (!found)
        return make_error(errc::dependency_error,
                          spec.path + ":" + std::to_string(s.spec.line) + ": stage '" + s.spec.name + "': plugin '" +
                              s.manifest.name + "' depends on plugin '" + dep.name + "'" +
                              (dep.range.text.empty() ? "" : " " + dep.range.text) +
                              ", which no stage of the pipeline runs" + near + " (manifest " + s.manifest.path + ")");
    }
  }
  // Depth-first topological sort with a stack of its own (a chain of 100,000 stages costs no
  // call stack); a back edge is a cycle, reported with its path.
  std::vector<int> mark(p.stages.size(), 0);  // 0 new, 1 on the path, 2 done
  struct step {
    size_t stage, next = 0;  // the stage, and which of its needs comes next
  };
  std::vector<step> path;
  for (size_t root = 0; root < p.stages.size(); ++root) {
    if (mark[root] != 0) continue;
    mark[root] = 1;
    path.push_back({root});
    while (!path.empty()) {
      auto& top = path.back();
      if (top.next == needs[top.stage].size()) {
        mark[top.stage] = 2;
        p.start_order.push_back(top.stage);
        path.pop_back();
        continue;
      }
      auto& r = needs[top.stage][top.next++];
      if (mark[r.before] == 1) {
        std::string msg;
        auto from = std::find_if(path.begin(), path.end(), [&](const step& e) { return e.stage == r.before; });
        for (auto it = from; it != path.end(); ++it) {
          auto& why = needs[it->stage][it->next - 1].why;
          msg +=
              "'" + p.stages[it->stage].spec.name + "' (plugin " + p.stages[it->stage].manifest.name + ") " + why + " ";
        }
        msg += "'" + p.stages[r.before].spec.name + "'";
        return make_error(errc::cycle, spec.path + ": the start order has a cycle: " + msg);
      }
      if (mark[r.before] == 0) {
        mark[r.before] = 1;
        path.push_back({r.before});
      }
    }
  }
  if (auto err = check_edges(p, spec)) return err;
  return p;
}

}  // namespace troupe
