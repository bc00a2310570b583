// `troupe node`: reads node.yaml and runs a cluster member (node/cluster/).
#include "commands.hpp"

#include <cluster/node.hpp>
#include <cluster/node_config.hpp>

#include <cstdio>

namespace troupe::cli {

int run_node(const common_options&, const node_options& o) {
  auto c = cluster::load_node_config(o.config);
  if (!c) {
    std::fprintf(stderr, "troupe node: %s\n", describe(c.error()).c_str());
    return 2;
  }
  if (o.check_only) {
    std::string etcd;
    for (auto& e : c->etcd) etcd += (etcd.empty() ? "" : ",") + e;
    std::printf(
        "%s: node %s of cluster %s, peers on %s (reached at %s), frames on %s (reached at %s), admin on %s, "
        "etcd at %s, lease %u ms, capacity %s (%s)\n",
        c->path.c_str(), c->name.c_str(), c->cluster.c_str(), c->listen.c_str(), c->advertise.c_str(), c->data.c_str(),
        c->advertise_data.c_str(), c->admin.c_str(), etcd.c_str(), c->lease_ms,
        describe_capacity(c->capacity.total).c_str(), c->capacity.source.c_str());
    return 0;
  }
  return cluster::serve(*c);
}

}  // namespace troupe::cli
