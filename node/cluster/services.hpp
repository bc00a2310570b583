// The node's Peer and Admin interfaces (schema/node.capnp), served on its event loop.
#pragma once

#include "frame_guard.hpp"
#include "node.hpp"

#include <node.capnp.h>

#include <memory>
#include <set>
#include <string>

namespace troupe::cluster {

// Each connection has services of its own: a call that carries the token opens its gate.
class peer_service final : public wire::Peer::Server {
 public:
  peer_service(cluster_node& n, std::shared_ptr<connection_gate> gate) : n_(n), gate_(std::move(gate)) {}
  kj::Promise<void> hello(HelloContext ctx) override;
  kj::Promise<void> check(CheckContext ctx) override;
  kj::Promise<void> poke(PokeContext ctx) override;
  kj::Promise<void> storeContact(StoreContactContext ctx) override;

 private:
  std::string admit(uint32_t protocol, kj::StringPtr token, const std::string& who);
  struct deploy_plan;
  struct checked;
  // Places the stages and has every node check its part; `node: any` stages placed on a node
  // without room for them are placed again without it (full), until they fit or no node is
  // left (then `refused`, the last node's refusal, is the answer).
  kj::Promise<checked> place_and_check(std::shared_ptr<const deploy_plan> d, std::set<std::string> full,
                                       std::string refused);
  cluster_node& n_;
  std::shared_ptr<connection_gate> gate_;
};

class admin_service final : public wire::Admin::Server {
 public:
  admin_service(cluster_node& n, std::shared_ptr<connection_gate> gate) : n_(n), gate_(std::move(gate)) {}
  kj::Promise<void> hello(HelloContext ctx) override;
  kj::Promise<void> status(StatusContext ctx) override;
  kj::Promise<void> deploy(DeployContext ctx) override;
  kj::Promise<void> scale(ScaleContext ctx) override;
  kj::Promise<void> stop(StopContext ctx) override;
  kj::Promise<void> events(EventsContext ctx) override;

 private:
  std::string admit(uint32_t protocol, kj::StringPtr token, const std::string& who);
  struct deploy_plan;
  struct checked;
  // Places the stages and has every node check its part; `node: any` stages placed on a node
  // without room for them are placed again without it (full), until they fit or no node is
  // left (then `refused`, the last node's refusal, is the answer).
  kj::Promise<checked> place_and_check(std::shared_ptr<const deploy_plan> d, std::set<std::string> full,
                                       std::string refused);
  cluster_node& n_;
  std::shared_ptr<connection_gate> gate_;
};

/// Each stage's dependencies met by a stage of the pipeline in range, on whichever node it
/// runs (each node checked those among its own stages); or why not, naming stage and node.
std::string check_needs(const std::string& source, const std::map<std::string, std::vector<stage_part>>& by_node);

}  // namespace troupe::cluster
