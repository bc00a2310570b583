// `troupe node`: the event loop, the listeners and the metrics endpoint around cluster_node.
#include "frame_guard.hpp"
#include "metrics_endpoint.hpp"
#include "node.hpp"
#include "rpc.hpp"
#include "services.hpp"
#include "tls.hpp"

#include <troupe/link.hpp>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>

namespace troupe::cluster {

namespace {

std::atomic<int> node_signal{0};
void on_node_signal(int sig) { node_signal.store(sig); }

// How much a peer or an admin client may send: a pipeline file with its placement is far
// smaller than a message may be (frames travel on the data links); before a call on the
// connection has carried the token, a few KiB.
constexpr frame_limits limits{uint64_t{16} << 20, 4096, 16384};
// Connections per port, all told and before their first call with the token (from one host).
constexpr size_t max_open = 256;
constexpr size_t max_unauthenticated = 32;
constexpr size_t max_unauthenticated_per_host = 8;
// A connection's first call with the token comes within handshake; a message that has begun
// arrives whole within message; a connection with nothing to say for idle is closed.
constexpr auto handshake = std::chrono::seconds(5);
constexpr auto message = std::chrono::seconds(30);
constexpr auto idle = std::chrono::seconds(300);

struct task_errors final : kj::TaskSet::ErrorHandler {
  void taskFailed(kj::Exception&& e) override { spdlog::warn("node task failed: {}", reason(e)); }
};

std::string peer_of(kj::AsyncIoStream& conn) {
  sockaddr_storage sa{};
  kj::uint len = sizeof sa;
  try {
    conn.getpeername(reinterpret_cast<sockaddr*>(&sa), &len);
  } catch (const kj::Exception&) {
    return "?";
  }
  char host[INET6_ADDRSTRLEN] = "?";
  if (sa.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&sa);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  return "?";
}

std::string host_of(const std::string& address) { return address.substr(0, address.rfind(':')); }

// One of the node's RPC ports (peer or admin): its connections within their limits, each
// served with its own services (which know whether it has authenticated), watched for its
// deadlines, and closed when it ends or misses one.
class rpc_port final : kj::TaskSet::ErrorHandler {
 public:
  using services_fn = std::function<capnp::Capability::Client(std::shared_ptr<connection_gate>)>;
  rpc_port(std::string name, cluster_node& node, kj::Timer& timer, kj::TlsContext* tls, prometheus::Registry& registry,
           services_fn services)
      : name_(std::move(name)),
        node_(node),
        timer_(timer),
        tls_(tls),
        services_(std::move(services)),
        refused_(prometheus::BuildCounter()
                     .Name("troupe_node_refused_connections_total")
                     .Help("Peer and admin connections closed at accept: too many open, or waiting for their token")
                     .Register(registry)
                     .Add({{"node", node.config().name}, {"port", name_}})),
        overdue_(prometheus::BuildCounter()
                     .Name("troupe_node_connection_deadlines_total")
                     .Help("Peer and admin connections closed for a missed deadline: no call with the token, a "
                           "message that trickled in, or idle")
                     .Register(registry)
                     .Add({{"node", node.config().name}, {"port", name_}})),
        open_(prometheus::BuildGauge()
                  .Name("troupe_node_open_connections")
                  .Help("Peer and admin connections open")
                  .Register(registry)
                  .Add({{"node", node.config().name}, {"port", name_}})) {}

  kj::Promise<void> accept_loop(kj::ConnectionReceiver& listener) {
    return listener.accept().then([this, &listener](kj::Own<kj::AsyncIoStream>&& conn) {
      accept(kj::mv(conn));
      return accept_loop(listener);
    });
  }

 private:
  // What a connection holds of the port's counts, from accept until it ends (however it ends).
  struct admitted {
    admitted(rpc_port& p, std::shared_ptr<connection_gate> g) : port(p), gate(std::move(g)) {}
    admitted(const admitted&) = delete;
    ~admitted() { port.closed(*gate); }
    rpc_port& port;
    std::shared_ptr<connection_gate> gate;
  };
  struct connection {
    connection(rpc_port& port, kj::Own<kj::AsyncIoStream> raw, std::shared_ptr<connection_gate> g)
        : gate(std::move(g)),
          stream(kj::heap<checked_stream>(
              kj::mv(raw), limits, *gate,
              [&node = port.node_, from = gate->from](const std::string& why) { node.bad_message(from, why); })),
          rpc(*stream, port.services_(gate), capnp::rpc::twoparty::Side::SERVER) {}
    std::shared_ptr<connection_gate> gate;
    kj::Own<checked_stream> stream;  // before the RPC system that reads it
    capnp::TwoPartyClient rpc;
  };

