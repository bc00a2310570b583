#include "records.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace troupe::cluster {

namespace {

using json = nlohmann::json;

caf::error bad(const std::string& key, const std::string& why) {
  return make_error(errc::invalid_record, "record " + key + " in the cluster's store: " + why);
}

// Reads a field of the expected JSON type into out; false if it is there with another type.
template <class T>
bool field(const json& j, const char* name, T& out) {
  auto it = j.find(name);
  if (it == j.end()) return true;
  try {
    out = it->get<T>();
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

}  // namespace

std::string to_json(const node_info& n) {
  return json{{"name", n.name}, {"peer", n.peer}, {"admin", n.admin}, {"metrics", n.metrics}, {"data", n.data}}.dump();
}

expected<node_info> parse_node_info(const std::string& key, const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad(key, "expected a JSON object");
  node_info n;
  if (!field(j, "name", n.name) || !field(j, "peer", n.peer) || !field(j, "admin", n.admin) ||
      !field(j, "metrics", n.metrics) || !field(j, "data", n.data))
    return bad(key, "expected text in name, peer, admin, metrics and data");
  if (n.name.empty()) return bad(key, "no node name");
  return n;
}

const char* to_string(pipeline_state s) {
  switch (s) {
    case pipeline_state::running: return "running";
    case pipeline_state::stopping: return "stopping";
    case pipeline_state::finished: return "finished";
  }
  return "?";
}

const stage_placement* placement_record::find(const std::string& stage) const {
  for (auto& s : stages)
    if (s.stage == stage) return &s;
  return nullptr;
}

bool placement_record::runs_on(const std::string& node) const {
  for (auto& s : stages)
    if (std::find(s.nodes.begin(), s.nodes.end(), node) != s.nodes.end()) return true;
  return false;
}

std::set<std::string> placement_record::nodes() const {
  std::set<std::string> out;
  for (auto& s : stages) out.insert(s.nodes.begin(), s.nodes.end());
  return out;
}

std::string to_json(const placement_record& r) {
  json stages = json::array();
  for (auto& s : r.stages)
    stages.push_back(
        {{"stage", s.stage}, {"allowed", s.allowed}, {"any", s.any}, {"nodes", s.nodes}, {"moves", s.moves}});
  return json{{"pipeline", r.pipeline},
              {"run", r.run},
              {"source", r.source},
              {"text", r.text},
              {"deployed_to", r.deployed_to},
              {"state", to_string(r.state)},
              {"stages", stages},
              {"fences", r.fences}}
      .dump();
}

expected<placement_record> parse_record(const std::string& key, const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad(key, "expected a JSON object");
  placement_record r;
  std::string state = "running";
  if (!field(j, "pipeline", r.pipeline) || !field(j, "run", r.run) || !field(j, "source", r.source) ||
      !field(j, "text", r.text) || !field(j, "deployed_to", r.deployed_to) || !field(j, "state", state) ||
      !field(j, "fences", r.fences))
    return bad(key, "expected text in pipeline, run, source, text, deployed_to and state, and fences of numbers");
  if (r.pipeline.empty() || r.run.empty()) return bad(key, "no pipeline name or run");
  if (state == "running")
    r.state = pipeline_state::running;
  else if (state == "stopping")
    r.state = pipeline_state::stopping;
  else if (state == "finished")
    r.state = pipeline_state::finished;
  else
    return bad(key, "state '" + state + "' (expected running, stopping or finished)");
  auto list = j.find("stages");
  if (list == j.end() || !list->is_array()) return bad(key, "expected a list of stages");
  for (auto& x : *list) {
    stage_placement s;
    if (!x.is_object() || !field(x, "stage", s.stage) || !field(x, "allowed", s.allowed) || !field(x, "any", s.any) ||
        !field(x, "nodes", s.nodes) || !field(x, "moves", s.moves) || s.stage.empty())
      return bad(key, "a stage without its name, allowed and current nodes, any and moves");
    r.stages.push_back(std::move(s));
  }
  return r;
}

std::string to_json(const room_refusal& r) { return json{{"run", r.run}, {"stages", r.stages}, {"why", r.why}}.dump(); }

expected<room_refusal> parse_room_refusal(const std::string& key, const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad(key, "expected a JSON object");
  room_refusal r;
  if (!field(j, "run", r.run) || !field(j, "stages", r.stages) || !field(j, "why", r.why))
    return bad(key, "expected run and why as strings and stages as a list of strings");
  if (r.run.empty()) return bad(key, "field 'run' is missing");
  return r;
}

const room_refusal* cluster_view::pipeline::refused_by(const std::string& node) const {
  auto it = refused.find(node);
  return it != refused.end() && it->second.run == record.run ? &it->second : nullptr;
}

std::set<std::string> cluster_view::live() const {
  std::set<std::string> out;
  for (auto& [n, lease] : members) out.insert(n);
  return out;
}

cluster_view read_view(const keyspace& keys, const etcd_range& range, std::vector<std::string>& problems) {
  cluster_view v;
  v.revision = range.revision;
  std::map<std::string, std::string> leaders;
  std::map<std::string, std::map<std::string, std::string>> done;
  std::map<std::string, std::map<std::string, room_refusal>> refused;
  for (auto& kv : range.kvs) {
    if (kv.key.rfind(keys.root, 0) != 0) continue;
    auto rest = kv.key.substr(keys.root.size());
    auto slash = rest.find('/');
    if (slash == std::string::npos) continue;
    auto kind = rest.substr(0, slash), name = rest.substr(slash + 1);
    if (kind == "nodes") {
      auto n = parse_node_info(kv.key, kv.value);
      if (!n)
        problems.push_back(describe(n.error()));
      else
        v.nodes[name] = std::move(*n);
    } else if (kind == "members") {
      v.members[name] = kv.lease;
    } else if (kind == "pipelines") {
      auto r = parse_record(kv.key, kv.value);
      if (!r) {
        problems.push_back(describe(r.error()));
        continue;
      }
      auto& p = v.pipelines[name];
      p.record = std::move(*r);
      p.epoch = kv.mod_revision;
    } else if (kind == "leaders") {
      leaders[name] = kv.value;
    } else if (kind == "parts") {
      auto at = name.rfind('/');
      if (at != std::string::npos) done[name.substr(0, at)][name.substr(at + 1)] = kv.value;
    } else if (kind == "refusals") {
      auto at = name.rfind('/');
      if (at == std::string::npos) continue;
      auto r = parse_room_refusal(kv.key, kv.value);
      if (!r)
        problems.push_back(describe(r.error()));
      else
        refused[name.substr(0, at)][name.substr(at + 1)] = std::move(*r);
    }
  }
  for (auto& [name, p] : v.pipelines) {
    if (auto it = leaders.find(name); it != leaders.end()) p.leader = it->second;
    if (auto it = done.find(name); it != done.end()) p.done = it->second;
    if (auto it = refused.find(name); it != refused.end()) p.refused = it->second;
  }
  return v;
}

}  // namespace troupe::cluster
