// A cluster member.
//
// A node runs the KJ event loop on its main thread: it serves the Peer interface on its
// peer address and the Admin interface on its admin address (schema/node.capnp), and every
// heartbeat interval it calls each member it knows with who it is and whom it knows. What
// it hears back (and what callers tell it) is how it learns the rest of the cluster from its
// seeds. A member not heard from within down_after is marked down; it is up again (as a
// fresh member if it restarted) once it is heard from. A peer with another token or protocol
// version is refused, and both sides log why.
#include "node.hpp"

#include "frame_guard.hpp"
#include "host.hpp"
#include "node_config.hpp"

#include <error.hpp>
#include <link.hpp>
#include <manifest.hpp>
#include <stats.hpp>

#include <node.capnp.h>

#include <capnp/ez-rpc.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/timer.h>
#include <prometheus/exposer.h>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>

#include <algorithm>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <map>
#include <memory>
#include <optional>
#include <set>

namespace troupe::cluster {

namespace {

std::atomic<int> node_signal{0};
// The largest message a peer may send (a heartbeat is far smaller; frames will travel apart).
constexpr uint64_t max_peer_message_bytes = uint64_t{16} << 20;
void on_node_signal(int sig) { node_signal.store(sig); }

using steady = std::chrono::steady_clock;

// An exception's description without the RPC system's prefix.
std::string reason(const kj::Exception& e) {
  std::string d = e.getDescription().cStr();
  const std::string prefix = "remote exception: ";
  return d.rfind(prefix, 0) == 0 ? d.substr(prefix.size()) : d;
}

// A call to interface I of the node at address: its connection and the capability, which
// keep(promise) attaches to the call's promise so that they live as long as it does, the
// capability dropped before the connection it came from.
template <class I>
struct remote {
  kj::Own<capnp::EzRpcClient> client;
  kj::Own<typename I::Client> cap;
  explicit remote(const std::string& address)
      : client(kj::heap<capnp::EzRpcClient>(address)),
        cap(kj::heap<typename I::Client>(client->template getMain<I>())) {}
  template <class P>
  auto keep(P&& promise) {
    return kj::fwd<P>(promise).attach(kj::mv(cap)).attach(kj::mv(client));
  }
};


void write_info(wire::NodeInfo::Builder b, const node_config& c, uint64_t incarnation) {
  b.setName(c.name);
  b.setPeerAddress(c.advertise);
  b.setAdminAddress(c.admin);
  b.setMetricsAddress(c.metrics);
  b.setIncarnation(incarnation);
  b.setDataAddress(c.advertise_data);
}

struct member {
  std::string name, peer_address, admin_address, metrics_address, data_address;
  uint64_t incarnation = 0;
  enum class state { joining, up, down } st = state::joining;
  std::optional<steady::time_point> last_heard;
  double rtt_ms = -1;
  kj::Own<capnp::EzRpcClient> client;  // to call it
  std::optional<wire::Peer::Client> cap;  // its Peer interface, taken once per connection
  bool reconnect = false;              // a call failed: a new connection next time
  bool call_pending = false;
  std::string last_problem;  // logged once until it changes
  prometheus::Gauge* up_gauge = nullptr;
  prometheus::Gauge* rtt_gauge = nullptr;
  prometheus::Counter* heartbeats = nullptr;
  prometheus::Counter* failures = nullptr;
};

void write_info(wire::NodeInfo::Builder b, const member& m) {
  b.setName(m.name);
  b.setPeerAddress(m.peer_address);
  b.setAdminAddress(m.admin_address);
  b.setMetricsAddress(m.metrics_address);
  b.setIncarnation(m.incarnation);
  b.setDataAddress(m.data_address);
}

const char* to_string(member::state s) {
  switch (s) {
    case member::state::joining: return "joining";
    case member::state::up: return "up";
    case member::state::down: return "down";
  }
  return "?";
}

class cluster_node {
 public:
  cluster_node(node_config c)
      : c_(std::move(c)),
        incarnation_(static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count())),
        registry_(std::make_shared<prometheus::Registry>()),
        up_family_(prometheus::BuildGauge()
                       .Name("troupe_peer_up")
                       .Help("Whether the peer is up (heard from within down_after)")
                       .Register(*registry_)),
        rtt_family_(prometheus::BuildGauge()
                        .Name("troupe_peer_rtt_seconds")
                        .Help("Round trip of the last heartbeat answered by the peer")
                        .Register(*registry_)),
        heartbeat_family_(prometheus::BuildCounter()
                              .Name("troupe_peer_heartbeats_total")
                              .Help("Heartbeats the peer answered")
                              .Register(*registry_)),
        failure_family_(prometheus::BuildCounter()
                            .Name("troupe_peer_heartbeat_failures_total")
                            .Help("Heartbeats to the peer that failed or went unanswered")
                            .Register(*registry_)),
        refused_(prometheus::BuildCounter()
                     .Name("troupe_node_refused_calls_total")
                     .Help("Calls refused for a wrong cluster token or protocol version")
                     .Register(*registry_)
                     .Add({})),
        bad_messages_(prometheus::BuildCounter()
                          .Name("troupe_node_bad_messages_total")
                          .Help("Peer connections closed for a malformed, oversized or truncated message")
                          .Register(*registry_)
                          .Add({})) {}

