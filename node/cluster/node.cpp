#include "node.hpp"

#include "placement.hpp"
#include "records.hpp"
#include "rpc.hpp"

#include <spdlog/spdlog.h>
#include <troupe/events.hpp>
#include <troupe/secret.hpp>

#include <algorithm>
#include <cmath>

namespace troupe::cluster {

namespace {

std::chrono::milliseconds since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t);
}

}  // namespace

using namespace txn;

void cluster_node::task_errors::taskFailed(kj::Exception&& e) { spdlog::warn("node task failed: {}", reason(e)); }

cluster_node::cluster_node(const node_config& c, kj::AsyncIoProvider& io, pipeline_host& host,
                           std::shared_ptr<prometheus::Registry> registry)
    : c_(c),
      io_(io),
      host_(host),
      keys_(c.cluster),
      store_(io, c.etcd, std::chrono::milliseconds(std::clamp<uint32_t>(c.lease_ms / 6, 100, 1000))),
      registry_(std::move(registry)),
      peer_up_(prometheus::BuildGauge()
                   .Name("troupe_peer_up")
                   .Help("Whether the peer holds its membership lease in the cluster's store")
                   .Register(*registry_)),
      lease_held_(prometheus::BuildGauge()
                      .Name("troupe_node_lease_held")
                      .Help("Whether this node holds its membership lease (and may act as a member)")
                      .Register(*registry_)
                      .Add({{"node", c_.name}})),
      renewals_(prometheus::BuildCounter()
                    .Name("troupe_node_lease_renewals_total")
                    .Help("Keep-alives of this node's lease that the store answered")
                    .Register(*registry_)
                    .Add({{"node", c_.name}})),
      renewal_failures_(prometheus::BuildCounter()
                            .Name("troupe_node_lease_renewal_failures_total")
                            .Help("Keep-alives of this node's lease that no store endpoint answered")
                            .Register(*registry_)
                            .Add({{"node", c_.name}})),
      self_fences_(prometheus::BuildCounter()
                       .Name("troupe_node_self_fences_total")
                       .Help("Times this node stopped the stages others may take over, for want of its lease")
                       .Register(*registry_)
                       .Add({{"node", c_.name}})),
      store_errors_(prometheus::BuildCounter()
                        .Name("troupe_node_store_errors_total")
                        .Help("Reads and writes of the cluster's store that failed")
                        .Register(*registry_)
                        .Add({{"node", c_.name}})),
      placements_written_(prometheus::BuildCounter()
                              .Name("troupe_node_placements_written_total")
                              .Help("Placement records this node wrote as a pipeline's leader (stages placed again)")
                              .Register(*registry_)
                              .Add({{"node", c_.name}})),
      refused_(prometheus::BuildCounter()
                   .Name("troupe_node_refused_calls_total")
                   .Help("Calls refused for a wrong cluster token or protocol version")
                   .Register(*registry_)
                   .Add({{"node", c_.name}})),
      bad_messages_(prometheus::BuildCounter()
                        .Name("troupe_node_bad_messages_total")
                        .Help("Peer and admin connections closed for a malformed, oversized or truncated message")
                        .Register(*registry_)
                        .Add({{"node", c_.name}})),
      leads_(prometheus::BuildGauge()
                 .Name("troupe_node_leads")
                 .Help("Whether this node holds the pipeline's leader key (it places the stages again)")
                 .Register(*registry_)) {}

std::string cluster_node::standing() const {
  if (lease_id_ == 0) return "node " + c_.name + " has not registered with the cluster's store yet";
  if (!lease_.held()) return "node " + c_.name + " lost its lease in the cluster's store and is registering again";
  auto ago = since(lease_.last_renewal()).count();
  return "node " + c_.name + " could not renew its lease for " + std::to_string(ago) + " ms (store at " +
         store_.endpoint() + ")";
}

int64_t cluster_node::store_contact_ago_ms() const { return last_contact_ ? since(*last_contact_).count() : -1; }

