#include "placement.hpp"

#include <algorithm>
#include <map>

namespace troupe::cluster {

namespace {

std::string list_text(const std::set<std::string>& names) {
  std::string out;
  for (auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none" : out;
}

std::string list_text(const std::vector<std::string>& names) {
  return list_text(std::set<std::string>(names.begin(), names.end()));
}

// The live node running the fewest stages by `load`, the lowest name among equals; empty if
// none is up.
std::string least_loaded(const std::set<std::string>& live, std::map<std::string, int>& load) {
  std::string best;
  for (auto& n : live)
    if (best.empty() || load[n] < load[best]) best = n;
  return best;
}

std::map<std::string, int> load_of(const std::vector<stage_placement>& stages) {
  std::map<std::string, int> load;
  for (auto& s : stages)
    for (auto& n : s.nodes) ++load[n];
  return load;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// Node said it has no room for the stage in this run.
bool no_room_for(const std::map<std::string, room_refusal>& refused, const std::string& run, const std::string& node,
                 const std::string& stage) {
  auto it = refused.find(node);
  return it != refused.end() && it->second.run == run && contains(it->second.stages, stage);
}

}  // namespace

expected<std::vector<stage_placement>> place(const std::vector<stage_request>& stages, const std::string& self,
                                             const std::set<std::string>& known, const std::set<std::string>& live,
                                             const std::string& source,
                                             const std::optional<std::set<std::string>>& room) {
  std::vector<stage_placement> out;
  for (auto& r : stages) {
    stage_placement s;
    s.stage = r.stage;
    if (r.nodes.size() == 1 && r.nodes[0] == "*") {
      s.any = true;
    } else {
      s.allowed = r.nodes.empty() ? std::vector<std::string>{self} : r.nodes;
      for (auto& n : s.allowed) {
        if (!known.count(n) && n != self)
          return make_error(errc::placement_refused,
                            source + ": stage '" + r.stage + "' is placed on node '" + n +
                                "', which is not a member of the cluster (members: " + list_text(known) + ")");
        if (!live.count(n))
          return make_error(errc::placement_refused,
                            source + ": stage '" + r.stage + "' is placed on node '" + n + "', which is down");
      }
      s.nodes = s.allowed;
    }
    out.push_back(std::move(s));
  }
  // Any node: the live one running the fewest of the pipeline's stages, in file order.
  auto load = load_of(out);
  for (auto& s : out) {
    if (!s.any) continue;
    auto best = least_loaded(room ? *room : live, load);
    if (best.empty())
      return make_error(errc::placement_refused, source + ": stage '" + s.stage + "' may run on any node, but " +
                                                     (room && !live.empty() ? "none up has room" : "none is up"));
    s.nodes = {best};
    ++load[best];
  }
  return out;
}

std::optional<replacement> replace(const placement_record& r, int64_t epoch, const std::set<std::string>& live,
                                   const std::map<std::string, room_refusal>& refused) {
  replacement out;
  out.next = r;
  auto& next = out.next;
  auto fence = [&](const std::string& node) {
    auto& f = next.fences[node];
    f = std::max<int64_t>(f, epoch);
  };
  for (auto& s : next.stages) {
    std::vector<std::string> up, gone, full;
    for (auto& n : s.nodes) (!live.count(n) ? gone : no_room_for(refused, r.run, n, s.stage) ? full : up).push_back(n);
    if (s.any) {
      if (!s.nodes.empty() && gone.empty() && full.empty()) continue;
      auto load = load_of(next.stages);
      for (auto& n : gone) --load[n];
      for (auto& n : full) --load[n];
      std::set<std::string> room;  // live nodes that did not say they have no room for it
      for (auto& n : live)
        if (!no_room_for(refused, r.run, n, s.stage)) room.insert(n);
      auto to = least_loaded(room, load);
      if (to.empty()) continue;       // no node is up, or none has room: it waits where it was
      for (auto& n : gone) fence(n);  // (not one without room: it never ran the stage)
      out.changes.push_back("stage '" + s.stage + "' moves from " + list_text(s.nodes) + " to node " + to +
                            (full.empty() ? "" : " (" + list_text(full) + " has no room for it)"));
      s.nodes = {to};
      ++s.moves;
      continue;
    }
    // Listed (or pinned) nodes: each one that is up, in the file's order.
    std::vector<std::string> want;
    for (auto& n : s.allowed)
      if (live.count(n)) want.push_back(n);
    if (want.empty() || want == s.nodes) continue;  // none up: it waits where it ran
    for (auto& n : s.nodes)
      if (!contains(want, n)) fence(n);
    out.changes.push_back("stage '" + s.stage + "' runs on " + list_text(want) + " (was " + list_text(s.nodes) + ")");
    s.nodes = want;
  }
  if (out.changes.empty()) return std::nullopt;
  return out;
}

std::vector<std::string> waiting(const placement_record& r, const std::set<std::string>& live,
                                 const std::map<std::string, room_refusal>& refused) {
  std::vector<std::string> out;
  for (auto& s : r.stages) {
    bool any_up = false;
    for (auto& n : s.nodes) any_up = any_up || live.count(n);
    if (!any_up) out.push_back("stage '" + s.stage + "' waits for " + list_text(s.nodes.empty() ? s.allowed : s.nodes));
    for (auto& n : s.nodes)
      if (live.count(n) && no_room_for(refused, r.run, n, s.stage))
        out.push_back("stage '" + s.stage + "' waits for room on " + n + ": " + refused.at(n).why);
  }
  return out;
}

placement_record self_fenced(const placement_record& r, const std::string& node) {
  auto out = r;
  for (auto& s : out.stages)
    if (s.movable_from(node)) std::erase(s.nodes, node);
  return out;
}

bool complete(const placement_record& r, const std::map<std::string, std::string>& done,
              const std::set<std::string>& live) {
  for (auto& n : r.nodes()) {
    auto it = done.find(n);
    if (it != done.end() && it->second == r.run) continue;
    if (r.state == pipeline_state::stopping && !live.count(n)) continue;
    return false;
  }
  return true;
}

}  // namespace troupe::cluster
