#include "node_config.hpp"

#include "metrics_endpoint.hpp"

#include <troupe/link_tls.hpp>
#include <troupe/yaml_util.hpp>

#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

namespace troupe::cluster {

expected<std::string> read_pem(const std::string& config, const std::string& field, const std::string& file,
                               const std::string& kind, errc code) {
  namespace fs = std::filesystem;
  fs::path p(file);
  if (p.is_relative() && !config.empty()) p = fs::path(config).parent_path() / p;
  const std::string at = config.empty() ? field : config + ": field '" + field + "'";
  constexpr size_t max_bytes = size_t{1} << 20;
  std::error_code ec;
  std::ifstream in;
  if (fs::is_regular_file(p, ec)) in.open(p, std::ios::binary);
  std::string text(max_bytes + 1, '\0');
  if (in) in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (!in.is_open() || in.bad() || in.gcount() > static_cast<std::streamsize>(max_bytes))
    return make_error(code, at + ": cannot read '" + p.string() + "'" +
                                (in.is_open() && !in.bad() ? " (larger than 1 MiB)" : " (expected a file)"));
  text.resize(static_cast<size_t>(in.gcount()));
  // "PRIVATE KEY" also matches "EC PRIVATE KEY" and "RSA PRIVATE KEY".
  if (text.find(kind + "-----") == std::string::npos || text.find("-----BEGIN ") == std::string::npos)
    return make_error(code, at + ": expected a PEM file with a " + kind + ", got '" + p.string() + "'");
  return text;
}

expected<node_config> load_node_config(const std::string& path) {
  constexpr auto code = errc::invalid_node_config;
  auto doc = yaml::load_file(path, code);
  if (!doc) return doc.error();
  auto& root = *doc;
  if (!root.IsMap()) return make_error(code, path + ": expected a map of node settings");
  if (auto e = yaml::check_keys(
          path, root, "node",
          {"name", "cluster", "listen", "advertise", "data", "admin", "metrics", "etcd", "plugin_paths", "token",
           "admin_token", "lease_ms", "insecure_test_token", "tls", "capacity"},
          code))
    return e;
  node_config c;
  c.path = path;
  auto text = [&](const char* field, std::string& out, bool required) -> caf::error {
    if (!root[field]) {
      if (required) return make_error(code, path + ": field '" + field + "' is missing");
      return {};
    }
    auto v = yaml::scalar<std::string>(path, root[field], field, "a string", code);
    if (!v) return v.error();
    out = *v;
    return {};
  };
  if (const char* t = std::getenv("TROUPE_TOKEN"); t != nullptr && !root["token"]) c.token = t;
  if (const char* t = std::getenv("TROUPE_ADMIN_TOKEN"); t != nullptr && !root["admin_token"]) c.admin_token = t;
  for (auto [field, out, required] :
       {std::tuple{"name", &c.name, false}, std::tuple{"cluster", &c.cluster, false},
        std::tuple{"listen", &c.listen, true}, std::tuple{"advertise", &c.advertise, false},
        std::tuple{"data", &c.data, false}, std::tuple{"admin", &c.admin, true},
        std::tuple{"metrics", &c.metrics, false}, std::tuple{"token", &c.token, c.token.empty()},
        std::tuple{"admin_token", &c.admin_token, false}})
    if (auto e = text(field, *out, required)) return e;
  if (!c.metrics.empty()) c.metrics = metrics_bind_address(c.metrics);  // a port alone: loopback only
  // A node without a name (as in a service that compose scales) is named after its host.
  char host_name[256] = {};
  ::gethostname(host_name, sizeof host_name - 1);
  if (c.name.empty()) c.name = host_name;
  for (auto [field, value] : {std::pair{"name", &c.name}, std::pair{"cluster", &c.cluster}})
    if (value->empty() || value->find_first_of("/ \t\n") != std::string::npos)
      return make_error(code,
                        path + ": field '" + field + "': expected a name without '/' or spaces, got '" + *value + "'");
  if (c.advertise.empty()) {
    // Listening on every interface: peers reach it by its host name.
    auto colon = c.listen.rfind(':');
    auto host = c.listen.substr(0, colon == std::string::npos ? 0 : colon);
    c.advertise = host == "0.0.0.0" || host == "::" || host == "[::]"
                      ? std::string(host_name) + c.listen.substr(colon == std::string::npos ? c.listen.size() : colon)
                      : c.listen;
  }
  // Frames travel on their own port: by default the one after the peer port.
  auto split = [&](const std::string& field, const std::string& address, std::string& host,
                   uint32_t& port) -> caf::error {
    auto colon = address.rfind(':');
    unsigned n = 0;
    bool ok = colon != std::string::npos && colon + 1 < address.size();
    if (ok) {
      auto [end, ec] = std::from_chars(address.data() + colon + 1, address.data() + address.size(), n);
      ok = ec == std::errc{} && end == address.data() + address.size() && n <= 65535;
    }
    if (!ok) return make_error(code, path + ": field '" + field + "': expected host:port, got '" + address + "'");
    host = address.substr(0, colon);
    port = static_cast<uint32_t>(n);
    return {};
  };
  std::string host, advertise_host;
  uint32_t port = 0, advertise_port = 0, data_port = 0;
  if (auto e = split("listen", c.listen, host, port)) return e;
  if (auto e = split("advertise", c.advertise, advertise_host, advertise_port)) return e;
  if (c.data.empty()) {
    if (port == 0 || port == 65535)
      return make_error(code, path + ": field 'data': needed when 'listen' has port " + std::to_string(port));
    c.data = host + ":" + std::to_string(port + 1);
  }
  if (auto e = split("data", c.data, host, data_port)) return e;
  c.advertise_data = advertise_host + ":" + std::to_string(data_port);
  uint32_t admin_port = 0;
  if (auto e = split("admin", c.admin, host, admin_port)) return e;
  c.admin_advertise = advertise_host + ":" + std::to_string(admin_port);
  for (auto [field, out] : {std::pair{"etcd", &c.etcd}, std::pair{"plugin_paths", &c.plugin_paths}}) {
    auto n = root[field];
    if (!n) continue;
    if (!n.IsSequence())
      return make_error(code, yaml::where(path, n) + ": field '" + field + "': expected a list of strings");
    for (auto item : n) {
      auto v = yaml::scalar<std::string>(path, item, field, "a string", code);
      if (!v) return v.error();
      out->push_back(*v);
    }
  }
  if (c.etcd.empty())
    if (const char* e = std::getenv("TROUPE_ETCD")) {
      std::stringstream list(e);
      for (std::string item; std::getline(list, item, ',');)
        if (!item.empty()) c.etcd.push_back(item);
    }
  if (c.etcd.empty())
    return make_error(code, path +
                                ": field 'etcd': expected the etcd endpoints (host:port, ...), here or in "
                                "$TROUPE_ETCD: a node keeps the cluster's state in etcd");
  for (auto& e : c.etcd) {
    std::string h;
    uint32_t p = 0;
    if (auto err = split("etcd", e, h, p)) return err;
  }
  if (root["lease_ms"]) {
    auto v = yaml::scalar<uint32_t>(path, root["lease_ms"], "lease_ms", "a number of milliseconds", code);
    if (!v) return v.error();
    if (*v < 1000 || *v > 600000)
      return make_error(code, yaml::where(path, root["lease_ms"]) +
                                  ": field 'lease_ms': expected 1000 to 600000 milliseconds (the store counts "
                                  "leases in whole seconds), got " +
                                  std::to_string(*v));
    c.lease_ms = *v;
  }
  if (auto n = root["capacity"]) {
    // What the node admits work up to; what is not given is the machine's.
    if (!n.IsMap())
      return make_error(code,
                        yaml::where(path, n) + ": field 'capacity': expected a map of memory_mb, cpu_cores and gpus");
    if (auto e = yaml::check_keys(path, n, "capacity", {"memory_mb", "cpu_cores", "gpus"}, code)) return e;
    if (n["memory_mb"]) {
      auto v = yaml::scalar<uint64_t>(path, n["memory_mb"], "capacity.memory_mb", "a number of MiB", code);
      if (!v) return v.error();
      if (*v == 0)
        return make_error(code,
                          yaml::where(path, n["memory_mb"]) + ": field 'capacity.memory_mb': expected at least 1 MiB");
      c.capacity.total.memory_mb = *v;
    }
    if (n["cpu_cores"]) {
      auto v = yaml::scalar<double>(path, n["cpu_cores"], "capacity.cpu_cores", "a number of cores", code);
      if (!v) return v.error();
      if (!(*v > 0) || *v > 1e6)
        return make_error(code, yaml::where(path, n["cpu_cores"]) +
                                    ": field 'capacity.cpu_cores': expected a positive number of cores");
      c.capacity.total.cpu_cores = *v;
    }
    if (n["gpus"]) {
      auto v = yaml::scalar<uint32_t>(path, n["gpus"], "capacity.gpus", "a number of GPUs (0: none)", code);
      if (!v) return v.error();
      c.capacity.total.gpus = *v;
    }
    c.capacity.source = "capacity in " + path;
  }
  if (c.token.empty())
    return make_error(code, path + ": field 'token': expected a non-empty cluster token (or $TROUPE_TOKEN)");
  bool insecure = false;
  if (root["insecure_test_token"]) {
    auto v = yaml::scalar<bool>(path, root["insecure_test_token"], "insecure_test_token", "true or false", code);
    if (!v) return v.error();
    insecure = *v;
  }
  if (auto n = root["tls"]) {
    if (!n.IsMap()) return make_error(code, yaml::where(path, n) + ": field 'tls': expected a map of cert, key and ca");
    if (auto e = yaml::check_keys(path, n, "tls", {"cert", "key", "ca"}, code)) return e;
    tls_files t;
    for (auto [field, out, pem, kind] :
         {std::tuple{"cert", &t.cert, &t.cert_pem, "CERTIFICATE"}, std::tuple{"key", &t.key, &t.key_pem, "PRIVATE KEY"},
          std::tuple{"ca", &t.ca, &t.ca_pem, "CERTIFICATE"}}) {
      std::string name = std::string("tls.") + field;
      if (!n[field]) return make_error(code, yaml::where(path, n) + ": field '" + name + "' is missing");
      auto v = yaml::scalar<std::string>(path, n[field], name, "a file name", code);
      if (!v) return v.error();
      *out = *v;
      auto text = read_pem(path, name, *v, kind, code);
      if (!text) return text.error();
      *pem = std::move(*text);
    }
    // What OpenSSL makes of them, as the node will at start: a key that is not the
    // certificate's, say.
    std::string why;
    if (!link_io::tls_context::make({t.ca_pem, t.cert_pem, t.key_pem}, why)) {
      auto colon = why.find(": ");
      auto field = colon == std::string::npos ? std::string("tls") : "tls." + why.substr(0, colon);
      return make_error(code,
                        path + ": field '" + field + "': " + why.substr(colon == std::string::npos ? 0 : colon + 2));
    }
    c.tls = std::move(t);
  }
  for (auto [field, value] : {std::pair{"token", &c.token}, std::pair{"admin_token", &c.admin_token}})
    if (!insecure && *value == "change-me")
      return make_error(code, path + ": field '" + field +
                                  "': 'change-me' is the documentation's example; set a secret of "
                                  "your own (or insecure_test_token: true for a test on one machine)");
  if (!c.admin_token.empty() && c.admin_token == c.token)
    return make_error(code, path + ": field 'admin_token': expected a secret other than 'token' (or no admin_token)");
  return c;
}

}  // namespace troupe::cluster
