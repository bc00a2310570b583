// Capacity and admission: a node takes only the work its capacity holds.
//
// Each stage asks, per replica, for what its manifest's `resources` declare (tightened by the
// stage): `memory_mb` and `cpu_cores` (0: asks for nothing of it). A node's capacity is its
// node.yaml's `capacity` or, unsaid, the machine's (its processors and memory). A pipeline, a
// node's part of one, or more replicas are admitted only if what they ask for fits beside what
// the node runs already; a refusal names the node, the stage and the shortfall.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace troupe {

struct plan;
struct planned_stage;
struct slot_stats;

/// What a node may give out, or what work asks for or holds.
struct resources_amount {
  double cpu_cores = 0;
  uint64_t memory_mb = 0;
  resources_amount& operator+=(const resources_amount& o) {
    cpu_cores += o.cpu_cores;
    memory_mb += o.memory_mb;
    return *this;
  }
};

struct node_capacity {
  resources_amount total;
  std::string source;  // where the figures come from, for refusals: "node.yaml capacity", "this machine"
};

/// This machine's: its processors and its memory.
inline node_capacity machine_capacity() {
  node_capacity c;
  c.source = "this machine";
  c.total.cpu_cores = std::max(1u, std::thread::hardware_concurrency());
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) c.total.memory_mb = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) >> 20;
  return c;
}

/// One replica of a stage asks for.
resources_amount request_of(const planned_stage& s);

/// Replicas of a stage that serve now (not scaled away, stopped or quarantined).
uint32_t serving_replicas(const std::vector<std::shared_ptr<slot_stats>>& slots, const std::string& stage);

/// What the stages of p that run on this node hold: each at its serving replicas.
resources_amount held_by(const plan& p, const std::vector<std::shared_ptr<slot_stats>>& slots);

/// Admits the stages of p that run on `node` (each at its planned replicas) beside `held`,
/// which grows by what is admitted; empty, or why not.
std::string admit(const node_capacity& cap, resources_amount& held, const plan& p, const std::string& node);

/// Admits `more` replicas of stage s beside `held`; empty, or why not.
std::string admit_replicas(const node_capacity& cap, const resources_amount& held, const planned_stage& s,
                           uint32_t more, const std::string& node);

/// "memory 8192 MiB, 2 cores" (what is not counted is left out; "nothing counted" if neither).
std::string describe(const resources_amount& r);

}  // namespace troupe
