// A cluster member: `troupe node`.
//
// etcd is the cluster's source of truth (records.hpp): a node registers under a lease it keeps
// alive, reads the store every poll, and runs its part of every pipeline whose placement
// record names it, at that record's revision (its epoch). Whichever node holds a pipeline's
// leader key (under its own lease) places the pipeline's stages again when members come and
// go, with a compare-and-swap on the record. A node that cannot renew its lease changes no
// placement, and before the store could end its lease it stops the stages other nodes may take
// over (self-fencing), unless every other member says the store is down for it too.
//
// Threads: everything here runs on the node's KJ event loop, which never waits on the actor
// system: the hosted pipelines (host.hpp) are driven through a job thread.
#pragma once

#include "etcd.hpp"
#include "host.hpp"
#include "jobs.hpp"
#include "lease.hpp"
#include "node_config.hpp"
#include "records.hpp"

#include <node.capnp.h>

#include <kj/async-io.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace kj {
class TlsContext;
}

namespace troupe::cluster {

/// Runs the node until SIGINT or SIGTERM; returns the process exit status (errors that stop
/// it from starting are printed, naming the config file).
int serve(const node_config& config);

class cluster_node {
 public:
  using clock = std::chrono::steady_clock;

  cluster_node(const node_config& c, kj::AsyncIoProvider& io, pipeline_host& host,
               std::shared_ptr<prometheus::Registry> registry);

  /// One turn of the node's loop: keeps the lease, reads the store when due, fences itself
  /// when it must. Call often (every few tens of milliseconds).
  void tick();

  /// Reads the store now (a peer or this node changed it); resolves once read and applied.
  kj::Promise<void> read_now();
  /// Tells every other member to read the store now (this node changed it).
  void poke_members();

  const node_config& config() const { return c_; }
  const keyspace& keys() const { return keys_; }
  etcd_client& store() { return store_; }
  pipeline_host& host() { return host_; }
  job_thread& jobs() { return jobs_; }
  kj::AsyncIoProvider& io() { return io_; }
  const cluster_view& view() const { return view_; }
  /// The node holds its lease and may change the store (deploy, stop, lead).
  bool in_good_standing() const { return lease_.held() && !lease_.must_fence(clock::now()); }
  /// Why it may not, for an error message.
  std::string standing() const;
  int64_t lease_id() const { return lease_id_; }
  /// Milliseconds since the store last answered this node; -1: never.
  int64_t store_contact_ago_ms() const;
  /// How long the store has answered this node without a failure, up to its last answer (0:
  /// its last call failed).
  int64_t store_steady_ms() const;

  /// Why a caller is refused, or empty (and then counted and logged). An admin caller presents
  /// the admin token where the config has one, a peer the cluster token.
  std::string refuse(uint32_t protocol, kj::StringPtr token, const std::string& who, bool admin = false);
  /// A peer or admin connection sent what is not a message: it is closed, the node goes on.
  void bad_message(const std::string& from, const std::string& why);

  /// Each stage's nodes, the nodes' data addresses, epoch and fences: what the host runs.
  pipeline_placement placement_of(const placement_record& r, int64_t epoch) const;
  /// The token to present to peers.
  const std::string& token() const { return c_.token; }
  /// TLS for calls to peers (null: plain), owned by whoever serves the node.
  void use_tls(kj::TlsContext* tls) { tls_ = tls; }
  kj::TlsContext* tls() const { return tls_; }

 private:
  void start_registration();
  void keep_alive();
  void poll();
  kj::Promise<void> read_store();
  void adopt_view(cluster_view v);
  void apply(const std::string& name, const cluster_view::pipeline& p);
  void lead(const std::string& name, const cluster_view::pipeline& p);
  void report_finished_parts();
  void check_standing();
  void store_failed();
  void unfence();
  void fence_self(const std::string& why);
  void log_once(const std::string& key, const std::string& text, bool error = false);
  /// Tells the store this node has no room for stages of a pipeline (the leader moves what it
  /// may), or withdraws that.
  void refuse_room(const std::string& pipeline, const room_refusal& r);
  void withdraw_refusal(const std::string& pipeline);

  struct task_errors final : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override;
  };

  node_config c_;
  kj::AsyncIoProvider& io_;
  kj::TlsContext* tls_ = nullptr;
  pipeline_host& host_;
  keyspace keys_;
  etcd_client store_;
  job_thread jobs_;
  lease_clock lease_;
  int64_t lease_id_ = 0;
  bool registering_ = false, keep_alive_pending_ = false, polling_ = false, again_ = false, probing_ = false;
  bool fenced_ = false;      // stopped what others may take over; re-applies once it can
  bool store_down_ = false;  // every member said the store is down: nothing to fence
  clock::time_point started_ = clock::now();
  std::optional<clock::time_point> last_failure_, next_probe_at_;  // a store call failed; the next standing probe
  std::optional<clock::time_point> last_contact_, last_poll_, last_keep_alive_, retry_registration_at_;
  std::optional<clock::time_point> last_tick_;
  cluster_view view_;
  bool have_view_ = false;
  std::map<std::string, int64_t> applied_;  // pipeline -> the epoch its part here runs at
  // pipeline -> the record its part here was last deployed from: what a fence stops is what
  // runs here, not what a newer record (read while this node could not act on it) places.
  std::map<std::string, cluster_view::pipeline> deployed_;
  std::set<std::string> stopping_;                 // pipeline runs told to drain here
  std::map<std::string, std::string> unreported_;  // pipeline -> run whose finished part the store has not taken
  std::set<std::string> reporting_;                // pipelines whose report is under way
  std::set<std::string> campaigning_;              // pipelines this node asked to lead
  std::set<std::string> writing_;                  // pipelines whose record this node is changing
  std::map<std::string, std::string> said_;        // log_once: key -> what was said last
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> waiting_reads_;

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& peer_up_;
  prometheus::Gauge& lease_held_;
  prometheus::Counter& renewals_;
  prometheus::Counter& renewal_failures_;
  prometheus::Counter& self_fences_;
  prometheus::Counter& store_errors_;
  prometheus::Counter& placements_written_;
  prometheus::Counter& refused_;
  prometheus::Counter& bad_messages_;
  prometheus::Family<prometheus::Gauge>& leads_;
  // Last, so that they go first: what is under way is dropped before what it uses.
  task_errors errors_;
  kj::TaskSet tasks_{errors_};
};

}  // namespace troupe::cluster
