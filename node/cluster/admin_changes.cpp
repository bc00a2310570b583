// The admin service's calls that change what runs (services.hpp): deploy, which checks every
// node's part before any of them starts, scale and stop.
#include "service_detail.hpp"
#include "services.hpp"

#include "placement.hpp"
#include "rpc.hpp"

#include <troupe/manifest.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <tuple>

namespace troupe::cluster {

using namespace service_detail;

struct admin_service::deploy_plan {
  std::string name, text, source, run, self;
  std::vector<stage_request> requests;
  std::set<std::string> known, live;
};

struct admin_service::checked {
  std::shared_ptr<placement_record> record;
  std::shared_ptr<std::map<std::string, std::vector<stage_part>>> parts;
};

kj::Promise<admin_service::checked> admin_service::place_and_check(std::shared_ptr<const deploy_plan> d,
                                                                   std::set<std::string> full, std::string refused) {
  auto& view = n_.view();
  auto& self = d->self;
  auto& text = d->text;
  auto& source = d->source;
  // `node: any` stages go to live nodes that have not said they are full.
  auto room = d->live;
  for (auto& n : full) room.erase(n);
  bool any = false;
  for (auto& r : d->requests) any = any || (r.nodes.size() == 1 && r.nodes[0] == "*");
  if (any && room.empty() && !refused.empty())
    throw failure(refused);  // no node has room: the last one's refusal says why
  auto placed = place(d->requests, self, d->known, d->live, source, room);
  if (!placed) throw failure(describe(placed.error()));
  auto record = std::make_shared<placement_record>();
  record->pipeline = d->name;
  record->run = d->run;
  record->source = source;
  record->text = text;
  record->deployed_to = self;
  record->stages = std::move(*placed);
  // Every node checks its part before anything is written (and says what its stages
  // are, so that dependencies are checked across nodes).
  auto placement = n_.placement_of(*record, 0);
  auto parts = std::make_shared<std::map<std::string, std::vector<stage_part>>>();
  // The nodes that refused for want of room, and the last such refusal.
  auto no_room = std::make_shared<std::map<std::string, std::string>>();
  auto nodes = record->nodes();
  auto checks = kj::heapArrayBuilder<kj::Promise<void>>(nodes.size());
  for (auto& node : nodes) {
    kj::Promise<void> check = nullptr;
    if (node == self) {
      check = n_.jobs()
                  .run([&host = n_.host(), text, source, placement]() {
                    std::vector<stage_part> mine;
                    auto r = host.deploy(text, source, &placement, true, &mine);
                    return std::make_pair(r ? std::string{} : describe(r.error()), mine);
                  })
                  .then([parts, self](std::pair<std::string, std::vector<stage_part>> r) {
                    if (!r.first.empty()) throw failure(r.first);
                    (*parts)[self] = std::move(r.second);
                  });
    } else {
      auto address = view.nodes.at(node).peer;
      check = call_node<wire::Peer>(
                  n_.io().getNetwork(), n_.tls(), n_.io().getTimer(), node, address, 30 * kj::SECONDS,
                  [this, text, source, placement](wire::Peer::Client& peer) {
                    // The check carries the pipeline file: more than the node takes
                    // before a call with the token, so hello goes first.
                    auto hello = peer.helloRequest();
                    hello.setProtocol(wire::CLUSTER_PROTOCOL);
                    hello.setToken(n_.token());
                    hello.setFrom(n_.config().name);
                    return hello.send().then([this, peer, text, source, placement](auto&&) mutable {
                      auto req = peer.checkRequest();
                      req.setProtocol(wire::CLUSTER_PROTOCOL);
                      req.setToken(n_.token());
                      req.setPipeline(text);
                      req.setSource(source);
                      req.setRun(placement.run);
                      write_placement(req.initPlacement(static_cast<unsigned>(placement.nodes_of.size())), placement);
                      auto nl = req.initNodes(static_cast<unsigned>(placement.data_address.size()));
                      unsigned i = 0;
                      for (auto& [n, a] : placement.data_address) {
                        nl[i].setNode(n);
                        nl[i++].setDataAddress(a);
                      }
                      return kj::Promise<capnp::Response<wire::Peer::CheckResults>>(req.send());
                    });
                  })
                  .then([parts, node = node](capnp::Response<wire::Peer::CheckResults>&& r) {
                    auto& mine = (*parts)[node];
                    for (auto x : r.getParts()) {
                      stage_part sp{x.getStage(), x.getPlugin(), x.getVersion(), {}, {}};
                      for (auto n : x.getNeeds()) sp.needs.emplace_back(n.getPlugin(), n.getRange());
                      sp.types.node = node;
                      sp.types.plugin = x.getPlugin();
                      sp.types.manifest = x.getManifest();
                      sp.types.inputs = read_side(x.getInputs());
                      sp.types.outputs = read_side(x.getOutputs());
                      for (auto c : x.getConfig()) sp.types.config.emplace_back(c.getKey(), c.getValue());
                      mine.push_back(std::move(sp));
                    }
                  });
    }
    checks.add(check.catch_([no_room, node = node](kj::Exception&& e) -> kj::Promise<void> {
      auto why = reason(e);
      if (why.find("node " + node + " cannot take ") != std::string::npos) (*no_room)[node] = why;
      return kj::mv(e);
    }));
  }
  return kj::joinPromises(checks.finish())
      .then(
          [record, parts]() -> kj::Promise<checked> {
            return checked{record, parts};
          },
          [this, d, record, no_room, full](kj::Exception&& e) mutable -> kj::Promise<checked> {
            // A node without room for a stage placed there by `node: any`: placed again
            // without that node.
            bool again = false;
            std::string why;
            for (auto& [node, text] : *no_room)
              for (auto& s : record->stages)
                if (s.any && std::find(s.nodes.begin(), s.nodes.end(), node) != s.nodes.end() &&
                    full.insert(node).second) {
                  again = true;
                  why = text;
                }
            if (!again) return kj::mv(e);
            spdlog::info("[node={}] pipeline '{}': {}; its `node: any` stages are placed again without it",
                         n_.config().name, d->name, why);
            return place_and_check(d, full, why);
          });
}

kj::Promise<void> admin_service::deploy(DeployContext ctx) {
  auto p = ctx.getParams();
  if (auto why = admit(p.getProtocol(), p.getToken(), "an admin call"); !why.empty()) return refusal(n_, why);
  if (!n_.in_good_standing()) return failure("cannot deploy now: " + n_.standing());
  std::string text = p.getPipeline(), source = p.getSource();
  using stages_t = std::vector<std::pair<std::string, std::vector<std::string>>>;
  return n_.jobs()
      .run([&host = n_.host(), text, source]() {
        auto r = host.read_placement(text, source);
        if (!r) return std::make_tuple(describe(r.error()), std::string{}, stages_t{});
        return std::make_tuple(std::string{}, r->name, r->stages);
      })
      .then([this](std::tuple<std::string, std::string, stages_t> read) {
        if (!std::get<0>(read).empty()) throw failure(std::get<0>(read));
        return n_.read_now().then([read = kj::mv(read)]() mutable { return kj::mv(read); });
      })
      .then([this, text, source](std::tuple<std::string, std::string, stages_t> read) {
        auto& [err, name, stages] = read;
        auto& view = n_.view();
        auto& self = n_.config().name;
        int64_t prior = 0;
        if (auto it = view.pipelines.find(name); it != view.pipelines.end()) {
          if (it->second.record.state != pipeline_state::finished)
            throw failure("pipeline '" + name + "' is already running on the cluster (deployed through node " +
                          it->second.record.deployed_to + ", epoch " + std::to_string(it->second.epoch) + ")");
          prior = it->second.epoch;
        }
        auto d = std::make_shared<deploy_plan>();
        d->name = name;
        d->text = text;
        d->source = source;
        d->self = self;
        d->run = name + "." + self + "." +
                 std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count());
        for (auto& [stage, nodes] : stages) d->requests.push_back({stage, nodes});
        for (auto& [n, info] : view.nodes) d->known.insert(n);
        d->live = view.live();
        d->live.insert(self);
        return place_and_check(d, {}, {})
            .then([this, text, source](checked c) {
              auto parts = c.parts;
              if (auto why = check_needs(source, *parts); !why.empty()) throw failure(why);
              // Edges between stages on different nodes: no node alone could check them.
              return n_.jobs()
                  .run([&host = n_.host(), parts, text, source]() { return host.check_edges(text, source, *parts); })
                  .then([record = c.record](std::string why) {
                    if (!why.empty()) throw failure(why);
                    return record;
                  });
            })
            .then([this, prior](std::shared_ptr<placement_record> record) {
              auto& keys = n_.keys();
              etcd_txn t;
              auto key = keys.pipeline(record->pipeline);
              if (prior != 0)
                t.compares = {{key, etcd_txn::compare::what::mod_revision, prior, {}}};
              else
                t.compares = {{key, etcd_txn::compare::what::create_revision, 0, {}}};
              t.success = {{etcd_txn::op::kind::put, key, to_json(*record), 0},
                           {etcd_txn::op::kind::put, keys.leader(record->pipeline), n_.config().name, n_.lease_id()}};
              return n_.store().txn(t).then([this, record](etcd_txn_result r) {
                if (!r.succeeded)
                  throw failure("pipeline '" + record->pipeline + "' was deployed meanwhile through another node");
                return r.revision;
              });
            });
      })
      .then([this, ctx](int64_t epoch) mutable {
        n_.poke_members();
        ctx.getResults().setEpoch(epoch);
        return n_.read_now().then([ctx, epoch, this]() mutable {
          for (auto& [name, pp] : n_.view().pipelines)
            if (pp.epoch == epoch) ctx.getResults().setName(name);
        });
      });
}

