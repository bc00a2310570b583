// A node's pipelines on the cluster: its part of each as the store places it (and its word
// when it has no room for stages placed on it), leading the pipelines whose leader key it
// holds, and reporting the parts that finished here. The membership, the lease and reading
// the store are node.cpp's.
#include "node.hpp"

#include "placement.hpp"
#include "records.hpp"
#include "rpc.hpp"

#include <spdlog/spdlog.h>
#include <troupe/events.hpp>

#include <algorithm>

namespace troupe::cluster {

using namespace txn;

// This node's part of a pipeline, as its record places it now.
void cluster_node::apply(const std::string& name, const cluster_view::pipeline& p) {
  auto& r = p.record;
  if (r.state == pipeline_state::finished) return;
  auto here = host_.running(name);
  if (r.state == pipeline_state::stopping) {
    if (here == r.run && stopping_.insert(r.run).second) {
      spdlog::info("[node={}] pipeline '{}' is stopping: draining its part here", c_.name, name);
      tasks_.add(jobs_.run([&host = host_, name]() { return host.stop(name); }).then([this, name](expected<void> r) {
        if (!r) spdlog::warn("[node={}] pipeline '{}': {}", c_.name, name, describe(r.error()));
      }));
    }
    return;
  }
  // A word that this node has no room for stages is withdrawn once none of them is placed here
  // (the leader moved them), or it is of another run.
  if (auto it = p.refused.find(c_.name); it != p.refused.end()) {
    bool still = it->second.run == r.run;
    if (still) {
      still = false;
      for (auto& stage : it->second.stages)
        if (auto* s = r.find(stage); s != nullptr && std::count(s->nodes.begin(), s->nodes.end(), c_.name) > 0)
          still = true;
    }
    if (!still) withdraw_refusal(name);
  }
  if (auto it = applied_.find(name); it != applied_.end() && it->second == p.epoch) return;
  applied_[name] = p.epoch;
  if (!r.runs_on(c_.name) && here != r.run) return;  // nothing of it here
  if (!here.empty() && here != r.run) {
    // An earlier run of a pipeline of that name still runs here: it is over on the cluster.
    spdlog::warn("[node={}] pipeline '{}' runs as '{}' on the cluster now: draining its earlier run '{}' here", c_.name,
                 name, r.run, here);
    applied_[name] = 0;
    tasks_.add(jobs_.run([&host = host_, name]() { return host.stop(name); }).ignoreResult());
    return;
  }
  auto placement = placement_of(r, p.epoch);
  // The stages this record brings here: those the record applied before did not place here.
  auto before = deployed_.find(name);
  std::optional<cluster_view::pipeline> was;
  if (before != deployed_.end()) was = before->second;
  room_refusal arriving{r.run, {}, {}};
  for (auto& s : r.stages) {
    if (std::count(s.nodes.begin(), s.nodes.end(), c_.name) == 0) continue;
    auto* b = was && was->record.run == r.run ? was->record.find(s.stage) : nullptr;
    if (b == nullptr || std::count(b->nodes.begin(), b->nodes.end(), c_.name) == 0) arriving.stages.push_back(s.stage);
  }
  const room_refusal* said = p.refused_by(c_.name);
  deployed_[name] = p;
  tasks_.add(jobs_
                 .run([&host = host_, text = r.text, source = r.source, placement]() {
                   return host.deploy(text, source, &placement);
                 })
                 .then([this, name, epoch = p.epoch, was, arriving,
                        said = said ? std::optional(*said) : std::nullopt](expected<std::string> r) mutable {
                   if (r) {
                     said_.erase("apply " + name);
                     if (said) withdraw_refusal(name);  // it took them
                     return;
                   }
                   auto err = describe(r.error());
                   if (applied_[name] == epoch) applied_[name] = 0;  // tried again at the next read
                   if (code_of(r.error()) == errc::no_room && !arriving.stages.empty()) {
                     // Its part here runs as it did; the leader is told what does not fit, and
                     // moves what may run elsewhere.
                     if (was)
                       deployed_[name] = *was;
                     else
                       deployed_.erase(name);
                     arriving.why = err;
                     if (!said || said->stages != arriving.stages || said->why != err) refuse_room(name, arriving);
                   }
                   log_once("apply " + name,
                            "pipeline '" + name + "' at epoch " + std::to_string(epoch) + ": this node's part: " + err,
                            true);
                 }));
}

// What the leader of a pipeline does: campaign for the key if nobody holds it; if this node
// holds it, place stages again as members come and go, and mark the pipeline finished once
// every part is.
void cluster_node::lead(const std::string& name, const cluster_view::pipeline& p) {
  auto& r = p.record;
  leads_.Add({{"node", c_.name}, {"pipeline", name}}).Set(p.leader == c_.name ? 1 : 0);
  if (r.state == pipeline_state::finished) return;
  if (p.leader.empty()) {
    if (!campaigning_.insert(name).second) return;
    etcd_txn t;
    t.compares = {absent(keys_.leader(name))};
    t.success = {put(keys_.leader(name), c_.name, lease_id_)};
    tasks_.add(store_.txn(t)
                   .then(
                       [this, name](etcd_txn_result res) {
                         if (res.succeeded) {
                           spdlog::warn(
                               "[node={}] this node leads pipeline '{}' now: it places its stages again "
                               "when members come and go",
                               c_.name, name);
                           poll();
                         }
                       },
                       [this](kj::Exception&& e) {
                         store_failed();
                         log_once("campaign", "cannot campaign for a pipeline's leader key: " + reason(e));
                       })
                   .then([this, name]() { campaigning_.erase(name); }));
    return;
  }
  if (p.leader != c_.name || writing_.count(name)) return;
  auto live = view_.live();
  std::optional<placement_record> next;
  std::string what;
  if (complete(r, p.done, live)) {
    next = r;
    next->state = pipeline_state::finished;
    what = "finished on every node";
  } else if (r.state == pipeline_state::running) {
    if (auto rep = replace(r, p.epoch, live, p.refused)) {
      next = std::move(rep->next);
      for (auto& c : rep->changes) what += (what.empty() ? "" : "; ") + c;
    }
    for (auto& w : waiting(next ? *next : r, live, p.refused))
      log_once("wait " + name + " " + w.substr(0, w.find(':')), "pipeline '" + name + "': " + w);
  }
  if (!next) return;
  etcd_txn t;
  t.compares = {mod_is(keys_.pipeline(name), p.epoch), value_is(keys_.leader(name), c_.name)};
  t.success = {put(keys_.pipeline(name), to_json(*next))};
  if (next->state == pipeline_state::finished) t.success.push_back(erase(keys_.leader(name)));
  writing_.insert(name);
  tasks_.add(store_.txn(t)
                 .then(
                     [this, name, what](etcd_txn_result res) {
                       if (!res.succeeded) return;  // changed meanwhile: the next read decides again
                       placements_written_.Increment();
                       spdlog::warn("[node={}] pipeline '{}' (epoch {}): {}", c_.name, name, res.revision, what);
                       event e;
                       e.kind = event_kind::placement;
                       e.node = c_.name;
                       e.pipeline = name;
                       e.detail = "epoch " + std::to_string(res.revision) + ": " + what;
                       host_.events().add(std::move(e));
                       poll();
                     },
                     [this, name](kj::Exception&& e) {
                       store_failed();
                       log_once("write " + name, "cannot write the placement of pipeline '" + name + "': " + reason(e));
                     })
                 .then([this, name]() { writing_.erase(name); }));
}

// Tells the store, under this node's lease, that it has no room for stages of a pipeline.
void cluster_node::refuse_room(const std::string& pipeline, const room_refusal& r) {
  spdlog::warn("[node={}] pipeline '{}': no room here for stage{} {}: {}", c_.name, pipeline,
               r.stages.size() == 1 ? "" : "s", joined(r.stages), r.why);
  event e;
  e.kind = event_kind::placement;
  e.node = c_.name;
  e.pipeline = pipeline;
  e.state = "no room";
  e.detail = "stages " + joined(r.stages) + ": " + r.why;
  host_.events().add(std::move(e));
  etcd_txn t;
  t.success = {put(keys_.refusal(pipeline, c_.name), to_json(r), lease_id_)};
  tasks_.add(store_.txn(t).ignoreResult().catch_([this](kj::Exception&& e) {
    store_failed();
    log_once("refuse room", "cannot tell the store this node has no room: " + reason(e));
  }));
}

void cluster_node::withdraw_refusal(const std::string& pipeline) {
  etcd_txn t;
  t.success = {erase(keys_.refusal(pipeline, c_.name))};
  tasks_.add(store_.txn(t).ignoreResult().catch_([this](kj::Exception&& e) {
    store_failed();
    log_once("withdraw refusal", "cannot withdraw this node's word that it has no room: " + reason(e));
  }));
}

// Parts that ended here are recorded, so that the leader can tell when the whole is over.
void cluster_node::report_finished_parts() {
  // Kept until the store took it: a part whose report failed is reported again next poll.
  for (auto& [pipeline, run] : host_.finished_parts()) unreported_[pipeline] = run;
  for (auto& [pipeline, run] : unreported_) {
    if (!reporting_.insert(pipeline).second) continue;  // a report of it is under way
    etcd_txn t;
    t.success = {put(keys_.part(pipeline, c_.name), run)};
    tasks_.add(store_.txn(t)
                   .then([this, pipeline = pipeline, run = run](etcd_txn_result) {
                     reporting_.erase(pipeline);
                     if (auto it = unreported_.find(pipeline); it != unreported_.end() && it->second == run)
                       unreported_.erase(it);
                   })
                   .catch_([this, pipeline = pipeline](kj::Exception&& e) {
                     reporting_.erase(pipeline);
                     store_failed();
                     spdlog::warn(
                         "[node={}] cannot record yet that its part of pipeline '{}' finished (tried again "
                         "next poll): {}",
                         c_.name, pipeline, reason(e));
                   }));
  }
}

}  // namespace troupe::cluster
