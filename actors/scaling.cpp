#include <troupe/scaling.hpp>

namespace troupe {

expected<scale_plan> scale_step(const std::string& stage, const std::vector<replica_view>& replicas, uint32_t n) {
  if (n < 1 || n > max_replicas)
    return make_error(errc::refused, "replicas must be between 1 and " + std::to_string(max_replicas));
  std::vector<size_t> active;
  for (auto& r : replicas) {
    if (!r.here) continue;  // other nodes' shares: scaled there
    if (r.retiring)
      return make_error(errc::busy, "stage '" + stage + "' is still draining a replica scaled away; try again");
    if (!r.quarantined) active.push_back(r.slot);
  }
  scale_plan p;
  p.from = static_cast<uint32_t>(active.size());
  if (n > p.from) p.add = n - p.from;
  for (auto k = active.size(); k > n; --k) p.retire.push_back(active[k - 1]);
  return p;
}

}  // namespace troupe
