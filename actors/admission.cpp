#include <troupe/admission.hpp>

#include <troupe/pipeline.hpp>
#include <troupe/stats.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <tuple>

namespace troupe {

namespace {

std::string cores(double c) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", c);
  return buf;
}

std::string gpus(uint32_t n) { return std::to_string(n) + (n == 1 ? " GPU" : " GPUs"); }

// Which of need's resources do not fit beside held in cap (memory and cores of 0 are not
// counted; 0 GPUs are none).
struct shortage {
  bool memory = false, cores = false, gpus = false;
};
shortage short_of(const node_capacity& cap, const resources_amount& held, const resources_amount& need) {
  auto& t = cap.total;
  return {t.memory_mb > 0 && need.memory_mb > 0 && held.memory_mb + need.memory_mb > t.memory_mb,
          t.cpu_cores > 0 && need.cpu_cores > 0 && held.cpu_cores + need.cpu_cores > t.cpu_cores + 1e-9,
          need.gpus > 0 && held.gpus + need.gpus > t.gpus};
}

// Why `need` does not fit beside `held` in `cap`: an error with errc::no_room that names the
// node, what it cannot take and the resource short; nothing if it fits.
expected<void> shortfall(const node_capacity& cap, const resources_amount& held, const resources_amount& need,
                         const std::string& what, const std::string& node) {
  auto& t = cap.total;
  auto is = short_of(cap, held, need);
  if (is.memory) {
    auto free = held.memory_mb < t.memory_mb ? t.memory_mb - held.memory_mb : 0;
    return make_error(errc::no_room, "node " + node + " cannot take " + what + ": it needs " +
                                         std::to_string(need.memory_mb) + " MiB of memory, " + std::to_string(free) +
                                         " MiB free of " + std::to_string(t.memory_mb) + " MiB (" + cap.source + ")");
  }
  if (is.cores) {
    auto free = held.cpu_cores < t.cpu_cores ? t.cpu_cores - held.cpu_cores : 0;
    return make_error(errc::no_room, "node " + node + " cannot take " + what + ": it needs " + cores(need.cpu_cores) +
                                         " cores, " + cores(free) + " free of " + cores(t.cpu_cores) + " (" +
                                         cap.source + ")");
  }
  if (is.gpus) {
    auto free = held.gpus < t.gpus ? t.gpus - held.gpus : 0;
    return make_error(errc::no_room, "node " + node + " cannot take " + what + ": it needs " + gpus(need.gpus) + ", " +
                                         std::to_string(free) + " free of " + std::to_string(t.gpus) + " (" +
                                         cap.source + ")");
  }
  return {};
}

// "512 MiB and 0.5 cores": what one replica asks for.
std::string each(const planned_stage& s) {
  auto r = request_of(s);
  std::string per;
  if (r.memory_mb > 0) per = std::to_string(r.memory_mb) + " MiB";
  if (r.cpu_cores > 0) per += (per.empty() ? "" : " and ") + cores(r.cpu_cores) + " cores";
  if (r.gpus > 0) per += (per.empty() ? "" : " and ") + gpus(r.gpus);
  return per;
}

resources_amount times(resources_amount r, uint32_t n) {
  r.cpu_cores *= n;
  r.memory_mb *= n;
  r.gpus *= n;
  return r;
}

}  // namespace

uint32_t machine_gpus() {
  namespace fs = std::filesystem;
  auto count = [](const char* dir, const std::string& prefix, bool digits_only) {
    uint32_t n = 0;
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir, ec)) {
      auto name = e.path().filename().string();
      if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
      auto rest = name.substr(prefix.size());
      if (!digits_only || rest.find_first_not_of("0123456789") == std::string::npos) ++n;
    }
    return n;
  };
  if (auto n = count("/dev", "nvidia", true); n > 0) return n;
  return count("/dev/dri", "renderD", true);
}

std::vector<std::string> gpu_device_paths() {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  std::error_code ec;
  if (fs::exists("/dev/dri", ec)) out.push_back("/dev/dri");
  for (auto& e : fs::directory_iterator("/dev", ec))
    if (e.path().filename().string().rfind("nvidia", 0) == 0) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

node_capacity machine_capacity() {
  node_capacity c;
  c.source = "this machine";
  c.total.cpu_cores = std::max(1u, std::thread::hardware_concurrency());
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) c.total.memory_mb = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) >> 20;
  c.total.gpus = machine_gpus();
  return c;
}

