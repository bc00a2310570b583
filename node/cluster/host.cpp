#include "host.hpp"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>

#include <troupe/catalog.hpp>
#include <troupe/dead_letters.hpp>
#include <troupe/events.hpp>
#include <troupe/executor.hpp>
#include <troupe/link.hpp>
#include <troupe/manager.hpp>
#include <troupe/messages.hpp>
#include <troupe/pipeline.hpp>
#include <troupe/stats.hpp>
#include <troupe/system_config.hpp>
#include <troupe/worker_landlock.hpp>

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

namespace troupe::cluster {

namespace {

namespace fs = std::filesystem;

using drain_timeout_atom = caf::atom_constant<caf::atom("draintime")>;
constexpr auto drain_bound = std::chrono::seconds(30);

// Hears the manager: once the pipeline is complete it is stopped; once stopped, it is over
// (the manager has logged how it ended). (end_atom, manager) drains it: the sources end
// their streams, and what is in flight goes through; a drain that does not complete within
// drain_bound is cut short by a stop.
using host_listener_actor =
    listener_actor::extend<caf::reacts_to<end_atom, manager_actor>, caf::reacts_to<drain_timeout_atom, manager_actor>>;

host_listener_actor::behavior_type listener(host_listener_actor::pointer self,
                                            std::shared_ptr<std::atomic<bool>> over) {
  return {
      [=](end_atom, const manager_actor& manager) {
        self->send(manager, end_atom::value);
        self->delayed_send(self, drain_bound, drain_timeout_atom::value, manager);
      },
      [=](drain_timeout_atom, const manager_actor& manager) {
        spdlog::warn("a drain did not complete within {} s: stopping now", drain_bound.count());
        self->send(manager, stop_atom::value);
      },
      [=](completed_atom, pipeline_outcome&) {
        self->send(caf::actor_cast<manager_actor>(self->current_sender()), stop_atom::value);
      },
      [=](stopped_atom) {
        over->store(true);
        self->quit();
      },
  };
}

}  // namespace

struct pipeline_host::impl {
  struct hosted {
    std::string text, source;
    std::optional<pipeline_placement> placed;
    bool reported = false;  // its end went to finished_parts
    bool left = false;      // stopped because its stages were placed elsewhere
    std::shared_ptr<const plan> p;
    std::shared_ptr<slot_registry> slots;
    std::shared_ptr<std::atomic<bool>> over;  // stopped
    manager_actor manager;
    host_listener_actor listener;
  };

  impl(std::string node_name, std::vector<std::string> paths, std::shared_ptr<data_plane> p, node_capacity c)
      : node(std::move(node_name)),
        capacity(std::move(c)),
        plugin_paths(std::move(paths)),
        plane(std::move(p)),
        cores(std::max(2u, std::thread::hardware_concurrency())),
        sys(configure(cfg, cores)),
        ex(cores),
        m(node),
        dir(make_dir()) {}
  ~impl() {
    std::vector<manager_actor> managers;
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (auto& [name, h] : pipelines)
        if (running(h)) managers.push_back(h.manager);
    }
    caf::scoped_actor self{sys};
    for (auto& m : managers) self->send(m, stop_atom::value);
    for (auto& m : managers) self->wait_for(m);
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  // A directory of this node's own for the copies of the pipeline files it reads. Its name is
  // unique (mkdtemp): one that a node of the same pid left behind when killed, perhaps under
  // another uid, is never taken for it. Those of this user's nodes that are gone are removed.
  static fs::path make_dir() {
    landlock::remove_orphaned_dirs("troupe-node-");
    auto path = landlock::temp_dir() + "/troupe-node-" + std::to_string(getpid()) + "-XXXXXX";
    if (::mkdtemp(path.data()) == nullptr)
      throw std::runtime_error("cannot make a directory for pipeline files (" + path + "): " + std::strerror(errno));
    return path;
  }

  // The host's own actor system config: it outlives the system (declared before it).
  static caf::actor_system_config& configure(caf::actor_system_config& cfg, unsigned cores) {
    return configure_actor_system(cfg, cores);
  }

  static bool running(const hosted& h) { return !h.over->load(); }

