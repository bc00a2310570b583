#include "services.hpp"
#include "service_detail.hpp"

#include "event_wire.hpp"
#include "instance_wire.hpp"
#include "placement.hpp"
#include "rpc.hpp"

#include <troupe/events.hpp>
#include <troupe/manifest.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <tuple>

namespace troupe::cluster {

namespace {

// Why a call is refused, or empty: then its connection may send what a member may.
std::string admitted(cluster_node& n, connection_gate& gate, uint32_t protocol, kj::StringPtr token,
                     const std::string& who, bool admin) {
  auto why = n.refuse(protocol, token, who, admin);
  if (why.empty()) gate.authenticate();
  return why;
}

}  // namespace

namespace service_detail {

kj::Exception refusal(const cluster_node& n, const std::string& why) {
  return failure("refused by node " + n.config().name + ": " + why);
}

void write_placement(capnp::List<wire::StagePlacement>::Builder list, const pipeline_placement& pl) {
  unsigned i = 0;
  for (auto& [stage, where] : pl.nodes_of) {
    list[i].setStage(stage);
    auto nl = list[i].initNodes(static_cast<unsigned>(where.size()));
    for (unsigned k = 0; k < where.size(); ++k) nl.set(k, where[k]);
    if (auto mv = pl.moves.find(stage); mv != pl.moves.end()) list[i].setMoves(mv->second);
    ++i;
  }
}

void write_info(wire::NodeInfo::Builder b, const node_info& n, int64_t lease) {
  b.setName(n.name);
  b.setPeerAddress(n.peer);
  b.setAdminAddress(n.admin);
  b.setMetricsAddress(n.metrics);
  b.setDataAddress(n.data);
  b.setLease(lease);
}

std::string names(const std::set<std::string>& s) {
  std::string out;
  for (auto& n : s) out += (out.empty() ? "" : ", ") + n;
  return out;
}

void write_side(wire::MediaSide::Builder b, const media_side& s) {
  b.setDeclared(s.declared);
  auto types = b.initTypes(static_cast<unsigned>(s.types.size()));
  for (unsigned k = 0; k < s.types.size(); ++k) types.set(k, s.types[k]);
  auto keys = b.initKeys(static_cast<unsigned>(s.keys.size()));
  for (unsigned k = 0; k < s.keys.size(); ++k) keys.set(k, s.keys[k]);
  b.setKeysDeclared(s.keys_declared);
}

media_side read_side(wire::MediaSide::Reader r) {
  media_side s;
  s.declared = r.getDeclared();
  for (auto t : r.getTypes()) s.types.emplace_back(t.cStr());
  for (auto k : r.getKeys()) s.keys.emplace_back(k.cStr());
  s.keys_declared = r.getKeysDeclared();
  return s;
}

}  // namespace service_detail

using namespace service_detail;

std::string check_needs(const std::string& source, const std::map<std::string, std::vector<stage_part>>& by_node) {
  for (auto& [node, parts] : by_node)
    for (auto& p : parts)
      for (auto& [plugin, range_text] : p.needs) {
        auto range = version_range::parse(range_text);
        bool met = false;
        std::string near;
        for (auto& [other, theirs] : by_node)
          for (auto& q : theirs) {
            if (q.plugin != plugin) continue;
            auto v = version::parse(q.version);
            if (range_text.empty() || (range && v && range->contains(*v)))
              met = true;
            else
              near += "; stage '" + q.stage + "' on node " + other + " runs version " + q.version;
          }
        if (!met)
          return source + ": stage '" + p.stage + "' on node " + node + ": plugin '" + p.plugin + "' needs plugin '" +
                 plugin + "' " + range_text + ", which no stage of the pipeline runs" + near;
      }
  return {};
}

// -- Peer ------------------------------------------------------------------------------------

std::string peer_service::admit(uint32_t protocol, kj::StringPtr token, const std::string& who) {
  return admitted(n_, *gate_, protocol, token, who, false);
}

kj::Promise<void> peer_service::hello(HelloContext ctx) {
  auto p = ctx.getParams();
  auto who = std::string("node ") + p.getFrom().cStr();
  if (auto why = admit(p.getProtocol(), p.getToken(), who); !why.empty()) return refusal(n_, why);
  ctx.getResults().setNode(n_.config().name);
  return kj::READY_NOW;
}

kj::Promise<void> peer_service::check(CheckContext ctx) {
  auto p = ctx.getParams();
  if (auto why = admit(p.getProtocol(), p.getToken(), "a deploy check from a peer"); !why.empty())
    return refusal(n_, why);
  pipeline_placement placed;
  for (auto x : p.getPlacement()) {
    auto& where = placed.nodes_of[x.getStage()];
    for (auto n : x.getNodes()) where.push_back(n);
    if (x.getMoves() > 0) placed.moves[x.getStage()] = x.getMoves();
  }
  for (auto x : p.getNodes()) placed.data_address[x.getNode()] = x.getDataAddress();
  placed.run = p.getRun();
  std::string text = p.getPipeline(), source = p.getSource();
  return n_.jobs()
      .run([&host = n_.host(), text, source, placed]() {
        std::vector<stage_part> parts;
        auto r = host.deploy(text, source, &placed, true, &parts);
        return std::make_pair(r ? std::string{} : describe(r.error()), parts);
      })
      .then([ctx](std::pair<std::string, std::vector<stage_part>> r) mutable {
        if (!r.first.empty()) throw failure(r.first);
        auto& parts = r.second;
        auto list = ctx.getResults().initParts(static_cast<unsigned>(parts.size()));
        for (unsigned i = 0; i < parts.size(); ++i) {
          list[i].setStage(parts[i].stage);
          list[i].setPlugin(parts[i].plugin);
          list[i].setVersion(parts[i].version);
          auto needs = list[i].initNeeds(static_cast<unsigned>(parts[i].needs.size()));
          for (unsigned k = 0; k < parts[i].needs.size(); ++k) {
            needs[k].setPlugin(parts[i].needs[k].first);
            needs[k].setRange(parts[i].needs[k].second);
          }
          auto& t = parts[i].types;
          list[i].setManifest(t.manifest);
          write_side(list[i].initInputs(), t.inputs);
          write_side(list[i].initOutputs(), t.outputs);
          auto config = list[i].initConfig(static_cast<unsigned>(t.config.size()));
          for (unsigned k = 0; k < t.config.size(); ++k) {
            config[k].setKey(t.config[k].first);
            config[k].setValue(t.config[k].second);
          }
        }
      });
}

kj::Promise<void> peer_service::poke(PokeContext ctx) {
  auto p = ctx.getParams();
  if (auto why = admit(p.getProtocol(), p.getToken(), "a peer"); !why.empty()) return refusal(n_, why);
  n_.read_now().detach([](kj::Exception&&) {});
  return kj::READY_NOW;
}

kj::Promise<void> peer_service::storeContact(StoreContactContext ctx) {
  auto p = ctx.getParams();
  auto who = std::string("node ") + p.getFrom().cStr();
  if (auto why = admit(p.getProtocol(), p.getToken(), who); !why.empty()) return refusal(n_, why);
  ctx.getResults().setNode(n_.config().name);
  ctx.getResults().setAgoMs(n_.store_contact_ago_ms());
  ctx.getResults().setSteadyMs(n_.store_steady_ms());
  return kj::READY_NOW;
}

// -- Admin -----------------------------------------------------------------------------------

std::string admin_service::admit(uint32_t protocol, kj::StringPtr token, const std::string& who) {
  return admitted(n_, *gate_, protocol, token, who, true);
}

kj::Promise<void> admin_service::hello(HelloContext ctx) {
  auto p = ctx.getParams();
  if (auto why = admit(p.getProtocol(), p.getToken(), "an admin call"); !why.empty()) return refusal(n_, why);
  ctx.getResults().setNode(n_.config().name);
  return kj::READY_NOW;
}

namespace {

// Every other member that is up: its name and admin address.
std::vector<std::pair<std::string, std::string>> other_admins(cluster_node& n) {
  auto& view = n.view();
  std::vector<std::pair<std::string, std::string>> others;
  for (auto& [name, lease] : view.members)
    if (name != n.config().name && view.nodes.count(name)) others.emplace_back(name, view.nodes.at(name).admin);
  return others;
}

}  // namespace

kj::Promise<void> admin_service::status(StatusContext ctx) {
  auto p = ctx.getParams();
  if (auto why = admit(p.getProtocol(), p.getToken(), "an admin call"); !why.empty()) return refusal(n_, why);
  struct row {
    hosted_instance i;
    std::string node;
  };
  auto rows = std::make_shared<std::vector<row>>();
  for (auto& x : n_.host().instances()) rows->push_back({x, n_.config().name});
  auto fill = [this, rows](wire::Admin::StatusResults::Builder r) {
    auto& view = n_.view();
    auto& self = n_.config().name;
    r.setNode(self);
    auto members = r.initMembers(static_cast<unsigned>(view.nodes.size() + (view.nodes.count(self) ? 0 : 1)));
    unsigned i = 0;
    if (!view.nodes.count(self)) {
      node_info me{self, n_.config().advertise, n_.config().admin_advertise, n_.config().metrics,
                   n_.config().advertise_data};
      write_info(members[i].initInfo(), me, n_.lease_id());
      members[i++].setStatus(wire::MemberStatus::SELF);
    }
    for (auto& [name, info] : view.nodes) {
      auto lease = view.members.count(name) ? view.members.at(name) : 0;
      write_info(members[i].initInfo(), info, lease);
      members[i++].setStatus(name == self ? wire::MemberStatus::SELF
                             : lease != 0 ? wire::MemberStatus::UP
                                          : wire::MemberStatus::DOWN);
    }
    auto live = view.live();
    auto pipelines = r.initPipelines(static_cast<unsigned>(view.pipelines.size()));
    i = 0;
    for (auto& [name, pp] : view.pipelines) {
      auto b = pipelines[i++];
      b.setName(name);
      b.setStatus(pp.record.state == pipeline_state::running    ? wire::PipelineStatus::RUNNING
                  : pp.record.state == pipeline_state::stopping ? wire::PipelineStatus::STOPPING
                                                                : wire::PipelineStatus::FINISHED);
      b.setEpoch(pp.epoch);
      b.setLeader(pp.leader);
      auto w = pp.record.state == pipeline_state::running ? waiting(pp.record, live, pp.refused)
                                                          : std::vector<std::string>{};
      auto wl = b.initWaiting(static_cast<unsigned>(w.size()));
      for (unsigned k = 0; k < w.size(); ++k) wl.set(k, w[k]);
      write_placement(b.initPlacement(static_cast<unsigned>(pp.record.stages.size())),
                      n_.placement_of(pp.record, pp.epoch));
    }
    auto list = r.initInstances(static_cast<unsigned>(rows->size()));
    for (unsigned k = 0; k < rows->size(); ++k) {
      auto& x = (*rows)[k].i;
      auto b = list[k];
      b.setPipeline(x.pipeline);
      b.setStage(x.stage);
      b.setInstance(x.instance);
      b.setNode((*rows)[k].node);
      b.setMode(to_wire(x.mode));
      b.setState(to_wire(x.state));
      b.setGeneration(x.generation);
      b.setFramesIn(x.frames_in);
      b.setFramesOut(x.frames_out);
      b.setRestarts(x.restarts);
      b.setFailure(to_wire(x.failure));
      b.setLastError(x.last_error);
      b.setErrors(x.errors);
      b.setDeadLetters(x.dead_letters);
      b.setP50Ms(x.p50_ms);
      b.setP99Ms(x.p99_ms);
    }
  };
  if (p.getThisNodeOnly()) {
    fill(ctx.getResults());
    return kj::READY_NOW;
  }
  // The instances of every other member that is up, asked in parallel; one that does not
  // answer in time is left out (and logged).
  std::string token = p.getToken();
  auto others = other_admins(n_);
  auto asks = kj::heapArrayBuilder<kj::Promise<void>>(others.size());
  for (auto& [name, address] : others)
    asks.add(call_node<wire::Admin>(n_.io().getNetwork(), n_.tls(), n_.io().getTimer(), name, address, 2 * kj::SECONDS,
                                    [token](wire::Admin::Client& admin) {
                                      auto req = admin.statusRequest();
                                      req.setProtocol(wire::CLUSTER_PROTOCOL);
                                      req.setToken(token);
                                      req.setThisNodeOnly(true);
                                      return req.send();
                                    })
                 .then(
                     [rows](capnp::Response<wire::Admin::StatusResults>&& r) {
                       for (auto i : r.getInstances()) {
                         auto mode = from_wire(i.getMode());
                         auto state = from_wire(i.getState());
                         auto failure = from_wire(i.getFailure());
                         if (!mode || !state || !failure) {
                           spdlog::warn(
                               "status: node {} sent instance '{}' with a mode, state or failure this node "
                               "does not know: left out",
                               i.getNode().cStr(), i.getInstance().cStr());
                           continue;
                         }
                         rows->push_back({hosted_instance{i.getPipeline(), i.getStage(), i.getInstance(), *mode, *state,
                                                          i.getGeneration(), i.getFramesIn(), i.getFramesOut(),
                                                          i.getRestarts(), *failure, i.getLastError(), i.getErrors(),
                                                          i.getDeadLetters(), i.getP50Ms(), i.getP99Ms()},
                                          i.getNode()});
                       }
                     },
                     [](kj::Exception&& e) { spdlog::warn("status: {}", reason(e)); }));
  return kj::joinPromises(asks.finish()).then([ctx, fill]() mutable { fill(ctx.getResults()); });
}

namespace {

constexpr size_t events_per_call = 1000;

}  // namespace

kj::Promise<void> admin_service::events(EventsContext ctx) {
  auto p = ctx.getParams();
  if (auto why = admit(p.getProtocol(), p.getToken(), "an admin call"); !why.empty()) return refusal(n_, why);
  std::vector<std::pair<std::string, uint64_t>> after;
  for (auto c : p.getAfter()) after.emplace_back(c.getNode(), c.getSeq());
  std::string pipeline = p.getPipeline();
  auto rows = std::make_shared<std::vector<wire_event>>();
  auto more = std::make_shared<bool>(false);
  uint64_t mine = 0;
  for (auto& [node, seq] : after)
    if (node == n_.config().name) mine = seq;
  for (auto& e : n_.host().events().since(mine)) {
    if (!pipeline.empty() && e.pipeline != pipeline) continue;
    if (rows->size() == events_per_call) {
      *more = true;
      break;
    }
    rows->push_back({e, to_string(e.kind)});
  }
  auto fill = [rows, more](wire::Admin::EventsResults::Builder r) {
    auto list = r.initEvents(static_cast<unsigned>(rows->size()));
    for (unsigned k = 0; k < rows->size(); ++k) {
      write_event(list[k], (*rows)[k].e, (*rows)[k].kind);
    }
    r.setMore(*more);
  };
  if (p.getThisNodeOnly()) {
    fill(ctx.getResults());
    return kj::READY_NOW;
  }
  // Every other member that is up, asked in parallel, as status does.
  std::string token = p.getToken();
  auto others = other_admins(n_);
  auto asks = kj::heapArrayBuilder<kj::Promise<void>>(others.size());
  for (auto& [name, address] : others)
    asks.add(call_node<wire::Admin>(n_.io().getNetwork(), n_.tls(), n_.io().getTimer(), name, address, 2 * kj::SECONDS,
                                    [token, pipeline, after](wire::Admin::Client& admin) {
                                      auto req = admin.eventsRequest();
                                      req.setProtocol(wire::CLUSTER_PROTOCOL);
                                      req.setToken(token);
                                      req.setPipeline(pipeline);
                                      auto list = req.initAfter(static_cast<unsigned>(after.size()));
                                      for (unsigned k = 0; k < after.size(); ++k) {
                                        list[k].setNode(after[k].first);
                                        list[k].setSeq(after[k].second);
                                      }
                                      req.setThisNodeOnly(true);
                                      return req.send();
                                    })
                 .then(
                     [rows, more](capnp::Response<wire::Admin::EventsResults>&& r) {
                       for (auto x : r.getEvents()) rows->push_back(read_event(x));
                       if (r.getMore()) *more = true;
                     },
                     [](kj::Exception&& e) { spdlog::warn("events: {}", reason(e)); }));
  return kj::joinPromises(asks.finish()).then([ctx, fill]() mutable { fill(ctx.getResults()); });
}

}  // namespace troupe::cluster