  // A peer connection sent what is not a message: it is closed, the node goes on.
  void bad_message(const std::string& from, const std::string& why) {
    bad_messages_.Increment();
    spdlog::error("[node={}] closed the connection from {}: {}", c_.name, from, why);
  }

  const node_config& config() const { return c_; }
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  uint64_t incarnation() const { return incarnation_; }

  // Why a caller is refused, or empty.
  std::string refuse(uint32_t protocol, kj::StringPtr token, const std::string& who) {
    std::string why;
    if (protocol != wire::CLUSTER_PROTOCOL)
      why = "protocol version " + std::to_string(protocol) + ", this node speaks " +
            std::to_string(wire::CLUSTER_PROTOCOL);
    else if (token != c_.token.c_str())
      why = "wrong cluster token";
    if (!why.empty()) {
      refused_.Increment();
      spdlog::error("[node={}] refused {}: {}", c_.name, who, why);
    }
    return why;
  }

  // A member as it describes itself (or as another describes it).
  member& learn(wire::NodeInfo::Reader info) {
    std::string name = info.getName();
    auto it = members_.find(name);
    if (it == members_.end()) {
      it = members_.emplace(name, member{}).first;
      auto& m = it->second;
      m.name = name;
      std::map<std::string, std::string> labels{{"node", c_.name}, {"peer", name}};
      m.up_gauge = &up_family_.Add(labels);
      m.rtt_gauge = &rtt_family_.Add(labels);
      m.heartbeats = &heartbeat_family_.Add(labels);
      m.failures = &failure_family_.Add(labels);
      spdlog::info("[node={}] learned of node {} at {}", c_.name, name, info.getPeerAddress().cStr());
    }
    auto& m = it->second;
    if (m.peer_address != info.getPeerAddress().cStr()) m.reconnect = true;
    m.peer_address = info.getPeerAddress();
    m.admin_address = info.getAdminAddress();
    m.metrics_address = info.getMetricsAddress();
    m.data_address = info.getDataAddress();
    return m;
  }

  // The member said something itself: it is up (again, or as a fresh member).
  void heard_from(member& m, uint64_t incarnation) {
    m.last_heard = steady::now();
    if (m.st != member::state::up) {
      bool fresh = m.incarnation != 0 && incarnation != m.incarnation;
      spdlog::info("[node={}] node {} is up{}", c_.name, m.name,
                   m.st == member::state::down ? (fresh ? " again, as a fresh member (it restarted)" : " again") : "");
    } else if (m.incarnation != 0 && incarnation != m.incarnation) {
      spdlog::info("[node={}] node {} restarted: it rejoins as a fresh member", c_.name, m.name);
    }
    bool back = m.st == member::state::down;
    m.incarnation = incarnation;
    m.st = member::state::up;
    m.up_gauge->Set(1);
    if (back && on_back_) on_back_(m.name);
  }

  void fill_members(capnp::List<wire::NodeInfo>::Builder list) {
    unsigned i = 0;
    write_info(list[i++], c_, incarnation_);
    for (auto& [name, m] : members_) write_info(list[i++], m);
  }
  unsigned member_count() const { return static_cast<unsigned>(members_.size()) + 1; }

  void learn_all(capnp::List<wire::NodeInfo>::Reader list) {
    for (auto info : list)
      if (info.getName() != c_.name.c_str() && info.getPeerAddress().size() > 0) learn(info);
  }

  // Calls every member (and each seed not yet known by name); marks the silent ones down.
  void tick(kj::Timer& timer, kj::TaskSet& tasks) {
    auto now = steady::now();
    std::vector<std::string> went_down;
    if (last_tick_ && now - *last_tick_ > down_after()) {
      // This node itself stood still (frozen, or starved): its peers' silence is its own. They
      // get a fresh grace period instead of being taken for dead. The others may have taken it
      // for dead meanwhile: it rejoins as a fresh member (a new incarnation).
      incarnation_ = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
      spdlog::warn("[node={}] this node stood still for {} ms: peers get a fresh grace period, and it rejoins as a "
                   "fresh member",
                   c_.name, std::chrono::duration_cast<std::chrono::milliseconds>(now - *last_tick_).count());
      for (auto& [name, m] : members_)
        if (m.st == member::state::up) m.last_heard = now;
    }
    last_tick_ = now;
    for (auto& [name, m] : members_) {
      if (m.st == member::state::up && m.last_heard && now - *m.last_heard > down_after()) {
        m.st = member::state::down;
        m.up_gauge->Set(0);
        spdlog::error("[node={}] node {} is down: no heartbeat for {} ms", c_.name, name,
                      std::chrono::duration_cast<std::chrono::milliseconds>(now - *m.last_heard).count());
        went_down.push_back(name);
      }
      if (!m.call_pending) tasks.add(call(m.name, m.peer_address, timer));
    }
    for (auto& seed : c_.seeds) {
      if (seed == c_.listen || seed == c_.advertise) continue;  // a seed list may name this node
      bool known = false;
      for (auto& [name, m] : members_) known = known || m.peer_address == seed;
      if (!known && !seed_pending_[seed]) tasks.add(call({}, seed, timer));
    }
    if (on_down_)
      for (auto& name : went_down) on_down_(name);
  }