  // What the pipelines running here hold of the node's capacity (under mutex).
  resources_amount held() const {
    resources_amount sum;
    for (auto& [name, h] : pipelines)
      if (running(h)) sum += held_by(*h.p, h.slots->snapshot());
    return sum;
  }

  // The stages of the pipelines running here, as sources of room (under mutex).
  std::vector<replica_holder> holders() const {
    std::vector<replica_holder> out;
    for (auto& [name, h] : pipelines)
      if (running(h)) {
        auto slots = h.slots->snapshot();
        for (auto& s : h.p->stages)
          if (!s.remote) out.push_back({name, h.p->priority, &s, serving_replicas(slots, s.spec.name)});
      }
    return out;
  }

  // Admits the stages of p that run here (not remote), in room that lower priorities give
  // back if need be, which they give unless this is only a check (under mutex).
  expected<void> admit_here(const plan& p, bool check_only) {
    auto a = admit_evicting(capacity, held(), p, node, holders());
    if (a.refused) return a.refused;
    if (check_only) return {};
    return make_room(a, p);
  }

  // Makes room for pipeline p as `a` says: each stage named gives replicas back, drained as for
  // scaling down (under mutex). Refused (no_room) if a stage does not give them back.
  expected<void> make_room(const admission& a, const plan& p) {
    for (auto& e : a.evictions) {
      auto it = pipelines.find(e.pipeline);
      if (it == pipelines.end() || !running(it->second)) continue;
      auto r = scale_stage(sys, it->second.manager, e.stage, e.to);
      if (!r)
        return make_error(errc::no_room, "node " + node + " cannot make room for pipeline '" + p.name + "': stage '" +
                                             e.stage + "' of pipeline '" + e.pipeline +
                                             "' did not give replicas back: " + describe(r.error()));
      auto n = e.from - e.to;
      auto what = std::to_string(n) + (n == 1 ? " replica (" : " replicas (") + std::to_string(e.from) + " -> " +
                  std::to_string(e.to) + ", " + describe(e.frees) + ") for pipeline '" + p.name + "' (priority " +
                  std::to_string(p.priority) + ")";
      spdlog::warn("[node={}] stage '{}' of pipeline '{}' (priority {}) gives back {}", node, e.stage, e.pipeline,
                   e.priority, what);
      event ev;
      ev.kind = event_kind::eviction;
      ev.node = node;
      ev.pipeline = e.pipeline;
      ev.stage = e.stage;
      ev.state = "evicted";
      ev.detail = what;
      events->add(std::move(ev));
      evicted_replicas += n;
    }
    return {};
  }