kj::Promise<void> admin_service::scale(ScaleContext ctx) {
  auto p = ctx.getParams();
  if (auto why = admit(p.getProtocol(), p.getToken(), "an admin call"); !why.empty()) return refusal(n_, why);
  std::string pipeline = p.getPipeline(), stage = p.getStage(), on = p.getOn(), token = p.getToken();
  auto replicas = p.getReplicas();
  auto& self = n_.config().name;
  auto& view = n_.view();
  auto it = view.pipelines.find(pipeline);
  if (it == view.pipelines.end() || it->second.record.state == pipeline_state::finished)
    return failure("no pipeline '" + pipeline + "' runs on the cluster");
  auto* s = it->second.record.find(stage);
  if (s == nullptr) return failure("no stage named '" + stage + "' in pipeline '" + pipeline + "'");
  auto& nodes = s->nodes;
  auto runs_on = [&](const std::string& n) { return std::find(nodes.begin(), nodes.end(), n) != nodes.end(); };
  if (nodes.empty())
    return failure("stage '" + stage + "' of pipeline '" + pipeline + "' runs on no node now: it waits");
  if (!on.empty() && !runs_on(on)) {
    std::string list;
    for (auto& n : nodes) list += (list.empty() ? "" : ", ") + n;
    return failure("stage '" + stage + "' of pipeline '" + pipeline + "' runs on node" +
                   (nodes.size() == 1 ? " " : "s ") + list + ", not on node " + on);
  }
  // A stage on several nodes is scaled on each (replicas per node): here if it runs here.
  std::string target = !on.empty() ? on : runs_on(self) ? self : nodes.front();
  if (target == self)
    return n_.jobs()
        .run([&host = n_.host(), pipeline, stage, replicas]() { return host.scale(pipeline, stage, replicas); })
        .then([ctx, self](expected<void> r) mutable {
          // Busy or slow to answer: the caller may ask again (KJ's "overloaded").
          if (!r)
            throw failure(describe(r.error()),
                          retryable(r.error()) ? kj::Exception::Type::OVERLOADED : kj::Exception::Type::FAILED);
          ctx.getResults().setNode(self);
        });
  if (!view.up(target) || !view.nodes.count(target))
    return failure("stage '" + stage + "' of pipeline '" + pipeline + "' runs on node " + target +
                   ", which is down now");
  return call_node<wire::Admin>(n_.io().getNetwork(), n_.tls(), n_.io().getTimer(), target, view.nodes.at(target).admin,
                                10 * kj::SECONDS,
                                [=](wire::Admin::Client& admin) {
                                  auto req = admin.scaleRequest();
                                  req.setProtocol(wire::CLUSTER_PROTOCOL);
                                  req.setToken(token);
                                  req.setPipeline(pipeline);
                                  req.setStage(stage);
                                  req.setReplicas(replicas);
                                  req.setOn(target);
                                  return req.send();
                                })
      .then([ctx](capnp::Response<wire::Admin::ScaleResults>&& r) mutable { ctx.getResults().setNode(r.getNode()); });
}