  // Asks member `node` to run its part of a placed pipeline (or to check it). What it refuses
  // names the node already; a call that does not reach it is named here.
  kj::Promise<std::vector<stage_part>> ask_host(const std::string& node, const std::string& text,
                                                const std::string& source, const pipeline_placement& placed,
                                                bool check, kj::Timer& timer) {
    auto* m = find(node);
    if (m == nullptr)
      return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                           kj::heapString("node " + node + " is not a member"));
    auto address = m->peer_address;
    remote<wire::Peer> peer(address);
    auto req = peer.cap->hostRequest();
    req.setProtocol(wire::CLUSTER_PROTOCOL);
    req.setToken(c_.token);
    req.setPipeline(text);
    req.setSource(source);
    req.setCheckOnly(check);
    req.setRun(placed.run);
    auto pl = req.initPlacement(static_cast<unsigned>(placed.nodes_of.size()));
    unsigned i = 0;
    for (auto& [stage, where] : placed.nodes_of) {
      pl[i].setStage(stage);
      auto nl = pl[i].initNodes(static_cast<unsigned>(where.size()));
      for (unsigned k = 0; k < where.size(); ++k) nl.set(k, where[k]);
      if (auto mv = placed.moves.find(stage); mv != placed.moves.end()) pl[i].setMoves(mv->second);
      auto it = placed.candidates.find(stage);
      if (it != placed.candidates.end()) {
        auto c = pl[i].initCandidates(static_cast<unsigned>(it->second.size()));
        for (unsigned k = 0; k < it->second.size(); ++k) c.set(k, it->second[k]);
      }
      ++i;
    }
    auto nodes = req.initNodes(static_cast<unsigned>(placed.data_address.size()));
    i = 0;
    for (auto& [n, a] : placed.data_address) {
      nodes[i].setNode(n);
      nodes[i++].setDataAddress(a);
    }
    return peer.keep(timer.timeoutAfter(30 * kj::SECONDS, req.send())
        .then(
            [](capnp::Response<wire::Peer::HostResults>&& r) {
              std::vector<stage_part> parts;
              for (auto p : r.getParts()) {
                stage_part sp{p.getStage(), p.getPlugin(), p.getVersion(), {}};
                for (auto n : p.getNeeds()) sp.needs.emplace_back(n.getPlugin(), n.getRange());
                parts.push_back(std::move(sp));
              }
              return parts;
            },
            [node, address](kj::Exception&& e) -> std::vector<stage_part> {
              std::string d = e.getDescription().cStr();
              auto why = d.rfind("remote exception: ", 0) == 0
                             ? reason(e)
                             : "node " + node + " (" + address + ") did not answer: " + reason(e);
              throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString(why));
            }));
  }

  /// Called with each member that goes down, and each that is heard again after.
  void on_down(std::function<void(const std::string&)> f) { on_down_ = std::move(f); }
  void on_back(std::function<void(const std::string&)> f) { on_back_ = std::move(f); }
  bool is_up(const std::string& name) const {
    if (name == c_.name) return true;
    auto it = members_.find(name);
    return it != members_.end() && it->second.st == member::state::up;
  }

  /// Who leads a placed pipeline: the lowest-named live node running part of it.
  std::string leader_of(const pipeline_placement& pl) const {
    std::string leader;
    for (auto& [stage, nodes] : pl.nodes_of)
      for (auto& n : nodes)
        if (is_up(n) && (leader.empty() || n < leader)) leader = n;
    return leader;
  }

  /// Where a `node: any` stage goes: the live node running the fewest stages (by `load`).
  std::string least_loaded(std::map<std::string, int>& load) const {
    std::string best;
    for (auto& n : member_names())
      if (is_up(n) && (best.empty() || load[n] < load[best])) best = n;
    return best;
  }

  // A member by name, if known.
  const member* find(const std::string& name) const {
    auto it = members_.find(name);
    return it == members_.end() ? nullptr : &it->second;
  }
  std::vector<std::string> member_names() const {
    std::vector<std::string> out{c_.name};
    for (auto& [name, m] : members_) out.push_back(name);
    return out;
  }

  // Admin addresses of the members that are up.
  std::vector<std::pair<std::string, std::string>> up_admins() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (auto& [name, m] : members_)
      if (m.st == member::state::up && !m.admin_address.empty()) out.emplace_back(name, m.admin_address);
    return out;
  }

  void status(wire::Admin::StatusResults::Builder r) {
    r.setNode(c_.name);
    auto list = r.initMembers(member_count());
    auto now = steady::now();
    auto self = list[0];
    write_info(self.initInfo(), c_, incarnation_);
    self.setState("self");
    self.setLastHeardMs(0);
    self.setRttMs(0);
    unsigned i = 1;
    for (auto& [name, m] : members_) {
      auto b = list[i++];
      write_info(b.initInfo(), m);
      b.setState(to_string(m.st));
      b.setLastHeardMs(
          m.last_heard ? std::chrono::duration_cast<std::chrono::milliseconds>(now - *m.last_heard).count() : -1);
      b.setRttMs(m.rtt_ms);
    }
  }

 private:
  std::chrono::milliseconds down_after() const { return std::chrono::milliseconds(c_.down_after_ms); }

  // One heartbeat to a member (by name) or to a seed (by address only).
  kj::Promise<void> call(std::string name, std::string address, kj::Timer& timer) {
    // The bootstrap interface is taken once per connection: asking a connection that broke
    // for it again aborts in this Cap'n Proto version, while a call on the capability taken
    // before just fails.
    kj::Own<capnp::EzRpcClient> seed_client;
    std::optional<wire::Peer::Client> seed_cap;
    wire::Peer::Client* cap = nullptr;
    if (!name.empty()) {
      auto& m = members_.at(name);
      if (m.reconnect) {
        m.cap.reset();
        m.client = nullptr;
      }
      m.reconnect = false;
      if (!m.client) {
        m.client = kj::heap<capnp::EzRpcClient>(address);
        m.cap = m.client->getMain<wire::Peer>();
      }
      cap = &*m.cap;
      m.call_pending = true;
    } else {
      seed_pending_[address] = true;
      seed_client = kj::heap<capnp::EzRpcClient>(address);
      seed_cap = seed_client->getMain<wire::Peer>();
      cap = &*seed_cap;
    }
    auto req = cap->heartbeatRequest();
    req.setProtocol(wire::CLUSTER_PROTOCOL);
    req.setToken(c_.token);
    write_info(req.initFrom(), c_, incarnation_);
    fill_members(req.initMembers(member_count()));
    auto sent = steady::now();
    auto timeout = std::chrono::milliseconds(c_.heartbeat_ms);
    return timer.timeoutAfter(timeout.count() * kj::MILLISECONDS, req.send())
        .then(
            [this, name, address, sent](capnp::Response<wire::Peer::HeartbeatResults>&& r) {
              auto& m = learn(r.getNode());
              m.rtt_ms = std::chrono::duration<double, std::milli>(steady::now() - sent).count();
              m.rtt_gauge->Set(m.rtt_ms / 1000);
              m.heartbeats->Increment();
              m.last_problem.clear();
              heard_from(m, r.getNode().getIncarnation());
              learn_all(r.getMembers());
            },
            [this, name, address](kj::Exception&& e) {
              std::string why = reason(e);
              if (!name.empty()) {
                auto& m = members_.at(name);
                m.failures->Increment();
                m.reconnect = true;
                if (why != m.last_problem)
                  spdlog::warn("[node={}] heartbeat to node {} at {} failed: {}", c_.name, name, address, why);
                m.last_problem = why;
              } else if (why != seed_problem_[address]) {
                seed_problem_[address] = why;
                if (why.rfind("refused by node", 0) == 0)
                  spdlog::error("[node={}] refused by seed {}: {}", c_.name, address, why);
                else
                  spdlog::warn("[node={}] seed {} not reached: {}", c_.name, address, why);
              }
            })
        .attach(std::move(seed_cap))  // dropped before the connection it came from
        .attach(std::move(seed_client))
        .then([this, name, address]() {
          if (!name.empty()) members_.at(name).call_pending = false;
          else seed_pending_[address] = false;
        });
  }

  node_config c_;
  uint64_t incarnation_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& up_family_;
  prometheus::Family<prometheus::Gauge>& rtt_family_;
  prometheus::Family<prometheus::Counter>& heartbeat_family_;
  prometheus::Family<prometheus::Counter>& failure_family_;
  prometheus::Counter& refused_;
  prometheus::Counter& bad_messages_;
  std::map<std::string, member> members_;  // by name, not this node
  std::function<void(const std::string&)> on_down_, on_back_;
  std::optional<steady::time_point> last_tick_;
  std::map<std::string, bool> seed_pending_;
  std::map<std::string, std::string> seed_problem_;
};