  void accept(kj::Own<kj::AsyncIoStream> raw) {
    auto from = peer_of(*raw);
    auto host = host_of(from);
    std::string why;
    if (open_count_ >= max_open)
      why = std::to_string(max_open) + " connections are open";
    else if (unauthenticated_ >= max_unauthenticated)
      why = std::to_string(max_unauthenticated) + " connections wait for a call with the token";
    else if (waiting_from_[host] >= max_unauthenticated_per_host)
      why = std::to_string(max_unauthenticated_per_host) + " connections from " + host +
            " wait for a call with the token";
    if (!why.empty()) return refuse(from, why);  // raw closes here
    auto gate = std::make_shared<connection_gate>(from);
    ++open_count_, ++unauthenticated_, ++waiting_from_[host];
    open_.Set(static_cast<double>(open_count_));
    gate->on_authenticated = [this, host] { settled(host); };
    // With TLS, the handshake first (within the deadline for a call with the token).
    auto stream = tls_ ? tls_->wrapServer(kj::mv(raw)) : kj::Promise<kj::Own<kj::AsyncIoStream>>(kj::mv(raw));
    auto served = stream.then(
        [this, gate](kj::Own<kj::AsyncIoStream>&& s) -> kj::Promise<void> {
          auto c = kj::heap<connection>(*this, kj::mv(s), gate);
          auto ends = c->rpc.onDisconnect();
          return ends.attach(kj::mv(c));
        },
        [this, gate](kj::Exception&& e) { node_.bad_message(gate->from, tls_failure(e)); });
    connections_.add(served.exclusiveJoin(watch(*gate)).attach(kj::heap<admitted>(*this, gate)));
  }

  void settled(const std::string& host) {
    --unauthenticated_;
    if (--waiting_from_[host] == 0) waiting_from_.erase(host);
  }

  void closed(connection_gate& gate) {
    gate.on_authenticated = nullptr;
    if (!gate.authenticated) settled(host_of(gate.from));
    --open_count_;
    open_.Set(static_cast<double>(open_count_));
  }

  // Closes a connection at accept, counted; logged at most every 10 s.
  void refuse(const std::string& from, const std::string& why) {
    refused_.Increment();
    ++refused_since_log_;
    auto now = std::chrono::steady_clock::now();
    if (now - last_log_ < std::chrono::seconds(10)) return;
    spdlog::error("[node={}] refused {} {} connection{} (the last from {}): {}", node_.config().name,
                  refused_since_log_, name_, refused_since_log_ == 1 ? "" : "s", from, why);
    refused_since_log_ = 0;
    last_log_ = now;
  }

  // Resolves when the connection misses a deadline (which ends it), checked every 500 ms.
  kj::Promise<void> watch(connection_gate& gate) {
    return timer_.afterDelay(500 * kj::MILLISECONDS).then([this, &gate]() -> kj::Promise<void> {
      auto why = overdue(gate);
      if (why.empty()) return watch(gate);
      overdue_.Increment();
      spdlog::error("[node={}] closed the {} connection from {}: {}", node_.config().name, name_, gate.from, why);
      return kj::READY_NOW;
    });
  }

  static std::string overdue(const connection_gate& g) {
    auto now = connection_gate::clock::now();
    auto s = [](auto d) { return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(d).count()); };
    if (!g.authenticated && now - g.opened > handshake) return "no call with the token within " + s(handshake) + " s";
    if (g.message_started && now - *g.message_started > message)
      return "a message still incomplete after " + s(message) + " s";
    if (!g.message_started && now - g.last_message > idle) return "idle for " + s(idle) + " s";
    return {};
  }

  std::string name_;
  cluster_node& node_;
  kj::Timer& timer_;
  kj::TlsContext* tls_;  // null: plain connections
  services_fn services_;
  prometheus::Counter& refused_;
  prometheus::Counter& overdue_;
  prometheus::Gauge& open_;
  size_t open_count_ = 0, unauthenticated_ = 0;
  std::map<std::string, size_t> waiting_from_;
  uint64_t refused_since_log_ = 0;
  std::chrono::steady_clock::time_point last_log_{};
  kj::TaskSet connections_{*this};  // last: a connection that ends updates the counts above

  void taskFailed(kj::Exception&& e) override { spdlog::debug("{} connection: {}", name_, reason(e)); }
};

}  // namespace

