#include "etcd.hpp"

#include <kj/encoding.h>
#include <nlohmann/json.hpp>

namespace troupe::cluster {

namespace {

using json = nlohmann::json;

std::string b64(const std::string& s) {
  auto bytes = kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
  return kj::encodeBase64(bytes).cStr();
}

std::string unb64(const std::string& s) {
  auto r = kj::decodeBase64(kj::arrayPtr(s.data(), s.size()));
  return std::string(reinterpret_cast<const char*>(r.begin()), r.size());
}

// The gateway writes 64-bit integers as strings and leaves out zero values.
int64_t int_of(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return 0;
  if (it->is_string()) return std::stoll(it->get<std::string>());
  return it->get<int64_t>();
}

// The first key after every key that starts with prefix.
std::string prefix_end(std::string prefix) {
  while (!prefix.empty()) {
    auto& c = prefix.back();
    if (static_cast<unsigned char>(c) < 0xff) {
      ++c;
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // every key
}

kj::Exception failed(kj::Exception::Type type, std::string why) {
  return kj::Exception(type, __FILE__, __LINE__, kj::heapString(why));
}

// etcd's answer as JSON, or what is wrong with it.
json parse(const std::string& text, const std::string& what) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw failed(kj::Exception::Type::DISCONNECTED, "the answer to " + what + " is not etcd's JSON");
  return j;
}

}  // namespace

etcd_client::etcd_client(kj::AsyncIoProvider& io, std::vector<std::string> endpoints, std::chrono::milliseconds timeout)
    : timer_(io.getTimer()),
      endpoints_(std::move(endpoints)),
      timeout_(timeout),
      headers_(std::make_unique<kj::HttpHeaderTable>()),
      http_(kj::newHttpClient(io.getTimer(), *headers_, io.getNetwork(), nullptr)) {
  if (endpoints_.empty()) endpoints_.push_back("127.0.0.1:2379");
}

etcd_client::~etcd_client() = default;

kj::Promise<std::string> etcd_client::post(std::string path, std::string body) {
  return attempt(std::move(path), std::move(body), endpoints_.size(), {});
}

kj::Promise<std::string> etcd_client::attempt(std::string path, std::string body, size_t tries, std::string failures) {
  auto endpoint = endpoints_[current_];
  auto url = kj::str("http://", endpoint.c_str(), path.c_str());
  kj::HttpHeaders headers(*headers_);
  headers.set(kj::HttpHeaderId::CONTENT_TYPE, "application/json");
  auto req = http_->request(kj::HttpMethod::POST, url, headers, body.size());
  auto bytes = kj::heapString(body.data(), body.size());  // lives until written
  auto sent = req.body->write(bytes.begin(), bytes.size()).attach(kj::mv(bytes), kj::mv(req.body));
  auto answered = sent.then([response = kj::mv(req.response)]() mutable { return kj::mv(response); })
                      .then([](kj::HttpClient::Response&& r) {
                        auto status = r.statusCode;
                        return r.body->readAllText().attach(kj::mv(r.body)).then([status](kj::String text) {
                          return std::make_pair(status, std::string(text.cStr()));
                        });
                      });
  return timer_.timeoutAfter(timeout_.count() * kj::MILLISECONDS, kj::mv(answered))
      .then(
          [path](std::pair<unsigned, std::string>&& r) -> kj::Promise<std::string> {
            if (r.first == 200) return kj::mv(r.second);
            // A refusal by etcd itself (a failed precondition, a bad request): final.
            auto j = json::parse(r.second, nullptr, false);
            std::string why = !j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_string()
                                  ? j["error"].get<std::string>()
                                  : "HTTP status " + std::to_string(r.first);
            auto type = r.first >= 500 ? kj::Exception::Type::DISCONNECTED : kj::Exception::Type::FAILED;
            return failed(type, "etcd refused " + path + ": " + why);
          },
          [](kj::Exception&& e) -> kj::Promise<std::string> {
            auto d = std::string(e.getDescription().cStr());
            return failed(kj::Exception::Type::DISCONNECTED, d);
          })
      .catch_([this, path, body, tries, failures, endpoint](kj::Exception&& e) mutable -> kj::Promise<std::string> {
        if (e.getType() != kj::Exception::Type::DISCONNECTED) return kj::mv(e);
        failures += (failures.empty() ? "" : "; ") + endpoint + ": " + e.getDescription().cStr();
        // This endpoint does not answer: the next one is tried, for this call and the next.
        if (endpoints_[current_] == endpoint) current_ = (current_ + 1) % endpoints_.size();
        if (tries <= 1) return failed(kj::Exception::Type::DISCONNECTED, "etcd not reached (" + failures + ")");
        return attempt(std::move(path), std::move(body), tries - 1, std::move(failures));
      });
}

kj::Promise<etcd_range> etcd_client::range(std::string prefix) {
  json req{{"key", b64(prefix)}, {"range_end", b64(prefix_end(prefix))}};
  return post("/v3/kv/range", req.dump()).then([](std::string text) {
    auto j = parse(text, "a range");
    etcd_range r;
    r.revision = int_of(j.value("header", json::object()), "revision");
    if (auto kvs = j.find("kvs"); kvs != j.end() && kvs->is_array())
      for (auto& kv : *kvs) {
        etcd_kv x;
        x.key = unb64(kv.value("key", ""));
        x.value = unb64(kv.value("value", ""));
        x.create_revision = int_of(kv, "create_revision");
        x.mod_revision = int_of(kv, "mod_revision");
        x.lease = int_of(kv, "lease");
        r.kvs.push_back(std::move(x));
      }
    return r;
  });
}

kj::Promise<etcd_txn_result> etcd_client::txn(const etcd_txn& t) {
  json compares = json::array();
  for (auto& c : t.compares) {
    json x{{"key", b64(c.key)}, {"result", "EQUAL"}};
    switch (c.target) {
      case etcd_txn::compare::what::mod_revision:
        x["target"] = "MOD";
        x["mod_revision"] = std::to_string(c.revision);
        break;
      case etcd_txn::compare::what::create_revision:
        x["target"] = "CREATE";
        x["create_revision"] = std::to_string(c.revision);
        break;
      case etcd_txn::compare::what::value:
        x["target"] = "VALUE";
        x["value"] = b64(c.value);
        break;
    }
    compares.push_back(std::move(x));
  }
  auto ops = [](const std::vector<etcd_txn::op>& list) {
    json out = json::array();
    for (auto& o : list) {
      if (o.k == etcd_txn::op::kind::put) {
        json put{{"key", b64(o.key)}, {"value", b64(o.value)}};
        if (o.lease != 0) put["lease"] = std::to_string(o.lease);
        out.push_back({{"request_put", std::move(put)}});
      } else {
        out.push_back({{"request_delete_range", {{"key", b64(o.key)}}}});
      }
    }
    return out;
  };
  json req{{"compare", compares}, {"success", ops(t.success)}, {"failure", ops(t.failure)}};
  return post("/v3/kv/txn", req.dump()).then([](std::string text) {
    auto j = parse(text, "a transaction");
    etcd_txn_result r;
    r.succeeded = j.value("succeeded", false);
    r.revision = int_of(j.value("header", json::object()), "revision");
    return r;
  });
}

kj::Promise<etcd_lease> etcd_client::grant(int64_t ttl_s) {
  json req{{"TTL", std::to_string(ttl_s)}};
  return post("/v3/lease/grant", req.dump()).then([](std::string text) {
    auto j = parse(text, "a lease grant");
    if (j.contains("error") && j["error"].is_string() && !j["error"].get<std::string>().empty())
      throw failed(kj::Exception::Type::FAILED, "etcd refused a lease: " + j["error"].get<std::string>());
    return etcd_lease{int_of(j, "ID"), int_of(j, "TTL")};
  });
}

kj::Promise<int64_t> etcd_client::keep_alive(int64_t lease) {
  json req{{"ID", std::to_string(lease)}};
  return post("/v3/lease/keepalive", req.dump()).then([](std::string text) {
    // A stream of one answer: {"result": {..., "TTL": "3"}}; a lease that is gone has no TTL.
    auto line = text.substr(0, text.find('\n'));
    auto j = parse(line, "a lease keep-alive");
    if (!j.contains("result") || !j["result"].is_object())
      throw failed(kj::Exception::Type::DISCONNECTED, "the answer to a lease keep-alive has no result");
    return int_of(j["result"], "TTL");
  });
}

kj::Promise<void> etcd_client::revoke(int64_t lease) {
  json req{{"ID", std::to_string(lease)}};
  return post("/v3/lease/revoke", req.dump()).ignoreResult();
}

}  // namespace troupe::cluster
