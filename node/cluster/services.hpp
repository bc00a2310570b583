// The node's Peer and Admin interfaces (schema/node.capnp), served on its event loop.
#pragma once

#include "node.hpp"

#include <node.capnp.h>

namespace troupe::cluster {

class peer_service final : public wire::Peer::Server {
 public:
  explicit peer_service(cluster_node& n) : n_(n) {}
  kj::Promise<void> check(CheckContext ctx) override;
  kj::Promise<void> poke(PokeContext ctx) override;
  kj::Promise<void> storeContact(StoreContactContext ctx) override;

 private:
  cluster_node& n_;
};

class admin_service final : public wire::Admin::Server {
 public:
  explicit admin_service(cluster_node& n) : n_(n) {}
  kj::Promise<void> status(StatusContext ctx) override;
  kj::Promise<void> deploy(DeployContext ctx) override;
  kj::Promise<void> scale(ScaleContext ctx) override;
  kj::Promise<void> stop(StopContext ctx) override;

 private:
  cluster_node& n_;
};

/// Each stage's dependencies met by a stage of the pipeline in range, on whichever node it
/// runs (each node checked those among its own stages); or why not, naming stage and node.
std::string check_needs(const std::string& source, const std::map<std::string, std::vector<stage_part>>& by_node);

}  // namespace troupe::cluster
