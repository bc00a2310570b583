#include "node_config.hpp"

#include <yaml_util.hpp>

#include <charconv>
#include <tuple>

namespace troupe::cluster {

expected<node_config> load_node_config(const std::string& path) {
  constexpr auto code = errc::invalid_pipeline;
  auto doc = yaml::load_file(path, code);
  if (!doc) return doc.error();
  auto& root = *doc;
  if (!root.IsMap()) return make_error(code, path + ": expected a map of node settings");
  if (auto e = yaml::check_keys(path, root, "node",
                                {"name", "listen", "advertise", "data", "admin", "metrics", "seeds",
                                 "plugin_paths", "token", "heartbeat_ms", "down_after_ms"},
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
  for (auto [field, out, required] : {std::tuple{"name", &c.name, true}, std::tuple{"listen", &c.listen, true},
                                      std::tuple{"advertise", &c.advertise, false}, std::tuple{"data", &c.data, false},
                                      std::tuple{"admin", &c.admin, true},
                                      std::tuple{"metrics", &c.metrics, false}, std::tuple{"token", &c.token, true}})
    if (auto e = text(field, *out, required)) return e;
  if (c.advertise.empty()) c.advertise = c.listen;
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
    if (!ok)
      return make_error(code, path + ": field '" + field + "': expected host:port, got '" + address + "'");
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
  for (auto [field, out] : {std::pair{"seeds", &c.seeds}, std::pair{"plugin_paths", &c.plugin_paths}}) {
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
  for (auto [field, out] : {std::pair{"heartbeat_ms", &c.heartbeat_ms}, std::pair{"down_after_ms", &c.down_after_ms}}) {
    if (!root[field]) continue;
    auto v = yaml::scalar<uint32_t>(path, root[field], field, "a positive number of milliseconds", code);
    if (!v) return v.error();
    if (*v == 0)
      return make_error(code, yaml::where(path, root[field]) + ": field '" + field +
                                  "': expected a positive number of milliseconds");
    *out = *v;
  }
  if (c.down_after_ms <= c.heartbeat_ms)
    return make_error(code, path + ": field 'down_after_ms' (" + std::to_string(c.down_after_ms) +
                                ") must be longer than 'heartbeat_ms' (" + std::to_string(c.heartbeat_ms) + ")");
  if (c.token.empty()) return make_error(code, path + ": field 'token': expected a non-empty cluster token");
  return c;
}


}  // namespace troupe::cluster