int64_t cluster_node::store_steady_ms() const {
  if (!last_contact_ || (last_failure_ && *last_failure_ > *last_contact_)) return 0;
  auto from = last_failure_ ? *last_failure_ : started_;
  return std::chrono::duration_cast<std::chrono::milliseconds>(*last_contact_ - from).count();
}

void cluster_node::store_failed() {
  store_errors_.Increment();
  last_failure_ = clock::now();
}

// The node holds its lease again after it stopped what others may take over: every part here
// runs again as placed, and every data connection starts anew, so that senders send again
// what the stopped instances had taken but not acknowledged.
void cluster_node::unfence() {
  fenced_ = false;
  applied_.clear();
  host_.reset_links();
  poll();
}

std::string cluster_node::refuse(uint32_t protocol, kj::StringPtr token, const std::string& who, bool admin) {
  std::string why;
  const bool own_admin_token = admin && !c_.admin_token.empty();
  if (protocol != wire::CLUSTER_PROTOCOL)
    why =
        "protocol version " + std::to_string(protocol) + ", this node speaks " + std::to_string(wire::CLUSTER_PROTOCOL);
  else if (token.size() == 0)
    why = own_admin_token ? "no admin token given" : "no cluster token given";
  else if (!same_secret(token.cStr(), own_admin_token ? c_.admin_token : c_.token))
    why = own_admin_token ? "wrong admin token" : "wrong cluster token";
  if (!why.empty()) {
    refused_.Increment();
    spdlog::error("[node={}] refused {}: {}", c_.name, who, why);
  }
  return why;
}

void cluster_node::bad_message(const std::string& from, const std::string& why) {
  bad_messages_.Increment();
  spdlog::error("[node={}] closed the connection from {}: {}", c_.name, from, why);
}

void cluster_node::log_once(const std::string& key, const std::string& text, bool error) {
  auto& last = said_[key];
  if (last == text) return;
  last = text;
  if (error)
    spdlog::error("[node={}] {}", c_.name, text);
  else
    spdlog::warn("[node={}] {}", c_.name, text);
}

pipeline_placement cluster_node::placement_of(const placement_record& r, int64_t epoch) const {
  pipeline_placement pl;
  for (auto& s : r.stages) {
    pl.nodes_of[s.stage] = s.nodes;
    if (s.moves > 0) pl.moves[s.stage] = s.moves;
  }
  auto nodes = r.nodes();
  nodes.insert(c_.name);
  for (auto& n : nodes)
    if (n == c_.name)
      pl.data_address[n] = c_.advertise_data;
    else if (auto it = view_.nodes.find(n); it != view_.nodes.end())
      pl.data_address[n] = it->second.data;
  pl.run = r.run;
  pl.epoch = static_cast<uint64_t>(epoch);
  for (auto& [n, e] : r.fences) pl.fences[n] = static_cast<uint64_t>(e);
  return pl;
}

// -- the loop --------------------------------------------------------------------------------

void cluster_node::tick() {
  auto now = clock::now();
  if ((lease_id_ == 0 || !lease_.held()) && !registering_ &&
      (!retry_registration_at_ || now >= *retry_registration_at_))
    start_registration();
  if (lease_id_ != 0 && lease_.held() && !keep_alive_pending_ &&
      (!last_keep_alive_ || now - *last_keep_alive_ >= lease_.keep_alive_every())) {
    last_keep_alive_ = now;
    keep_alive();
  }
  check_standing();
  auto poll_every = std::chrono::milliseconds(std::clamp<uint32_t>(c_.lease_ms / 6, 50, 1000));
  if (!polling_ && (!last_poll_ || now - *last_poll_ >= poll_every)) poll();
}