  std::string node;
  node_capacity capacity;
  std::vector<std::string> plugin_paths;
  std::shared_ptr<data_plane> plane;
  unsigned cores;
  caf::actor_system_config cfg;
  caf::actor_system sys;
  executor ex;
  std::shared_ptr<worker_launcher> launcher = std::make_shared<worker_launcher>();  // this node's isolated workers
  metrics m;
  std::shared_ptr<event_log> events = std::make_shared<event_log>();
  fs::path dir;
  std::atomic<uint64_t> evicted_replicas{0};
  mutable std::mutex mutex;
  std::map<std::string, hosted> pipelines;
};

pipeline_host::pipeline_host(std::string node, std::vector<std::string> plugin_paths, std::shared_ptr<data_plane> plane,
                             node_capacity capacity)
    : impl_(std::make_unique<impl>(std::move(node), std::move(plugin_paths), std::move(plane), std::move(capacity))) {}

pipeline_host::~pipeline_host() = default;

void pipeline_host::reset_links() {
  if (impl_->plane) impl_->plane->cut_connections();
}

std::shared_ptr<prometheus::Collectable> pipeline_host::instance_metrics() const { return impl_->m.collectable(); }

namespace {

class capacity_collectable : public prometheus::Collectable {
 public:
  explicit capacity_collectable(const pipeline_host::impl& d) : d_(d) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    resources_amount held;
    {
      std::lock_guard<std::mutex> lock(d_.mutex);
      held = d_.held();
    }
    auto& total = d_.capacity.total;
    auto family = [&](const char* name, const char* help, double value,
                      prometheus::MetricType type = prometheus::MetricType::Gauge) {
      prometheus::MetricFamily f{name, help, type, {}};
      prometheus::ClientMetric m;
      m.label.push_back({"node", d_.node});
      if (type == prometheus::MetricType::Counter)
        m.counter.value = value;
      else
        m.gauge.value = value;
      f.metric.push_back(std::move(m));
      return f;
    };
    constexpr double mib = 1 << 20;
    return {
        family("troupe_node_capacity_memory_bytes", "Memory the node admits work up to (0: not counted).",
               static_cast<double>(total.memory_mb) * mib),
        family("troupe_node_capacity_cpu_cores", "Cores the node admits work up to (0: not counted).", total.cpu_cores),
        family("troupe_node_requested_memory_bytes",
               "Memory the serving replicas of the node's pipelines ask for (their manifests' memory_mb).",
               static_cast<double>(held.memory_mb) * mib),
        family("troupe_node_requested_cpu_cores",
               "Cores the serving replicas of the node's pipelines ask for (their manifests' cpu_cores).",
               held.cpu_cores),
        family("troupe_node_capacity_gpus", "GPUs the node admits work up to.", total.gpus),
        family("troupe_node_requested_gpus",
               "GPUs the serving replicas of the node's pipelines ask for (their manifests' gpus).", held.gpus),
        family("troupe_node_evicted_replicas_total",
               "Replicas the node's pipelines gave back to make room for pipelines of higher priority.",
               static_cast<double>(d_.evicted_replicas.load()), prometheus::MetricType::Counter)};
  }

 private:
  const pipeline_host::impl& d_;
};

}  // namespace

std::shared_ptr<prometheus::Collectable> pipeline_host::capacity_metrics() const {
  return std::make_shared<capacity_collectable>(*impl_);
}

const event_log& pipeline_host::events() const { return *impl_->events; }

event_log& pipeline_host::events() { return *impl_->events; }

namespace {

// Reads a pipeline file's text as the file it came from: messages name that file.
struct read_text {
  std::string path, source;
  std::optional<std::string> unwritten;  // why the copy could not be written, if it could not
  read_text(const fs::path& dir, const std::string& text, const std::string& src) : source(src) {
    auto base = fs::path(source).filename().string();
    path = (dir / (base.empty() ? "pipeline.yaml" : base)).string();
    std::ofstream out(path, std::ios::trunc);
    out << text;
    out.close();
    if (!out) unwritten = source + ": cannot keep a copy of the pipeline file at " + path + ": " + std::strerror(errno);
  }
  std::string named(std::string e) const {
    for (size_t at; (at = e.find(path)) != std::string::npos;) e.replace(at, path.size(), source);
    return e;
  }
  // The error with the file named as the user knows it, and `prefix` before its text.
  caf::error named(const caf::error& e, const std::string& prefix = {}) const {
    return make_error(code_of(e).value_or(errc::invalid_pipeline), named(prefix + describe(e)));
  }
  // The pipeline file read from the copy, with errors named as the user knows the file; node:
  // this node's name, for a copy it could not write.
  expected<pipeline_spec> load(const std::string& node) const {
    if (unwritten) return make_error(errc::io_error, "node " + node + ": " + *unwritten);
    auto spec = load_pipeline(path);
    if (!spec) return named(spec.error());
    return spec;
  }
};

}  // namespace

expected<pipeline_host::outline> pipeline_host::read_placement(const std::string& text, const std::string& source) {
  auto spec = read_text(impl_->dir, text, source).load(impl_->node);
  if (!spec) return spec.error();
  outline out;
  out.name = spec->name;
  for (auto& s : spec->stages) out.stages.emplace_back(s.name, s.nodes);
  return out;
}

std::string pipeline_host::check_edges(const std::string& text, const std::string& source,
                                       const std::map<std::string, std::vector<stage_part>>& by_node) {
  read_text in(impl_->dir, text, source);
  auto spec = in.load(impl_->node);
  if (!spec) return describe(spec.error());
  std::map<std::string, stage_types> types;
  for (auto& [node, parts] : by_node)
    for (auto& p : parts) types.emplace(p.stage, p.types);  // a stage on several nodes: the first
  auto err = check_placed_edges(*spec, types);
  return err ? describe(in.named(err)) : std::string{};
}

