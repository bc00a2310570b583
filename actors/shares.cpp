#include <troupe/shares.hpp>

#include <algorithm>

namespace troupe {

namespace {

// The names in `a` that are not in `b`, in a's order.
std::vector<std::string> missing_from(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<std::string> out;
  for (auto& n : a)
    if (std::find(b.begin(), b.end(), n) == b.end()) out.push_back(n);
  return out;
}

}  // namespace

std::vector<share_change> share_changes(const plan& old, const plan& next,
                                        const std::map<std::string, uint32_t>& moves) {
  std::vector<share_change> out;
  const size_t n = std::min(old.stages.size(), next.stages.size());
  for (size_t i = 0; i < n; ++i) {
    auto &o = old.stages[i], &x = next.stages[i];
    share_change c;
    c.stage = i;
    c.gone = missing_from(o.elsewhere, x.elsewhere);
    c.added = missing_from(x.elsewhere, o.elsewhere);
    c.arrives = o.remote && !x.remote;
    c.leaves = !o.remote && x.remote;
    if (c.gone.empty() && c.added.empty() && !c.arrives && !c.leaves) continue;
    if (auto mv = moves.find(x.spec.name); mv != moves.end()) c.generation = mv->second;
    out.push_back(std::move(c));
  }
  return out;
}

std::set<std::string> participants(const plan& p) {
  std::set<std::string> out;
  for (auto& ps : p.stages) out.insert(ps.elsewhere.begin(), ps.elsewhere.end());
  return out;
}

}  // namespace troupe