resources_amount request_of(const planned_stage& s) {
  if (s.remote) return {};
  return {s.manifest.resources.cpu_cores, s.manifest.resources.memory_mb, s.manifest.resources.gpus};
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

resources_amount asks_of(const plan& p) {
  resources_amount need;
  for (auto& s : p.stages)
    if (!s.remote) need += times(request_of(s), s.spec.replicas);
  return need;
}

expected<void> admit(const node_capacity& cap, resources_amount& held, const plan& p, const std::string& node) {
  for (auto& s : p.stages) {
    if (s.remote) continue;
    auto need = times(request_of(s), s.spec.replicas);
    auto n = s.spec.replicas;
    auto what = "pipeline '" + p.name + "': stage '" + s.spec.name + "' (" + std::to_string(n) +
                (n == 1 ? " replica of " : " replicas of ") + each(s) + ")";
    if (auto fits = shortfall(cap, held, need, what, node); !fits) return fits;
    held += need;
  }
  return {};
}

expected<void> admit_replicas(const node_capacity& cap, const resources_amount& held, const planned_stage& s,
                              uint32_t more, const std::string& node) {
  auto what = std::to_string(more) + (more == 1 ? " more replica" : " more replicas") + " of stage '" + s.spec.name +
              "' (" + each(s) + " each)";
  return shortfall(cap, held, times(request_of(s), more), what, node);
}

admission admit_evicting(const node_capacity& cap, const resources_amount& held, const plan& p, const std::string& node,
                         std::vector<replica_holder> holders) {
  auto fits = [&](resources_amount h) { return static_cast<bool>(admit(cap, h, p, node)); };
  admission a;
  resources_amount h = held;
  if (auto r = admit(cap, h, p, node))
    return a;
  else
    a.refused = r.error();
  const auto need = asks_of(p);
  holders.erase(std::remove_if(holders.begin(), holders.end(),
                               [&](const replica_holder& r) { return r.priority >= p.priority || r.serving < 2; }),
                holders.end());
  std::sort(holders.begin(), holders.end(), [](const replica_holder& x, const replica_holder& y) {
    return std::tie(x.priority, x.pipeline, x.stage->spec.name) < std::tie(y.priority, y.pipeline, y.stage->spec.name);
  });
  h = held;
  resources_amount given;  // what the evictions free
  std::vector<eviction> evictions;
  for (auto& r : holders) {
    auto each = request_of(*r.stage);
    uint32_t to = r.serving;
    for (auto is = short_of(cap, h, need); to > 1 && ((is.memory && each.memory_mb > 0) ||
                                                      (is.cores && each.cpu_cores > 0) || (is.gpus && each.gpus > 0));
         is = short_of(cap, h, need)) {
      h -= each;
      given += each;
      --to;
    }
    if (to == r.serving) continue;
    evictions.push_back({r.pipeline, r.stage->spec.name, r.priority, r.serving, to, times(each, r.serving - to)});
    if (fits(h)) {
      a.refused = caf::error{};
      a.evictions = std::move(evictions);
      return a;
    }
  }
  if (!evictions.empty())
    a.refused = make_error(errc::no_room, troupe::describe(a.refused) + "; pipelines of lower priority than " +
                                              std::to_string(p.priority) + " here could give back only " +
                                              describe(given) + " (down to one replica of each stage): not enough");
  return a;
}

std::string describe(const resources_amount& r) {
  std::string out;
  if (r.memory_mb > 0) out = "memory " + std::to_string(r.memory_mb) + " MiB";
  if (r.cpu_cores > 0) out += (out.empty() ? "" : ", ") + cores(r.cpu_cores) + " cores";
  if (r.gpus > 0) out += (out.empty() ? "" : ", ") + gpus(r.gpus);
  return out.empty() ? "nothing counted" : out;
}

std::string describe_capacity(const resources_amount& r) {
  if (r.gpus > 0) return describe(r);
  return (r.memory_mb > 0 || r.cpu_cores > 0 ? describe(r) + ", " : std::string()) + "no GPUs";
}

}  // namespace troupe