void cluster_node::start_registration() {
  registering_ = true;
  auto ttl_s = static_cast<int64_t>((c_.lease_ms + 999) / 1000);
  auto sent = clock::now();
  node_info self{c_.name, c_.advertise, c_.admin_advertise, c_.metrics, c_.advertise_data};
  tasks_.add(store_.grant(ttl_s)
                 .then([this, self, sent](etcd_lease l) {
                   etcd_txn t;
                   t.compares = {absent(keys_.member(c_.name))};
                   t.success = {put(keys_.node(c_.name), to_json(self)),
                                put(keys_.member(c_.name), std::to_string(l.id), l.id)};
                   return store_.txn(t).then([this, l, sent](etcd_txn_result r) {
                     if (!r.succeeded) {
                       tasks_.add(store_.revoke(l.id).catch_([](kj::Exception&&) {}));
                       log_once("register", "the name '" + c_.name +
                                                "' is held by a member whose lease has not ended (this node before it "
                                                "restarted, or another node of that name): waiting for it to end");
                       retry_registration_at_ = clock::now() + std::chrono::milliseconds(500);
                       return;
                     }
                     bool again = lease_id_ != 0;
                     lease_id_ = l.id;
                     lease_.renewed(sent, l.ttl_s);
                     last_contact_ = clock::now();
                     lease_held_.Set(1);
                     said_.erase("register");
                     spdlog::info("[node={}] {} the cluster '{}' (lease of {} s, store at {})", c_.name,
                                  again ? "registered again with" : "registered with", c_.cluster, l.ttl_s,
                                  store_.endpoint());
                     if (fenced_)
                       unfence();  // every part here runs again as placed now
                     else
                       poll();
                   });
                 })
                 .catch_([this](kj::Exception&& e) {
                   store_failed();
                   log_once("register", "cannot register with the cluster's store: " + reason(e), true);
                   retry_registration_at_ = clock::now() + std::chrono::milliseconds(500);
                 })
                 .then([this]() { registering_ = false; }));
}

void cluster_node::keep_alive() {
  keep_alive_pending_ = true;
  auto sent = clock::now();
  auto lease = lease_id_;
  tasks_.add(store_.keep_alive(lease)
                 .then(
                     [this, sent, lease](int64_t ttl) {
                       last_contact_ = clock::now();
                       if (lease != lease_id_) return;  // an older lease's answer
                       if (ttl <= 0) {
                         lease_.lost();
                         lease_held_.Set(0);
                         spdlog::error(
                             "[node={}] the cluster's store ended this node's lease: the other nodes took "
                             "it for down",
                             c_.name);
                         if (!fenced_) fence_self("it lost its lease");
                         return;
                       }
                       renewals_.Increment();
                       said_.erase("keepalive");
                       lease_.renewed(sent, ttl);
                       if (fenced_) {
                         // Renewed in time after all: the part here runs again as placed.
                         spdlog::warn("[node={}] renewed its lease again: running its part as placed", c_.name);
                         unfence();
                       }
                       if (store_down_) {
                         store_down_ = false;
                         spdlog::info("[node={}] the cluster's store answers again", c_.name);
                       }
                     },
                     [this](kj::Exception&& e) {
                       renewal_failures_.Increment();
                       last_failure_ = clock::now();
                       log_once("keepalive", "cannot renew this node's lease: " + reason(e));
                     })
                 .then([this]() { keep_alive_pending_ = false; }));
}