std::vector<std::pair<std::string, std::string>> pipeline_host::finished_parts() {
  std::vector<std::pair<std::string, std::string>> out;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (auto& [name, h] : impl_->pipelines)
    if (!impl::running(h) && !h.reported && !h.left && h.placed) {
      h.reported = true;
      out.emplace_back(name, h.placed->run);
    }
  return out;
}

std::string pipeline_host::running(const std::string& pipeline) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto it = impl_->pipelines.find(pipeline);
  if (it == impl_->pipelines.end() || !impl::running(it->second)) return {};
  return it->second.placed ? it->second.placed->run : it->second.p->name;
}

expected<std::string> pipeline_host::deploy(const std::string& text, const std::string& source,
                                            const pipeline_placement* placed, bool check_only,
                                            std::vector<stage_part>* parts) {
  auto& d = *impl_;
  read_text in(d.dir, text, source);
  auto spec = in.load(d.node);
  if (!spec) return spec.error();
  auto paths = d.plugin_paths;
  for (auto& p : catalog::default_search_paths()) paths.push_back(p);
  auto cat = catalog::discover(paths);
  placement where;
  if (placed) {
    if (!d.plane)
      return make_error(errc::refused, "node " + d.node + " has no data plane for a pipeline placed across nodes");
    where.self = d.node;
    where.nodes_of = placed->nodes_of;
  }
  auto planned = plan_pipeline(*spec, cat, placed ? &where : nullptr);
  if (!planned) return in.named(planned.error(), "node " + d.node + ": ");
  auto p = std::make_shared<const plan>(std::move(*planned));
  auto libs = load_libraries(*p, d.launcher);
  if (!libs) return in.named(libs.error(), "node " + d.node + ": ");
  if (parts)
    for (auto& s : p->stages) {
      if (s.remote) continue;
      stage_part sp{s.spec.name, s.manifest.name, s.manifest.version.to_string(), {}, {}};
      for (auto& dep : s.manifest.dependencies) sp.needs.emplace_back(dep.name, dep.range.text);
      sp.types = {d.node, s.manifest.name, s.manifest.path, s.manifest.inputs, s.manifest.outputs, s.config};
      parts->push_back(std::move(sp));
    }
  std::lock_guard<std::mutex> lock(d.mutex);
  if (auto it = d.pipelines.find(p->name); it != d.pipelines.end() && impl::running(it->second)) {
    auto& h = it->second;
    if (!placed || !h.placed || h.placed->run != placed->run)
      return make_error(errc::refused, "pipeline '" + p->name + "' is already running on node " + d.node);
    // The same run, placed anew: stages move.
    if (check_only) return p->name;
    if (!placed->runs_on(d.node)) {
      // Its stages run elsewhere now (this node was taken for dead, or they moved): what it
      // still runs of the pipeline is stopped (the others drop what it sends).
      spdlog::warn("[node={}] pipeline '{}' runs no stage on this node any more: stopping its part here", d.node,
                   p->name);
      h.left = true;
      caf::anon_send(h.manager, stop_atom::value);
      return p->name;
    }
    // Stages that come to this node must fit beside what runs here (or in room that lower
    // priorities give back), as a new pipeline must.
    plan arriving = *p;
    for (auto& s : arriving.stages)
      if (auto* before = h.p->find(s.spec.name); !s.remote && before != nullptr && !before->remote) s.remote = true;
    if (auto r = d.admit_here(arriving, false); !r) return r.error();
    h.placed = *placed;
    h.p = p;
    caf::anon_send(h.manager, place_atom::value,
                   placement_update{p, *libs, placed->data_address, placed->moves, placed->epoch, placed->fences});
    return p->name;
  } else if (it != d.pipelines.end() && placed && it->second.placed && it->second.placed->run == placed->run &&
             !it->second.left) {
    return p->name;  // its part of this run finished here: it does not start again
  }
  // A new pipeline, or a part of one: what its stages here ask for must fit beside what runs,
  // or in the room that pipelines of lower priority give back.
  if (!placed || placed->runs_on(d.node)) {
    if (auto r = d.admit_here(*p, check_only); !r) return r.error();
  }
  if (check_only) return p->name;
  if (placed && !placed->runs_on(d.node)) return p->name;  // for others (this node restarted since)
  impl::hosted h;
  h.text = text;
  h.source = source;
  if (placed) h.placed = *placed;
  h.p = p;
  h.slots = std::make_shared<slot_registry>(d.m, make_slots(*p, d.m));
  h.over = std::make_shared<std::atomic<bool>>(false);
  manager_setup ms;
  ms.plan = p;
  ms.slots = h.slots;
  ms.libraries = *libs;
  ms.executor = &d.ex;
  ms.launcher = d.launcher;
  ms.dead_letters = std::make_shared<dead_letter_log>(p->dead_letters);
  ms.events = d.events;
  h.listener = d.sys.spawn(listener, h.over);
  ms.listener = h.listener;
  ms.node = d.node;
  if (placed) {
    ms.plane = d.plane;
    ms.data_address = placed->data_address;
    ms.run = placed->run;
    ms.moves = placed->moves;
    ms.epoch = placed->epoch;
    ms.fences = placed->fences;
  }
  h.manager = spawn_manager(d.sys, std::move(ms));
  spdlog::info("[node={}] deployed pipeline '{}' from {}", d.node, p->name, source);
  auto name = p->name;
  d.pipelines[name] = std::move(h);
  return name;
}