// The exception a refused caller gets: it names this node and why.
kj::Exception refusal(const cluster_node& n, const std::string& why) {
  return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                       kj::heapString("refused by node " + n.config().name + ": " + why));
}

class peer_service final : public wire::Peer::Server {
 public:
  peer_service(cluster_node& n, pipeline_host& host) : n_(n), host_(host) {}
  kj::Promise<void> heartbeat(HeartbeatContext ctx) override {
    auto p = ctx.getParams();
    auto from = p.getFrom();
    auto who = std::string("node ") + from.getName().cStr() + " at " + from.getPeerAddress().cStr();
    auto why = n_.refuse(p.getProtocol(), p.getToken(), who);
    if (!why.empty()) return refusal(n_, why);
    if (from.getName() == n_.config().name.c_str()) return refusal(n_, "it has the same name");
    auto& m = n_.learn(from);
    n_.heard_from(m, from.getIncarnation());
    n_.learn_all(p.getMembers());
    auto r = ctx.getResults();
    write_info(r.initNode(), n_.config(), n_.incarnation());
    n_.fill_members(r.initMembers(n_.member_count()));
    return kj::READY_NOW;
  }
  kj::Promise<void> host(HostContext ctx) override {
    auto p = ctx.getParams();
    if (auto why = n_.refuse(p.getProtocol(), p.getToken(), "a deploy from a peer"); !why.empty())
      return refusal(n_, why);
    pipeline_placement placed;
    for (auto x : p.getPlacement()) {
      auto& where = placed.nodes_of[x.getStage()];
      for (auto n : x.getNodes()) where.push_back(n);
      if (x.getMoves() > 0) placed.moves[x.getStage()] = x.getMoves();
      auto& c = placed.candidates[x.getStage()];
      for (auto n : x.getCandidates()) c.push_back(n);
    }
    for (auto x : p.getNodes()) placed.data_address[x.getNode()] = x.getDataAddress();
    placed.run = p.getRun();
    std::string name;
    std::vector<stage_part> parts;
    if (auto e = host_.deploy(p.getPipeline(), p.getSource(), name, &placed, p.getCheckOnly(), &parts); !e.empty())
      return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString(e));
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
    }
    return kj::READY_NOW;
  }

 private:
  cluster_node& n_;
  pipeline_host& host_;
};