// Whether the node may go on acting on its lease; if not, whether it must stop what others
// may take over (it is cut off from the store), or the store is down for every member (then
// nobody can move anything, and it keeps running).
void cluster_node::check_standing() {
  if (lease_id_ == 0 || fenced_ || probing_) return;
  auto now = clock::now();
  if (!lease_.must_fence(now) || (next_probe_at_ && now < *next_probe_at_)) return;
  next_probe_at_ = now + std::max<std::chrono::milliseconds>(lease_.keep_alive_every(), std::chrono::milliseconds(50));
  if (!lease_.held()) {
    fence_self("it lost its lease");
    return;
  }
  std::vector<std::pair<std::string, std::string>> peers;  // name, peer address
  for (auto& [name, lease] : view_.members)
    if (name != c_.name)
      if (auto it = view_.nodes.find(name); it != view_.nodes.end()) peers.emplace_back(name, it->second.peer);
  auto renewed_ago = since(lease_.last_renewal()).count();
  if (peers.empty()) {
    log_once("standing", "cannot renew its lease (last renewed " + std::to_string(renewed_ago) +
                             " ms ago), and no other member is up to take its stages: it keeps running them");
    return;
  }
  probing_ = true;
  auto mine = store_contact_ago_ms();
  auto slack = lease_.keep_alive_every().count();
  // A peer's word: who it is, how long ago it heard from the store, how long the store has
  // answered it.
  using contact = std::tuple<std::string, int64_t, int64_t>;
  auto ask = [this](const std::string& name, const std::string& address, int64_t timeout_ms) {
    return call_node<wire::Peer>(io_.getNetwork(), tls_, io_.getTimer(), name, address, timeout_ms * kj::MILLISECONDS,
                                 [this](wire::Peer::Client& peer) {
                                   auto req = peer.storeContactRequest();
                                   req.setProtocol(wire::CLUSTER_PROTOCOL);
                                   req.setToken(c_.token);
                                   req.setFrom(c_.name);
                                   return req.send().then([](capnp::Response<wire::Peer::StoreContactResults>&& r) {
                                     return contact{r.getNode().cStr(), r.getAgoMs(), r.getSteadyMs()};
                                   });
                                 });
  };
  // A peer slow to answer (a loaded machine) is not yet a peer cut off: it is asked once more,
  // for as long as leaves this node a keep-alive's time to stop its stages before its lease
  // can end.
  auto retry_until = lease_.expires_by() - lease_.keep_alive_every();
  auto answers = kj::heapArrayBuilder<kj::Promise<std::string>>(peers.size());
  for (auto& [name, address] : peers) {
    answers.add(
        ask(name, address, std::max<int64_t>(slack, 100))
            .catch_([ask, name = name, address = address, retry_until](kj::Exception&& e) -> kj::Promise<contact> {
              auto left = std::chrono::duration_cast<std::chrono::milliseconds>(retry_until - clock::now());
              if (left.count() < 50 || reason(e).find("did not answer") == std::string::npos) return kj::mv(e);
              return ask(name, address, left.count());
            })
            .then(
                [mine, slack](contact r) -> std::string {
                  auto& [node, ago, steady] = r;
                  // It heard from the store since this node did, and the store has answered
                  // it for a while (long enough for this node's own keep-alives to get
                  // through, were it not cut off): the store is up and this node is not
                  // reaching it. A store just back after an outage answers everyone at
                  // once; its members renew within a keep-alive or two.
                  if (ago >= 0 && (mine < 0 || ago + slack < mine) && steady >= 2 * slack)
                    return "node " + node + " heard from the store " + std::to_string(ago) + " ms ago";
                  return {};
                },
                [name = name](kj::Exception&& e) -> std::string {
                  return "node " + name + " did not answer (" + reason(e) + ")";
                }));
  }
  tasks_.add(kj::joinPromises(answers.finish()).then([this, renewed_ago](kj::Array<std::string> why) {
    probing_ = false;
    std::string cut_off;
    for (auto& w : why)
      if (!w.empty()) cut_off += (cut_off.empty() ? "" : "; ") + w;
    if (cut_off.empty()) {
      if (!store_down_)
        spdlog::warn(
            "[node={}] the cluster's store answers no member (this node last renewed its lease {} ms ago): "
            "every node keeps running its part, and no placement changes until the store is back",
            c_.name, renewed_ago);
      store_down_ = true;
      return;
    }
    fence_self("it cannot renew its lease (last renewed " + std::to_string(renewed_ago) + " ms ago) while " + cut_off);
  }));
}