expected<void> pipeline_host::scale(const std::string& pipeline, const std::string& stage, uint32_t replicas) {
  manager_actor manager;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    auto it = impl_->pipelines.find(pipeline);
    if (it == impl_->pipelines.end() || !impl::running(it->second))
      return make_error(errc::not_found, "no pipeline '" + pipeline + "' runs on node " + impl_->node);
    auto& h = it->second;
    manager = h.manager;
    // More replicas must fit beside what runs.
    if (auto* s = h.p->find(stage); s != nullptr && !s->remote) {
      auto serving = serving_replicas(h.slots->snapshot(), stage);
      if (replicas > serving)
        if (auto r = admit_replicas(impl_->capacity, impl_->held(), *s, replicas - serving, impl_->node); !r)
          return make_error(errc::no_room, "pipeline '" + pipeline + "': " + describe(r.error()));
    }
  }
  return scale_stage(impl_->sys, manager, stage, replicas);
}

expected<void> pipeline_host::stop(const std::string& pipeline) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto it = impl_->pipelines.find(pipeline);
  if (it == impl_->pipelines.end() || !impl::running(it->second))
    return make_error(errc::not_found, "no pipeline '" + pipeline + "' runs on node " + impl_->node);
  caf::anon_send(it->second.listener, end_atom::value, it->second.manager);
  spdlog::info("[node={}] draining pipeline '{}', then stopping it", impl_->node, pipeline);
  return {};
}

std::vector<hosted_instance> pipeline_host::instances() const {
  std::vector<hosted_instance> out;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (auto& [name, h] : impl_->pipelines)
    for (auto& s : h.slots->snapshot()) {
      hosted_instance i;
      i.pipeline = name;
      i.stage = s->stage;
      i.instance = s->name();
      i.mode = s->mode;
      i.state = status_of(s->state.load(), s->quarantined.load(), s->finished.load(), s->paused.load());
      i.generation = s->generation.load();
      i.frames_in = static_cast<uint64_t>(s->frames_in.Value());
      i.frames_out = static_cast<uint64_t>(s->frames_out.Value());
      i.restarts = static_cast<uint64_t>(s->restarts.Value());
      i.failure = s->last_failure.load();
      i.last_error = s->last_error();
      i.errors = static_cast<uint64_t>(s->errors.Value());
      i.dead_letters = static_cast<uint64_t>(s->dead_letters.Value());
      i.p50_ms = processing_quantile(s->processing, 0.5) * 1e3;
      i.p99_ms = processing_quantile(s->processing, 0.99) * 1e3;
      out.push_back(std::move(i));
    }
  return out;
}

}  // namespace troupe::cluster