// Each stage's dependencies met by a stage of the pipeline in range, on whichever node it
// runs (each node checked those among its own stages); or why not, naming stage and node.
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
            if (range_text.empty() || (range && v && range->contains(*v))) met = true;
            else near += "; stage '" + q.stage + "' on node " + other + " runs version " + q.version;
          }
        if (!met)
          return source + ": stage '" + p.stage + "' on node " + node + ": plugin '" + p.plugin + "' needs plugin '" +
                 plugin + "' " + range_text + ", which no stage of the pipeline runs" + near;
      }
  return {};
}

class admin_service final : public wire::Admin::Server {
 public:
  admin_service(cluster_node& n, pipeline_host& host) : n_(n), host_(host) {}
  /// The event loop's timer, once the server that runs this service has one.
  void set_timer(kj::Timer& t) { timer_ = &t; }
  kj::Promise<void> status(StatusContext ctx) override {
    auto p = ctx.getParams();
    if (auto why = n_.refuse(p.getProtocol(), p.getToken(), "an admin call"); !why.empty()) return refusal(n_, why);
    // This node's instances, then (unless asked for this node only) those of every member
    // that is up, asked in parallel; a member that does not answer in time is left out.
    auto rows = std::make_shared<std::vector<instance_row>>();
    for (auto& x : host_.instances()) rows->push_back({x, n_.config().name});
    if (p.getThisNodeOnly() || timer_ == nullptr) {
      fill(ctx.getResults(), *rows);
      return kj::READY_NOW;
    }
    std::string token = p.getToken();
    auto members = n_.up_admins();
    auto asks = kj::heapArrayBuilder<kj::Promise<void>>(members.size());
    for (auto& [name, address] : members) {
      remote<wire::Admin> admin(address);
      auto req = admin.cap->statusRequest();
      req.setProtocol(wire::CLUSTER_PROTOCOL);
      req.setToken(token);
      req.setThisNodeOnly(true);
      asks.add(admin.keep(timer_->timeoutAfter(2 * kj::SECONDS, req.send())
                   .then(
                       [rows](capnp::Response<wire::Admin::StatusResults>&& r) {
                         for (auto i : r.getInstances())
                           rows->push_back({hosted_instance{i.getPipeline(), i.getStage(), i.getInstance(),
                                                            i.getMode(), i.getState(), i.getGeneration(),
                                                            i.getFramesIn(), i.getFramesOut(), i.getRestarts()},
                                            i.getNode()});
                       },
                       [name = name](kj::Exception&& e) {
                         spdlog::warn("status: node {} did not answer: {}", name, reason(e));
                       })));
    }
    return kj::joinPromises(asks.finish()).then([this, ctx, rows]() mutable { fill(ctx.getResults(), *rows); });
  }
  kj::Promise<void> deploy(DeployContext ctx) override {
    auto p = ctx.getParams();
    if (auto why = n_.refuse(p.getProtocol(), p.getToken(), "an admin call"); !why.empty()) return refusal(n_, why);
    std::string text = p.getPipeline(), source = p.getSource();
    std::string name;
    std::vector<std::pair<std::string, std::vector<std::string>>> stages;
    if (auto e = host_.read_placement(text, source, name, stages); !e.empty()) return failure(e);
    auto& self = n_.config().name;
    // Where each stage runs (a stage without a node runs here), and how to reach the nodes.
    auto placed = std::make_shared<pipeline_placement>();
    auto peers = std::make_shared<std::set<std::string>>();  // the other nodes it runs on
    placed->data_address[self] = n_.config().advertise_data;
    placed->run = name + "." + self + "." +
                  std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
    std::map<std::string, int> load;  // stages on each node, for node: any
    for (auto& [stage, nodes] : stages) {
      if (nodes.empty()) ++load[self];
      else if (nodes[0] != "*")
        for (auto& n : nodes) ++load[n];
    }
    for (auto& [stage, nodes] : stages) {
      placed->candidates[stage] = nodes;
      std::vector<std::string> where;
      if (nodes.empty()) {
        where = {self};
      } else if (nodes[0] == "*") {  // any: the live node running the fewest of its stages
        auto best = n_.least_loaded(load);
        where = {best};
        ++load[best];
      } else {
        where = nodes;
      }
      placed->nodes_of[stage] = where;
      for (auto& n : where) {
        if (n == self) continue;
        auto* m = n_.find(n);
        if (m == nullptr) {
          std::string names;
          for (auto& x : n_.member_names()) names += (names.empty() ? "" : ", ") + x;
          return failure(source + ": stage '" + stage + "' is placed on node '" + n +
                         "', which is not a member of the cluster (members: " + names + ")");
        }
        if (m->st != member::state::up)
          return failure(source + ": stage '" + stage + "' is placed on node '" + n + "', which is " +
                         to_string(m->st));
        if (m->data_address.empty()) return failure("node " + n + " has not said where it takes frames");
        placed->data_address[n] = m->data_address;
        peers->insert(n);
      }
    }
    if (peers->empty()) {
      if (auto e = host_.deploy(text, source, name); !e.empty()) return failure(e);
      ctx.getResults().setName(name);
      return kj::READY_NOW;
    }
    // Every node checks its part before any starts (and says what its stages are, so that
    // dependencies are checked across nodes); then the others start, then this one.
    auto parts = std::make_shared<std::map<std::string, std::vector<stage_part>>>();
    if (auto e = host_.deploy(text, source, name, placed.get(), true, &(*parts)[self]); !e.empty()) return failure(e);
    auto ask_all = [this, text, source, placed, peers, parts](bool check) {
      auto asks = kj::heapArrayBuilder<kj::Promise<void>>(peers->size());
      for (auto& node : *peers)
        asks.add(n_.ask_host(node, text, source, *placed, check, *timer_)
                     .then([parts, node = node](std::vector<stage_part>&& got) { (*parts)[node] = std::move(got); }));
      return kj::joinPromises(asks.finish());
    };
    return ask_all(true)
        .then([ask_all, parts, source]() mutable {
          if (auto why = check_needs(source, *parts); !why.empty()) throw failure(why);
          return ask_all(false);
        })
        .then([this, ctx, text, source, placed, peers]() mutable {
          std::string name;
          if (auto e = host_.deploy(text, source, name, placed.get()); !e.empty()) throw failure(e);
          std::string where;
          for (auto& [stage, nodes] : placed->nodes_of)
            for (auto& n : nodes) where += (where.empty() ? "" : ", ") + stage + "@" + n;
          spdlog::info("[node={}] pipeline '{}' placed: {}", n_.config().name, name, where);
          ctx.getResults().setName(name);
        });
  }
  kj::Promise<void> scale(ScaleContext ctx) override {
    auto p = ctx.getParams();
    if (auto why = n_.refuse(p.getProtocol(), p.getToken(), "an admin call"); !why.empty()) return refusal(n_, why);
    std::string pipeline = p.getPipeline(), stage = p.getStage(), on = p.getOn(), token = p.getToken();
    auto& self = n_.config().name;
    // Where the stage runs: by the placement of a pipeline this node runs part of, else here
    // (or on the node named, if this node runs none of it).
    std::string target = on.empty() ? self : on;
    for (auto& pp : host_.placed_pipelines())
      if (pp.name == pipeline) {
        auto it = pp.placement.nodes_of.find(stage);
        if (it == pp.placement.nodes_of.end())
          return failure("no stage named '" + stage + "' in pipeline '" + pipeline + "'");
        auto& nodes = it->second;
        auto runs_on = [&](const std::string& n) { return std::find(nodes.begin(), nodes.end(), n) != nodes.end(); };
        if (!on.empty() && !runs_on(on)) {
          std::string list;
          for (auto& n : nodes) list += (list.empty() ? "" : ", ") + n;
          return failure("stage '" + stage + "' of pipeline '" + pipeline + "' runs on node" +
                         (nodes.size() == 1 ? " " : "s ") + list + ", not on node " + on);
        }
        // A stage on several nodes is scaled on each (replicas per node): here if it runs here.
        target = !on.empty() ? on : runs_on(self) ? self : nodes.front();
      }
    if (target == self) {
      if (auto e = host_.scale(pipeline, stage, p.getReplicas()); !e.empty()) return failure(e);
      ctx.getResults().setNode(self);
      return kj::READY_NOW;
    }
    auto* m = n_.find(target);
    if (m == nullptr || m->st != member::state::up || m->admin_address.empty() || timer_ == nullptr)
      return failure("stage '" + stage + "' of pipeline '" + pipeline + "' runs on node " + target +
                     ", which is not reachable now");
    remote<wire::Admin> admin(m->admin_address);
    auto req = admin.cap->scaleRequest();
    req.setProtocol(wire::CLUSTER_PROTOCOL);
    req.setToken(token);
    req.setPipeline(pipeline);
    req.setStage(stage);
    req.setReplicas(p.getReplicas());
    req.setOn(target);
    return admin.keep(timer_->timeoutAfter(10 * kj::SECONDS, req.send())
        .then(
            [ctx](capnp::Response<wire::Admin::ScaleResults>&& r) mutable { ctx.getResults().setNode(r.getNode()); },
            [](kj::Exception&& e) -> void { throw failure(reason(e)); }));
  }
  kj::Promise<void> stop(StopContext ctx) override {
    auto p = ctx.getParams();
    if (auto why = n_.refuse(p.getProtocol(), p.getToken(), "an admin call"); !why.empty()) return refusal(n_, why);
    auto e = host_.stop(p.getPipeline());
    if (e.empty()) {
      ctx.getResults().setNode(n_.config().name);
      return kj::READY_NOW;
    }
    auto members = n_.up_admins();
    if (p.getThisNodeOnly() || timer_ == nullptr || members.empty()) return failure(e);
    // Not here: the first member that runs part of it drains the whole of it.
    std::string pipeline = p.getPipeline(), token = p.getToken();
    auto taken = std::make_shared<std::string>();
    auto asks = kj::heapArrayBuilder<kj::Promise<void>>(members.size());
    for (auto& [name, address] : members) {
      remote<wire::Admin> admin(address);
      auto req = admin.cap->stopRequest();
      req.setProtocol(wire::CLUSTER_PROTOCOL);
      req.setToken(token);
      req.setPipeline(pipeline);
      req.setThisNodeOnly(true);
      asks.add(admin.keep(timer_->timeoutAfter(5 * kj::SECONDS, req.send())
                   .then([taken](capnp::Response<wire::Admin::StopResults>&& r) { *taken = r.getNode(); },
                         [](kj::Exception&&) {})));
    }
    return kj::joinPromises(asks.finish()).then([ctx, taken, pipeline, this]() mutable {
      if (taken->empty())
        throw failure("no node of the cluster runs pipeline '" + pipeline + "' (asked " + n_.config().name +
                      " and every member that is up)");
      ctx.getResults().setNode(*taken);
    });
  }