int serve(const node_config& config) {
  auto& c = config;
  auto registry = std::make_shared<prometheus::Registry>();
  link_options lo;
  lo.node = c.name;
  lo.token = c.token;
  lo.listen = c.data;
  lo.registry = registry;
  if (c.tls) lo.tls = link_io::tls_pems{c.tls->ca_pem, c.tls->cert_pem, c.tls->key_pem};
  auto plane = data_plane::start(std::move(lo));
  if (!plane) {
    std::fprintf(stderr, "troupe node: %s: %s\n", c.path.c_str(), describe(plane.error()).c_str());
    return 1;
  }
  pipeline_host host(c.name, c.plugin_paths, *plane, c.capacity);
  try {
    auto io = kj::setupAsyncIo();
    auto& wait = io.waitScope;
    cluster_node node(c, *io.provider, host, registry);
    auto& net = io.provider->getNetwork();
    auto& timer = io.provider->getTimer();
    // The peer port takes only clients with a certificate from the cluster's CA (the other
    // nodes); the admin port any client that trusts this node's.
    std::unique_ptr<kj::TlsContext> tls, peer_tls;
    if (c.tls) {
      try {
        tls = make_tls_context(c.tls->ca_pem, c.tls->cert_pem, c.tls->key_pem);
        peer_tls = make_tls_context(c.tls->ca_pem, c.tls->cert_pem, c.tls->key_pem, true);
      } catch (const kj::Exception& e) {
        std::fprintf(stderr, "troupe node: %s: tls (cert %s, key %s, ca %s): %s\n", c.path.c_str(), c.tls->cert.c_str(),
                     c.tls->key.c_str(), c.tls->ca.c_str(), reason(e).c_str());
        return 1;
      }
      node.use_tls(tls.get());
    } else {
      spdlog::warn(
          "[node={}] peer, admin and data traffic is not encrypted (no 'tls' in {}): keep these ports on a "
          "network of your own",
          c.name, c.path);
    }
    rpc_port peers("peer", node, timer, peer_tls.get(), *registry,
                   [&node](std::shared_ptr<connection_gate> g) { return kj::heap<peer_service>(node, std::move(g)); });
    rpc_port admins("admin", node, timer, tls.get(), *registry, [&node](std::shared_ptr<connection_gate> g) {
      return kj::heap<admin_service>(node, std::move(g));
    });
    task_errors errors;
    kj::TaskSet tasks(errors);
    auto peer_listener = net.parseAddress(c.listen).wait(wait)->listen();
    auto admin_listener = net.parseAddress(c.admin).wait(wait)->listen();
    tasks.add(peers.accept_loop(*peer_listener));
    tasks.add(admins.accept_loop(*admin_listener));
    auto capacity_metrics = host.capacity_metrics();  // the exposer holds it weakly
    std::unique_ptr<prometheus::Exposer> exposer;
    if (!c.metrics.empty()) {
      try {
        exposer = serve_metrics(c.metrics);
        exposer->RegisterCollectable(registry);
        exposer->RegisterCollectable(host.instance_metrics());
        exposer->RegisterCollectable(capacity_metrics);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "troupe node: %s: metrics %s: cannot listen: %s\n", c.path.c_str(), c.metrics.c_str(),
                     e.what());
        return 1;
      }
    }
    std::string etcd;
    for (auto& e : c.etcd) etcd += (etcd.empty() ? "" : ", ") + e;
    spdlog::info("[node={}] serving peers on {}, frames on {}, admin on {}{}{}; cluster '{}' kept in etcd at {}",
                 c.name, c.listen, c.data, c.admin, c.metrics.empty() ? "" : ", metrics on http://",
                 c.metrics.empty() ? "" : c.metrics + "/metrics", c.cluster, etcd);
    std::signal(SIGINT, on_node_signal);
    std::signal(SIGTERM, on_node_signal);
    while (node_signal.load() == 0) {
      node.tick();
      timer.afterDelay(20 * kj::MILLISECONDS).wait(wait);
    }
    spdlog::info("[node={}] stopping (signal {}): leaving the cluster", c.name, node_signal.load());
    // The others take this node for down at once, rather than when its lease would end.
    if (node.lease_id() != 0)
      timer.timeoutAfter(1 * kj::SECONDS, node.store().revoke(node.lease_id()))
          .then([] {}, [](kj::Exception&&) {})
          .wait(wait);
  } catch (const kj::Exception& e) {
    std::fprintf(stderr, "troupe node: %s: %s\n", c.path.c_str(), reason(e).c_str());
    return 1;
  }
  return 0;
}

}  // namespace troupe::cluster
