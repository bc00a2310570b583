// troupe status, deploy, scale and stop: the admin calls of a node, printed for users.
#include "commands.hpp"

#include <node.capnp.h>

#include <cluster/event_wire.hpp>
#include <cluster/instance_wire.hpp>
#include <cluster/node_config.hpp>
#include <cluster/tls.hpp>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/timer.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <tuple>

namespace troupe::cli {

namespace {

// An instance's mode, status and last failure as status prints them; "unknown" for a value
// this client does not know.
const char* mode_text(wire::ExecMode m) {
  auto v = cluster::from_wire(m);
  return v ? to_string(*v) : "unknown";
}
const char* status_text(wire::InstanceStatus s) {
  auto v = cluster::from_wire(s);
  return v ? to_string(*v) : "unknown";
}
const char* failure_text(wire::FailureClass f, const char* none) {
  auto v = cluster::from_wire(f);
  if (!v) return "unknown";
  return *v == failure_class::none ? none : to_string(*v);
}

// An exception's description without the RPC system's prefix.
std::string reason(const kj::Exception& e) {
  std::string d = e.getDescription().cStr();
  const std::string prefix = "remote exception: ";
  return d.rfind(prefix, 0) == 0 ? d.substr(prefix.size()) : d;
}

// Calls the admin interface of the node at o.node (over TLS with o.ca); prints failures naming
// the node. Hello goes first: a node takes only a few KiB on a connection before a call with
// the token, and a wrong token is told as such before anything else is sent.
template <class F>
int admin_call(const char* command, const admin_options& o, F f) {
  const std::string& address = o.node;
  try {
    std::unique_ptr<kj::TlsContext> tls;
    if (!o.ca.empty()) {
      auto ca = cluster::read_pem("", "--ca", o.ca, "CERTIFICATE", errc::io_error);
      if (!ca) {
        std::fprintf(stderr, "troupe %s: %s\n", command, describe(ca.error()).c_str());
        return 2;
      }
      tls = cluster::make_tls_context(*ca);
    }
    auto io = kj::setupAsyncIo();
    auto& timer = io.provider->getTimer();
    auto connected = io.provider->getNetwork().parseAddress(address).then(
        [](kj::Own<kj::NetworkAddress> a) { return a->connect().attach(kj::mv(a)); });
    auto stream = timer.timeoutAfter(5 * kj::SECONDS, kj::mv(connected)).wait(io.waitScope);
    if (tls) {
      auto name = o.tls_name.empty() ? address.substr(0, address.rfind(':')) : o.tls_name;
      stream = timer.timeoutAfter(5 * kj::SECONDS, tls->wrapClient(kj::mv(stream), name)).wait(io.waitScope);
    }
    capnp::TwoPartyClient client(*stream);
    auto admin = client.bootstrap().castAs<wire::Admin>();
    auto hello = admin.helloRequest();
    hello.setProtocol(wire::CLUSTER_PROTOCOL);
    hello.setToken(o.token);
    timer.timeoutAfter(5 * kj::SECONDS, hello.send()).wait(io.waitScope);
    return f(admin, io.waitScope, timer);
  } catch (const kj::Exception& e) {
    std::string why = reason(e);
    if (o.ca.empty() && e.getType() == kj::Exception::Type::DISCONNECTED)
      why += " (if the node takes TLS only, give its CA with --ca or $TROUPE_CA)";
    std::fprintf(stderr, "troupe %s: node %s: %s\n", command, address.c_str(), why.c_str());
    return 1;
  }
}

const char* member_state(wire::MemberStatus st) {
  return st == wire::MemberStatus::SELF ? "self" : st == wire::MemberStatus::UP ? "up" : "down";
}

const char* pipeline_state(wire::PipelineStatus st) {
  return st == wire::PipelineStatus::RUNNING    ? "running"
         : st == wire::PipelineStatus::STOPPING ? "stopping"
                                                : "finished";
}

// The status as one JSON document: what the tables show, with the same names in lower case.
template <class Reply>
void print_status_json(const Reply& r, const std::string& pipeline) {
  using json = nlohmann::ordered_json;
  json nodes = json::array(), pipelines = json::array(), instances = json::array();
  for (auto m : r.getMembers()) {
    auto info = m.getInfo();
    nodes.push_back({{"node", info.getName().cStr()},
                     {"state", member_state(m.getStatus())},
                     {"peer_address", info.getPeerAddress().cStr()},
                     {"admin_address", info.getAdminAddress().cStr()},
                     {"data_address", info.getDataAddress().cStr()}});
  }
  for (auto p : r.getPipelines()) {
    if (!pipeline.empty() && p.getName() != pipeline) continue;
    json placement = json::object(), waiting = json::array();
    for (auto s : p.getPlacement()) {
      json on = json::array();
      for (auto n : s.getNodes()) on.push_back(n.cStr());
      placement[s.getStage().cStr()] = std::move(on);
    }
    for (auto w : p.getWaiting()) waiting.push_back(w.cStr());
    pipelines.push_back({{"pipeline", p.getName().cStr()},
                         {"state", pipeline_state(p.getStatus())},
                         {"epoch", p.getEpoch()},
                         {"leader", p.getLeader().cStr()},
                         {"placement", std::move(placement)},
                         {"waiting", std::move(waiting)}});
  }
  for (auto i : r.getInstances()) {
    if (!pipeline.empty() && i.getPipeline() != pipeline) continue;
    instances.push_back({{"pipeline", i.getPipeline().cStr()},
                         {"instance", i.getInstance().cStr()},
                         {"node", i.getNode().cStr()},
                         {"mode", mode_text(i.getMode())},
                         {"state", status_text(i.getState())},
                         {"gen", i.getGeneration()},
                         {"in", i.getFramesIn()},
                         {"out", i.getFramesOut()},
                         {"restarts", i.getRestarts()},
                         {"errors", i.getErrors()},
                         {"dead", i.getDeadLetters()},
                         {"p50_ms", i.getP50Ms()},
                         {"p99_ms", i.getP99Ms()},
                         {"failure", failure_text(i.getFailure(), "")},
                         {"last_error", i.getLastError().cStr()}});
  }
  json out = {{"nodes", std::move(nodes)}, {"pipelines", std::move(pipelines)}, {"instances", std::move(instances)}};
  std::printf("%s\n", out.dump(2, ' ', false, json::error_handler_t::replace).c_str());
}

}  // namespace

int cluster_status(const common_options&, const admin_options& o) {
  return admin_call("status", o, [&](wire::Admin::Client& admin, kj::WaitScope& wait, kj::Timer& timer) {
    auto req = admin.statusRequest();
    req.setProtocol(wire::CLUSTER_PROTOCOL);
    req.setToken(o.token);
    auto r = timer.timeoutAfter(5 * kj::SECONDS, req.send()).wait(wait);
    if (o.output == "json") {
      print_status_json(r, o.pipeline);
      return 0;
    }
    std::printf("%-12s %-6s %-22s %-22s %-22s\n", "NODE", "STATE", "PEER ADDRESS", "ADMIN ADDRESS", "DATA ADDRESS");
    for (auto m : r.getMembers()) {
      auto info = m.getInfo();
      auto st = m.getStatus();
      const char* state = member_state(st);
      std::printf("%-12s %-6s %-22s %-22s %-22s\n", info.getName().cStr(), state, info.getPeerAddress().cStr(),
                  info.getAdminAddress().cStr(), info.getDataAddress().cStr());
    }
    if (r.getPipelines().size() > 0) {
      std::printf("\n%-12s %-9s %7s %-8s %s\n", "PIPELINE", "STATE", "EPOCH", "LEADER", "PLACEMENT");
      for (auto p : r.getPipelines()) {
        if (!o.pipeline.empty() && p.getName() != o.pipeline) continue;
        auto st = p.getStatus();
        const char* state = pipeline_state(st);
        std::string where;
        for (auto s : p.getPlacement()) {
          std::string nodes;
          for (auto n : s.getNodes()) nodes += (nodes.empty() ? "" : ",") + std::string(n.cStr());
          where += (where.empty() ? "" : " ") + std::string(s.getStage().cStr()) + "@" + (nodes.empty() ? "-" : nodes);
        }
        std::printf("%-12s %-9s %7lld %-8s %s\n", p.getName().cStr(), state, static_cast<long long>(p.getEpoch()),
                    p.getLeader().size() ? p.getLeader().cStr() : "-", where.c_str());
        for (auto w : p.getWaiting()) std::printf("%-12s   %s\n", "", w.cStr());
      }
    }
    bool header = false;
    for (auto i : r.getInstances()) {
      if (!o.pipeline.empty() && i.getPipeline() != o.pipeline) continue;
      if (!header)
        std::printf("\n%-12s %-18s %-8s %-9s %-12s %4s %10s %10s %8s %7s %5s %8s %8s %s\n", "PIPELINE", "INSTANCE",
                    "NODE", "MODE", "STATE", "GEN", "IN", "OUT", "RESTARTS", "ERRORS", "DEAD", "P50 ms", "P99 ms",
                    "LAST FAILURE");
      header = true;
      std::printf("%-12s %-18s %-8s %-9s %-12s %4llu %10llu %10llu %8llu %7llu %5llu %8.3f %8.3f %s\n",
                  i.getPipeline().cStr(), i.getInstance().cStr(), i.getNode().cStr(), mode_text(i.getMode()),
                  status_text(i.getState()), static_cast<unsigned long long>(i.getGeneration()),
                  static_cast<unsigned long long>(i.getFramesIn()), static_cast<unsigned long long>(i.getFramesOut()),
                  static_cast<unsigned long long>(i.getRestarts()), static_cast<unsigned long long>(i.getErrors()),
                  static_cast<unsigned long long>(i.getDeadLetters()), i.getP50Ms(), i.getP99Ms(),
                  failure_text(i.getFailure(), "-"));
      if (i.getLastError().size()) std::printf("%-12s   last error: %s\n", "", i.getLastError().cStr());
    }
    return 0;
  });
}

int cluster_deploy(const common_options&, const admin_options& o) {
  std::ifstream in(o.pipeline);
  if (!in) {
    std::fprintf(stderr, "troupe deploy: %s: cannot read the pipeline file\n", o.pipeline.c_str());
    return 2;
  }
  std::stringstream text;
  text << in.rdbuf();
  return admin_call("deploy", o, [&](wire::Admin::Client& admin, kj::WaitScope& wait, kj::Timer& timer) {
    auto req = admin.deployRequest();
    req.setProtocol(wire::CLUSTER_PROTOCOL);
    req.setToken(o.token);
    req.setPipeline(text.str());
    req.setSource(o.pipeline);
    auto r = timer.timeoutAfter(30 * kj::SECONDS, req.send()).wait(wait);
    std::printf("pipeline '%s' deployed on %s (placement epoch %lld)\n", r.getName().cStr(), o.node.c_str(),
                static_cast<long long>(r.getEpoch()));
    return 0;
  });
}

int cluster_scale(const common_options&, const admin_options& o) {
  return admin_call("scale", o, [&](wire::Admin::Client& admin, kj::WaitScope& wait, kj::Timer& timer) {
    auto req = admin.scaleRequest();
    req.setProtocol(wire::CLUSTER_PROTOCOL);
    req.setToken(o.token);
    req.setPipeline(o.pipeline);
    req.setStage(o.stage);
    req.setReplicas(o.replicas);
    req.setOn(o.on);
    auto r = timer.timeoutAfter(10 * kj::SECONDS, req.send()).wait(wait);
    std::printf("scaling stage '%s' of pipeline '%s' to %u replicas on node %s\n", o.stage.c_str(), o.pipeline.c_str(),
                o.replicas, r.getNode().cStr());
    return 0;
  });
}

int cluster_stop(const common_options&, const admin_options& o) {
  return admin_call("stop", o, [&](wire::Admin::Client& admin, kj::WaitScope& wait, kj::Timer& timer) {
    auto req = admin.stopRequest();
    req.setProtocol(wire::CLUSTER_PROTOCOL);
    req.setToken(o.token);
    req.setPipeline(o.pipeline);
    auto r = timer.timeoutAfter(10 * kj::SECONDS, req.send()).wait(wait);
    std::string nodes;
    for (auto n : r.getNodes()) nodes += (nodes.empty() ? "" : ", ") + std::string(n.cStr());
    std::printf("stopping pipeline '%s': draining on node%s %s\n", o.pipeline.c_str(),
                r.getNodes().size() == 1 ? "" : "s", nodes.c_str());
    return 0;
  });
}

namespace {

// "30s", "10m", "2h", "1d" or plain seconds, in milliseconds; nullopt if not a duration.
std::optional<int64_t> duration_ms(const std::string& text) {
  size_t end = 0;
  double v = 0;
  try {
    v = std::stod(text, &end);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  auto unit = text.substr(end);
  double scale = unit.empty() || unit == "s" ? 1e3
                 : unit == "ms"              ? 1
                 : unit == "m"               ? 60e3
                 : unit == "h"               ? 3600e3
                 : unit == "d"               ? 86400e3
                                             : -1;
  if (scale < 0 || !(v >= 0) || v * scale > 1e15) return std::nullopt;
  return static_cast<int64_t>(v * scale);
}

std::string local_time(int64_t ms) {
  std::time_t t = ms / 1000;
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03d", buf, static_cast<int>(ms % 1000));
  return out;
}

}  // namespace

int cluster_events(const common_options&, const admin_options& o) {
  int64_t from_ms = 0;
  if (!o.since.empty()) {
    auto d = duration_ms(o.since);
    if (!d) {
      std::fprintf(stderr, "troupe events: --since '%s': expected a duration such as 30s, 10m, 2h or 1d\n",
                   o.since.c_str());
      return 2;
    }
    from_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                  .count() -
              *d;
  }
  return admin_call("events", o, [&](wire::Admin::Client& admin, kj::WaitScope& wait, kj::Timer& timer) {
    std::map<std::string, uint64_t> cursor;  // per node: the last event printed
    for (;;) {
      auto req = admin.eventsRequest();
      req.setProtocol(wire::CLUSTER_PROTOCOL);
      req.setToken(o.token);
      req.setPipeline(o.pipeline);
      auto after = req.initAfter(static_cast<unsigned>(cursor.size()));
      unsigned k = 0;
      for (auto& [node, seq] : cursor) {
        after[k].setNode(node);
        after[k++].setSeq(seq);
      }
      auto r = timer.timeoutAfter(10 * kj::SECONDS, req.send()).wait(wait);
      std::vector<cluster::wire_event> got;
      for (auto x : r.getEvents()) {
        auto w = cluster::read_event(x);
        auto& c = cursor[w.e.node];
        c = std::max(c, w.e.seq);
        if (w.e.time_ms >= from_ms) got.push_back(std::move(w));
      }
      // Nodes' clocks order them across nodes; each node's own in its order.
      std::stable_sort(got.begin(), got.end(), [](auto& a, auto& b) {
        return std::tie(a.e.time_ms, a.e.node, a.e.seq) < std::tie(b.e.time_ms, b.e.node, b.e.seq);
      });
      for (auto& [e, kind] : got) {
        if (o.output == "json") {
          std::printf("%s\n", event_log::to_json(e, kind).c_str());
          continue;
        }
        std::string subject = e.pipeline.empty() ? "-" : e.pipeline;  // a node's own: no pipeline
        if (!e.stage.empty()) subject += "/" + e.stage;
        if (e.replica > 0) subject += "#" + std::to_string(e.replica);
        if (e.generation > 0) subject += " gen " + std::to_string(e.generation);
        std::string what = kind;
        if (!e.state.empty() && what != e.state) what += " " + e.state;
        if (!e.failure.empty()) what += " (" + e.failure + ")";
        std::printf("%s %-8s %-28s %s%s%s\n", local_time(e.time_ms).c_str(), e.node.c_str(), subject.c_str(),
                    what.c_str(), e.detail.empty() ? "" : ": ", e.detail.c_str());
      }
      std::fflush(stdout);
      if (r.getMore()) continue;
      if (!o.follow) return 0;
      timer.afterDelay(500 * kj::MILLISECONDS).wait(wait);
    }
  });
}

}  // namespace troupe::cli
