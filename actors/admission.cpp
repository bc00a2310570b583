#include "admission.hpp"

#include "pipeline.hpp"
#include "stats.hpp"

#include <cstdio>

namespace troupe {

namespace {

std::string cores(double c) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", c);
  return buf;
}

// Why `need` does not fit beside `held` in `cap`; empty if it does.
std::string shortfall(const node_capacity& cap, const resources_amount& held, const resources_amount& need,
                      const std::string& what, const std::string& node) {
  auto& t = cap.total;
  if (t.memory_mb > 0 && need.memory_mb > 0 && held.memory_mb + need.memory_mb > t.memory_mb) {
    auto free = held.memory_mb < t.memory_mb ? t.memory_mb - held.memory_mb : 0;
    return "node " + node + " cannot take " + what + ": it needs " + std::to_string(need.memory_mb) +
           " MiB of memory, " + std::to_string(free) + " MiB free of " + std::to_string(t.memory_mb) + " MiB (" +
           cap.source + ")";
  }
  if (t.cpu_cores > 0 && need.cpu_cores > 0 && held.cpu_cores + need.cpu_cores > t.cpu_cores + 1e-9) {
    auto free = held.cpu_cores < t.cpu_cores ? t.cpu_cores - held.cpu_cores : 0;
    return "node " + node + " cannot take " + what + ": it needs " + cores(need.cpu_cores) + " cores, " + cores(free) +
           " free of " + cores(t.cpu_cores) + " (" + cap.source + ")";
  }
  return {};
}

// "512 MiB and 0.5 cores": what one replica asks for.
std::string each(const planned_stage& s) {
  auto r = request_of(s);
  std::string per;
  if (r.memory_mb > 0) per = std::to_string(r.memory_mb) + " MiB";
  if (r.cpu_cores > 0) per += (per.empty() ? "" : " and ") + cores(r.cpu_cores) + " cores";
  return per;
}

resources_amount times(resources_amount r, uint32_t n) {
  r.cpu_cores *= n;
  r.memory_mb *= n;
  return r;
}

}  // namespace

resources_amount request_of(const planned_stage& s) {
  if (s.remote) return {};
  return {s.manifest.resources.cpu_cores, s.manifest.resources.memory_mb};
}

uint32_t serving_replicas(const slot_table& slots, const std::string& stage) {
  uint32_t n = 0;
  for (auto& s : slots) {
    auto st = s->state.load();
    if (s->stage == stage && !s->quarantined.load() && st != instance_state::stopping && st != instance_state::stopped)
      ++n;
  }
  return n;
}

resources_amount held_by(const plan& p, const slot_table& slots) {
  resources_amount held;
  for (auto& s : p.stages)
    if (!s.remote) held += times(request_of(s), serving_replicas(slots, s.spec.name));
  return held;
}

std::string admit(const node_capacity& cap, resources_amount& held, const plan& p, const std::string& node) {
  for (auto& s : p.stages) {
    if (s.remote) continue;
    auto need = times(request_of(s), s.spec.replicas);
    auto n = s.spec.replicas;
    auto what = "pipeline '" + p.name + "': stage '" + s.spec.name + "' (" + std::to_string(n) +
                (n == 1 ? " replica of " : " replicas of ") + each(s) + ")";
    if (auto why = shortfall(cap, held, need, what, node); !why.empty()) return why;
    held += need;
  }
  return {};
}

std::string admit_replicas(const node_capacity& cap, const resources_amount& held, const planned_stage& s,
                           uint32_t more, const std::string& node) {
  auto what = std::to_string(more) + (more == 1 ? " more replica" : " more replicas") + " of stage '" + s.spec.name +
              "' (" + each(s) + " each)";
  return shortfall(cap, held, times(request_of(s), more), what, node);
}

std::string describe(const resources_amount& r) {
  std::string out;
  if (r.memory_mb > 0) out = "memory " + std::to_string(r.memory_mb) + " MiB";
  if (r.cpu_cores > 0) out += (out.empty() ? "" : ", ") + cores(r.cpu_cores) + " cores";
  return out.empty() ? "nothing counted" : out;
}

}  // namespace troupe
