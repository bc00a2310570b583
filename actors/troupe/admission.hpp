// Capacity and admission: a node takes only the work its capacity holds.
//
// Each stage asks, per replica, for what its manifest's `resources` declare (tightened by the
// stage): `memory_mb`, `cpu_cores` and `gpus` (0: asks for nothing of it). A node's capacity is
// its node.yaml's `capacity` or, unsaid, the machine's (its processors, memory and GPUs). Memory
// or cores of 0 are not counted; 0 GPUs are none: a stage that asks for one does not fit. A pipeline, a
// node's part of one, or more replicas are admitted only if what they ask for fits beside what
// the node runs already; a refusal names the node, the stage and the shortfall. A pipeline that
// does not fit may take room from pipelines of lower `priority`: their stages give back
// replicas (drained, as for scaling down; never below one), lowest priority first.
#pragma once

#include <troupe/error.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace troupe {

struct plan;
struct planned_stage;
struct slot_stats;

/// What a node may give out, or what work asks for or holds.
struct resources_amount {
  double cpu_cores = 0;
  uint64_t memory_mb = 0;
  uint32_t gpus = 0;
  resources_amount& operator+=(const resources_amount& o) {
    cpu_cores += o.cpu_cores;
    memory_mb += o.memory_mb;
    gpus += o.gpus;
    return *this;
  }
  resources_amount& operator-=(const resources_amount& o) {
    cpu_cores = cpu_cores > o.cpu_cores ? cpu_cores - o.cpu_cores : 0;
    memory_mb = memory_mb > o.memory_mb ? memory_mb - o.memory_mb : 0;
    gpus = gpus > o.gpus ? gpus - o.gpus : 0;
    return *this;
  }
};

struct node_capacity {
  resources_amount total;
  std::string source;  // where the figures come from, for refusals: "node.yaml capacity", "this machine"
};

/// This machine's: its processors, its memory and its GPUs.
node_capacity machine_capacity();

/// The GPUs of this machine: its NVIDIA devices (/dev/nvidia0, ...), else its DRM render
/// nodes (/dev/dri/renderD128, ...).
uint32_t machine_gpus();

/// The device files a worker that asks for GPUs may open: /dev/dri, /dev/nvidia*, where present.
std::vector<std::string> gpu_device_paths();

/// One replica of a stage asks for.
resources_amount request_of(const planned_stage& s);

/// Replicas of a stage that serve now (not scaled away, stopped or quarantined).
uint32_t serving_replicas(const std::vector<std::shared_ptr<slot_stats>>& slots, const std::string& stage);

/// What the stages of p that run on this node hold: each at its serving replicas.
resources_amount held_by(const plan& p, const std::vector<std::shared_ptr<slot_stats>>& slots);

/// What the stages of p that run on one node ask for, each at its planned replicas.
resources_amount asks_of(const plan& p);

/// Admits the stages of p that run on `node` (each at its planned replicas) beside `held`,
/// which grows by what is admitted. Refused (errc::no_room) naming the node, the stage and the
/// shortfall.
expected<void> admit(const node_capacity& cap, resources_amount& held, const plan& p, const std::string& node);

/// Admits `more` replicas of stage s beside `held`; refused as admit() refuses.
expected<void> admit_replicas(const node_capacity& cap, const resources_amount& held, const planned_stage& s,
                              uint32_t more, const std::string& node);

/// A stage of a pipeline running on the node, as a source of room for higher priorities.
struct replica_holder {
  std::string pipeline;
  int32_t priority = 0;
  const planned_stage* stage = nullptr;
  uint32_t serving = 0;  // its replicas serving now
};

/// Replicas a stage gives back to make room: from `from` serving down to `to`.
struct eviction {
  std::string pipeline, stage;
  int32_t priority = 0;
  uint32_t from = 0, to = 0;
  resources_amount frees;
};

struct admission {
  caf::error refused;               // none: admitted; else errc::no_room, and why
  std::vector<eviction> evictions;  // what makes room for it, in this order (empty: it fits as is)
};

/// Admits p's stages on `node` beside `held` as admit() does. Where they do not fit, the stages
/// of lower-priority pipelines in `holders` give back replicas, lowest priority first, never
/// below one replica each and only where they hold what is short, until p fits. Refused, with
/// nothing to evict, if even all of that is not enough.
admission admit_evicting(const node_capacity& cap, const resources_amount& held, const plan& p, const std::string& node,
                         std::vector<replica_holder> holders);

/// "memory 8192 MiB, 2 cores, 1 GPU" (what is 0 is left out; "nothing counted" if all are).
std::string describe(const resources_amount& r);
/// A node's capacity: as describe(), and "no GPUs" where it has none.
std::string describe_capacity(const resources_amount& r);

}  // namespace troupe
