// `troupe node`: the event loop, the listeners and the metrics endpoint around cluster_node.
#include "frame_guard.hpp"
#include "metrics_endpoint.hpp"
#include "node.hpp"
#include "rpc.hpp"
#include "services.hpp"

#include <link.hpp>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <prometheus/exposer.h>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <functional>

namespace troupe::cluster {

namespace {

std::atomic<int> node_signal{0};
void on_node_signal(int sig) { node_signal.store(sig); }

// The largest message a peer or an admin client may send: a pipeline file with its placement
// is far smaller (frames travel on the data links).
constexpr uint64_t max_message_bytes = uint64_t{16} << 20;

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

// Accepts connections on listener for server; each connection's framing is checked before
// the RPC system reads it.
kj::Promise<void> accept_loop(kj::ConnectionReceiver& listener, capnp::TwoPartyServer& server, cluster_node& node) {
  return listener.accept().then([&](kj::Own<kj::AsyncIoStream>&& conn) {
    auto from = peer_of(*conn);
    server.accept(kj::heap<checked_stream>(kj::mv(conn), max_message_bytes,
                                           [&node, from](const std::string& why) { node.bad_message(from, why); }));
    return accept_loop(listener, server, node);
  });
}

}  // namespace

int serve(const node_config& config) {
  auto& c = config;
  auto registry = std::make_shared<prometheus::Registry>();
  link_options lo;
  lo.node = c.name;
  lo.token = c.token;
  lo.listen = c.data;
  lo.registry = registry;
  auto plane = data_plane::start(std::move(lo));
  if (!plane) {
    std::fprintf(stderr, "troupe node: %s: %s\n", c.path.c_str(), describe(plane.error()).c_str());
    return 1;
  }
  pipeline_host host(c.name, c.plugin_paths, *plane);
  try {
    auto io = kj::setupAsyncIo();
    auto& wait = io.waitScope;
    cluster_node node(c, *io.provider, host, registry);
    task_errors errors;
    kj::TaskSet tasks(errors);
    auto& net = io.provider->getNetwork();
    capnp::TwoPartyServer peers(kj::heap<peer_service>(node));
    capnp::TwoPartyServer admins(kj::heap<admin_service>(node));
    auto peer_listener = net.parseAddress(c.listen).wait(wait)->listen();
    auto admin_listener = net.parseAddress(c.admin).wait(wait)->listen();
    tasks.add(accept_loop(*peer_listener, peers, node));
    tasks.add(accept_loop(*admin_listener, admins, node));
    std::unique_ptr<prometheus::Exposer> exposer;
    if (!c.metrics.empty()) {
      try {
        exposer = serve_metrics(c.metrics);
        exposer->RegisterCollectable(registry);
        exposer->RegisterCollectable(host.registry());
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
    auto& timer = io.provider->getTimer();
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