void cluster_node::fence_self(const std::string& why) {
  fenced_ = true;
  self_fences_.Increment();
  std::string stopped;
  for (auto& [name, latest] : view_.pipelines) {
    // The placement this node's part runs as: a record read since (while it could not keep
    // its lease) may no longer place here a stage that still runs here.
    auto d = deployed_.find(name);
    auto& p = d != deployed_.end() && d->second.record.run == latest.record.run ? d->second : latest;
    auto& r = p.record;
    if (latest.record.state == pipeline_state::finished || !r.runs_on(c_.name) || host_.running(name) != r.run)
      continue;
    auto fenced = self_fenced(r, c_.name);
    bool changes = false;
    for (size_t i = 0; i < r.stages.size(); ++i)
      if (fenced.stages[i].nodes != r.stages[i].nodes) {
        changes = true;
        stopped += (stopped.empty() ? "" : ", ") + name + "/" + r.stages[i].stage;
      }
    if (!changes) continue;
    applied_[name] = 0;  // run as placed again once the node holds its lease
    auto placement = placement_of(fenced, p.epoch);
    tasks_.add(jobs_
                   .run([&host = host_, text = r.text, source = r.source, placement]() {
                     return host.deploy(text, source, &placement);
                   })
                   .then([this, name = name](expected<std::string> r) {
                     if (!r) spdlog::error("[node={}] pipeline '{}': {}", c_.name, name, describe(r.error()));
                   }));
  }
  spdlog::warn(
      "[node={}] {}: this node makes no placement change, and stops the stages other nodes may take over "
      "({}); stages only it may run go on",
      c_.name, why, stopped.empty() ? "none runs here" : stopped);
}

// -- reading the store -----------------------------------------------------------------------

void cluster_node::poll() {
  if (polling_) {
    again_ = true;
    return;
  }
  tasks_.add(read_store());
}

kj::Promise<void> cluster_node::read_now() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  waiting_reads_.push_back(kj::mv(paf.fulfiller));
  poll();
  return kj::mv(paf.promise);
}

void cluster_node::poke_members() {
  for (auto& [name, lease] : view_.members) {
    auto it = view_.nodes.find(name);
    if (name == c_.name || it == view_.nodes.end()) continue;
    tasks_.add(call_node<wire::Peer>(io_.getNetwork(), tls_, io_.getTimer(), name, it->second.peer, 2 * kj::SECONDS,
                                     [this](wire::Peer::Client& peer) {
                                       auto req = peer.pokeRequest();
                                       req.setProtocol(wire::CLUSTER_PROTOCOL);
                                       req.setToken(c_.token);
                                       return req.send().ignoreResult();
                                     })
                   .catch_([](kj::Exception&&) {}));  // it reads the store at its next poll anyway
  }
}

kj::Promise<void> cluster_node::read_store() {
  polling_ = true;
  auto waiters = std::make_shared<std::vector<kj::Own<kj::PromiseFulfiller<void>>>>(kj::mv(waiting_reads_));
  waiting_reads_.clear();
  return store_.range(keys_.root)
      .then(
          [this](etcd_range r) {
            last_contact_ = clock::now();
            said_.erase("poll");
            std::vector<std::string> problems;
            auto v = read_view(keys_, r, problems);
            for (auto& p : problems) log_once("record " + p.substr(0, p.find(':')), p, true);
            adopt_view(std::move(v));
          },
          [this](kj::Exception&& e) {
            store_failed();
            log_once("poll", "cannot read the cluster's store: " + reason(e));
          })
      .then([this, waiters]() {
        polling_ = false;
        last_poll_ = clock::now();
        for (auto& f : *waiters) f->fulfill();
        if (again_) {
          again_ = false;
          poll();
        }
      });
}

void cluster_node::adopt_view(cluster_view v) {
  for (auto& [name, info] : v.nodes) {
    if (name == c_.name) continue;
    bool up = v.up(name);
    peer_up_.Add({{"node", c_.name}, {"peer", name}}).Set(up ? 1 : 0);
    if (!have_view_) continue;
    bool was = view_.up(name);
    if (up && !was) spdlog::info("[node={}] node {} is up", c_.name, name);
    if (!up && was) spdlog::error("[node={}] node {} is down: its lease ended", c_.name, name);
    if (up != was) {
      event e;
      e.kind = event_kind::node;
      e.node = c_.name;
      e.state = up ? "up" : "down";
      e.detail = up ? "member " + name + " is up" : "member " + name + " is down: its lease ended";
      host_.events().add(std::move(e));
    }
  }
  view_ = std::move(v);
  have_view_ = true;
  if (!in_good_standing()) return;
  report_finished_parts();
  for (auto& [name, p] : view_.pipelines) {
    apply(name, p);
    lead(name, p);
  }
}

}  // namespace troupe::cluster