 private:
  static kj::Exception failure(const std::string& why) {
    return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString(why));
  }
  struct instance_row {
    hosted_instance i;
    std::string node;
  };
  void fill(wire::Admin::StatusResults::Builder r, const std::vector<instance_row>& rows) {
    n_.status(r);
    auto list = r.initInstances(static_cast<unsigned>(rows.size()));
    for (unsigned k = 0; k < rows.size(); ++k) {
      auto& x = rows[k].i;
      auto b = list[k];
      b.setPipeline(x.pipeline);
      b.setStage(x.stage);
      b.setInstance(x.instance);
      b.setNode(rows[k].node);
      b.setMode(x.mode);
      b.setState(x.state);
      b.setGeneration(x.generation);
      b.setFramesIn(x.frames_in);
      b.setFramesOut(x.frames_out);
      b.setRestarts(x.restarts);
    }
  }
  cluster_node& n_;
  pipeline_host& host_;
  kj::Timer* timer_ = nullptr;
};

struct task_errors final : kj::TaskSet::ErrorHandler {
  void taskFailed(kj::Exception&& e) override { spdlog::warn("node task failed: {}", e.getDescription().cStr()); }
};

// A member went down: the pipelines this node runs part of that had stages on it are placed
// again where their files allow. The lowest-named live node running part of a pipeline
// leads; it tells every node of the new placement (new ones start the stages, the others
// send them their frames, and what the dead node did not acknowledge goes there again).
void place_again(cluster_node& node, pipeline_host& host, const std::string& down, kj::Timer& timer,
                 kj::TaskSet& tasks) {
  auto& self = node.config().name;
  for (auto& pp : host.placed_pipelines()) {
    auto& pl = pp.placement;
    if (!pl.runs_on(down) || node.leader_of(pl) != self) continue;
    auto next = pl;
    std::string moves;
    for (auto& [stage, nodes] : next.nodes_of) {
      std::vector<std::string> live;
      for (auto& n : nodes)
        if (node.is_up(n)) live.push_back(n);
      if (live.size() == nodes.size()) continue;
      auto& allowed = pl.candidates[stage];
      if (live.empty() && allowed.size() == 1 && allowed[0] == "*") {
        // Any node: the live one running the fewest of the pipeline's stages, as at deploy.
        std::map<std::string, int> load;
        for (auto& [other, ns] : next.nodes_of)
          for (auto& m : ns) ++load[m];
        auto to = node.least_loaded(load);
        if (!to.empty()) {
          live = {to};
          next.moves[stage] += 1;
        }
      }
      if (live.empty()) {
        spdlog::error("[node={}] stage '{}' of pipeline '{}' ran on node {}, which is down, and its placement allows no "
                      "live node: it waits for {}",
                      self, stage, pp.name, down, down);
        continue;
      }
      std::string list;
      for (auto& n : live) {
        list += (list.empty() ? "" : ", ") + n;
        if (n == self) continue;
        auto* m = node.find(n);
        if (m != nullptr && !m->data_address.empty()) next.data_address[n] = m->data_address;
      }
      moves += (moves.empty() ? "" : "; ") + stage + " runs on " + list;
      nodes = live;
    }
    if (moves.empty()) continue;
    spdlog::warn("[node={}] node {} is down: in pipeline '{}', {}", self, down, pp.name, moves);
    std::set<std::string> nodes;
    for (auto& [stage, ns] : next.nodes_of) nodes.insert(ns.begin(), ns.end());
    for (auto& n : nodes) {
      if (n == self) continue;
      tasks.add(node.ask_host(n, pp.text, pp.source, next, false, timer)
                    .ignoreResult()
                    .catch_([self, n, name = pp.name](kj::Exception&& e) {
                      spdlog::error("[node={}] node {} did not take the new placement of pipeline '{}': {}", self, n,
                                    name, reason(e));
                    }));
    }
    std::string name;
    if (auto e = host.deploy(pp.text, pp.source, name, &next); !e.empty())
      spdlog::error("[node={}] the new placement of pipeline '{}' failed here: {}", self, pp.name, e);
  }
}

