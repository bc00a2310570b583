// A client of etcd's v3 API through its HTTP/JSON gateway (kj-http on the caller's event
// loop, nlohmann-json for the bodies): ranges, transactions and leases, which is all the
// cluster needs of its store.
//
// Every call is asynchronous on the KJ event loop that made the client and never blocks it.
// A call goes to one endpoint at a time; one that fails (no connection, a timeout, an answer
// that is not etcd's) moves the client to the next endpoint, and the call is tried there, each
// endpoint at most once per call. A call that no endpoint answered rejects with a
// DISCONNECTED kj::Exception naming each endpoint and why; a call that etcd refused rejects
// with FAILED and etcd's message. Not thread-safe: use it on its loop only.
#pragma once

#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace troupe::cluster {

/// A key and its value as etcd keeps them.
struct etcd_kv {
  std::string key, value;
  int64_t create_revision = 0, mod_revision = 0, lease = 0;
};

/// All keys under a prefix, read at one revision of the store.
struct etcd_range {
  int64_t revision = 0;
  std::vector<etcd_kv> kvs;
};

/// A transaction: if every compare holds, the success operations run, else the failure ones.
struct etcd_txn {
  struct compare {
    enum class what { mod_revision, create_revision, value };
    std::string key;
    what target = what::mod_revision;
    int64_t revision = 0;  // mod_revision, create_revision (0: the key does not exist)
    std::string value;     // value
  };
  struct op {
    enum class kind { put, erase };
    kind k = kind::put;
    std::string key, value;
    int64_t lease = 0;  // put: the key goes when this lease ends (0: it stays)
  };
  std::vector<compare> compares;
  std::vector<op> success, failure;
};

/// The parts of a transaction, by what they do.
namespace txn {
inline etcd_txn::compare mod_is(const std::string& key, int64_t revision) {
  return {key, etcd_txn::compare::what::mod_revision, revision, {}};
}
inline etcd_txn::compare absent(const std::string& key) {
  return {key, etcd_txn::compare::what::create_revision, 0, {}};
}
inline etcd_txn::compare value_is(const std::string& key, const std::string& value) {
  return {key, etcd_txn::compare::what::value, 0, value};
}
inline etcd_txn::op put(const std::string& key, const std::string& value, int64_t lease = 0) {
  return {etcd_txn::op::kind::put, key, value, lease};
}
inline etcd_txn::op erase(const std::string& key) { return {etcd_txn::op::kind::erase, key, {}, 0}; }
}  // namespace txn

struct etcd_txn_result {
  bool succeeded = false;
  int64_t revision = 0;  // the store's revision after it (the revision of what it wrote)
};

struct etcd_lease {
  int64_t id = 0;
  int64_t ttl_s = 0;  // as etcd granted it (it may raise what was asked to its minimum)
};

class etcd_client {
 public:
  /// endpoints: host:port of each etcd member's client URL (http). timeout: per attempt.
  etcd_client(kj::AsyncIoProvider& io, std::vector<std::string> endpoints, std::chrono::milliseconds timeout);
  ~etcd_client();
  etcd_client(const etcd_client&) = delete;
  etcd_client& operator=(const etcd_client&) = delete;

  /// Every key that starts with prefix (linearizable: a member cut off from the majority does
  /// not answer).
  kj::Promise<etcd_range> range(std::string prefix);
  kj::Promise<etcd_txn_result> txn(const etcd_txn& t);
  kj::Promise<etcd_lease> grant(int64_t ttl_s);
  /// The lease's remaining TTL in seconds; 0 or less: the lease is gone (expired or revoked).
  kj::Promise<int64_t> keep_alive(int64_t lease);
  kj::Promise<void> revoke(int64_t lease);

  /// The endpoint calls go to now.
  const std::string& endpoint() const { return endpoints_[current_]; }

 private:
  struct state;
  kj::Promise<std::string> post(std::string path, std::string body);
  kj::Promise<std::string> attempt(std::string path, std::string body, size_t tries, std::string failures);

  kj::Timer& timer_;
  std::vector<std::string> endpoints_;
  std::chrono::milliseconds timeout_;
  size_t current_ = 0;
  std::unique_ptr<kj::HttpHeaderTable> headers_;
  kj::Own<kj::HttpClient> http_;
};

}  // namespace troupe::cluster