kj::Promise<void> admin_service::stop(StopContext ctx) {
  auto p = ctx.getParams();
  if (auto why = admit(p.getProtocol(), p.getToken(), "an admin call"); !why.empty()) return refusal(n_, why);
  if (!n_.in_good_standing()) return failure("cannot stop now: " + n_.standing());
  std::string pipeline = p.getPipeline();
  return n_.read_now().then([this, ctx, pipeline]() mutable {
    auto& view = n_.view();
    auto it = view.pipelines.find(pipeline);
    if (it == view.pipelines.end() || it->second.record.state == pipeline_state::finished)
      throw failure("no pipeline '" + pipeline + "' runs on the cluster");
    auto record = it->second.record;
    auto nodes = record.nodes();
    auto answer = [ctx, nodes]() mutable {
      auto list = ctx.getResults().initNodes(static_cast<unsigned>(nodes.size()));
      unsigned i = 0;
      for (auto& n : nodes) list.set(i++, n);
    };
    if (record.state == pipeline_state::stopping) {
      answer();
      return kj::Promise<void>(kj::READY_NOW);
    }
    record.state = pipeline_state::stopping;
    etcd_txn t;
    t.compares = {{n_.keys().pipeline(pipeline), etcd_txn::compare::what::mod_revision, it->second.epoch, {}}};
    t.success = {{etcd_txn::op::kind::put, n_.keys().pipeline(pipeline), to_json(record), 0}};
    return n_.store().txn(t).then([this, answer, pipeline, nodes](etcd_txn_result r) mutable {
      if (!r.succeeded) throw failure("pipeline '" + pipeline + "' was placed again meanwhile: try again");
      spdlog::info("[node={}] pipeline '{}' stops: draining on {}", n_.config().name, pipeline, names(nodes));
      n_.poke_members();
      answer();
      return n_.read_now();
    });
  });
}

}  // namespace troupe::cluster