// A member taken for dead is heard again: a pipeline this node leads that no longer runs
// anything there tells it so, and it stops what it may still run of it (a node that
// restarted runs nothing, and ignores it).
void fence_returned(cluster_node& node, pipeline_host& host, const std::string& back, kj::Timer& timer,
                    kj::TaskSet& tasks) {
  auto& self = node.config().name;
  if (node.find(back) == nullptr) return;
  for (auto& pp : host.placed_pipelines()) {
    auto& pl = pp.placement;
    if (pl.runs_on(back) || node.leader_of(pl) != self) continue;
    spdlog::warn("[node={}] node {} is back: telling it pipeline '{}' runs elsewhere now", self, back, pp.name);
    tasks.add(node.ask_host(back, pp.text, pp.source, pl, false, timer)
                  .ignoreResult()
                  .catch_([self, back](kj::Exception&& e) {
                    spdlog::warn("[node={}] node {} was not told: {}", self, back, reason(e));
                  }));
  }
}

}  // namespace

int serve(const node_config& config) {
  auto c = &config;
  cluster_node node(*c);
  link_options lo;
  lo.node = c->name;
  lo.token = c->token;
  lo.listen = c->data;
  lo.incarnation = node.incarnation();
  lo.registry = node.registry();
  auto plane = data_plane::start(std::move(lo));
  if (!plane) {
    std::fprintf(stderr, "troupe node: %s: %s\n", c->path.c_str(), describe(plane.error()).c_str());
    return 1;
  }
  pipeline_host host(c->name, c->plugin_paths, *plane);
  try {
    auto admin_impl = kj::heap<admin_service>(node, host);
    auto* admin_svc = admin_impl.get();
    capnp::EzRpcServer admin(kj::mv(admin_impl), c->admin);
    admin_svc->set_timer(admin.getIoProvider().getTimer());
    auto& wait = admin.getWaitScope();
    admin.getPort().wait(wait);
    // Peers: each connection's framing is checked before the RPC system reads it.
    auto& io = admin.getIoProvider();
    capnp::TwoPartyServer peers(kj::heap<peer_service>(node, host));
    auto listener = io.getNetwork().parseAddress(c->listen).wait(wait)->listen();
    task_errors accept_errors;
    kj::TaskSet accepting(accept_errors);
    std::function<kj::Promise<void>()> accept_loop = [&]() -> kj::Promise<void> {
      return listener->accept().then([&](kj::Own<kj::AsyncIoStream>&& conn) {
        std::string from = "?";
        sockaddr_storage sa{};
        kj::uint len = sizeof sa;
        try {
          conn->getpeername(reinterpret_cast<sockaddr*>(&sa), &len);
          char host[INET6_ADDRSTRLEN] = "?";
          if (sa.ss_family == AF_INET) {
            auto* in = reinterpret_cast<sockaddr_in*>(&sa);
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
            from = std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
          }
        } catch (const kj::Exception&) {
        }
        peers.accept(kj::heap<checked_stream>(kj::mv(conn), max_peer_message_bytes,
                                              [&node, from](const std::string& why) { node.bad_message(from, why); }));
        return accept_loop();
      });
    };
    accepting.add(accept_loop());
    std::unique_ptr<prometheus::Exposer> exposer;
    if (!c->metrics.empty()) {
      try {
        exposer = std::make_unique<prometheus::Exposer>(c->metrics, 1);
        exposer->RegisterCollectable(node.registry());
        exposer->RegisterCollectable(host.registry());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "troupe node: %s: metrics %s: cannot listen: %s\n", c->path.c_str(), c->metrics.c_str(),
                     e.what());
        return 1;
      }
    }
    spdlog::info("[node={}] serving peers on {}, frames on {}, admin on {}{}{}", c->name, c->listen, c->data, c->admin,
                 c->metrics.empty() ? "" : ", metrics on http://", c->metrics.empty() ? "" : c->metrics + "/metrics");
    std::signal(SIGINT, on_node_signal);
    std::signal(SIGTERM, on_node_signal);
    auto& timer = io.getTimer();
    task_errors errors;
    kj::TaskSet tasks(errors);
    node.on_down([&](const std::string& down) { place_again(node, host, down, timer, tasks); });
    node.on_back([&](const std::string& back) { fence_returned(node, host, back, timer, tasks); });
    while (node_signal.load() == 0) {
      node.tick(timer, tasks);
      timer.afterDelay(c->heartbeat_ms * kj::MILLISECONDS).wait(wait);
    }
    spdlog::info("[node={}] stopping (signal {})", c->name, node_signal.load());
  } catch (const kj::Exception& e) {
    std::fprintf(stderr, "troupe node: %s: %s\n", c->path.c_str(), e.getDescription().cStr());
    return 1;
  }
  return 0;
}

}  // namespace troupe::cluster
