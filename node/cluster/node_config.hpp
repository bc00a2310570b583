// node.yaml: the settings of one cluster member, read and checked.
#pragma once

#include <troupe/admission.hpp>

#include <troupe/error.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace troupe::cluster {

/// TLS for a node's peer and admin ports: its certificate (whose subject alternative names
/// include the node's name: peers check it), its key, and the CA that signed every member's
/// certificate. Paths as given (relative ones from the config's directory) and the PEM read.
struct tls_files {
  std::string cert, key, ca;
  std::string cert_pem, key_pem, ca_pem;
};

/// node.yaml: one member of a cluster.
struct node_config {
  std::string path;
  std::string name;                // default: the machine's host name
  std::string cluster = "troupe";  // the store's keys are kept under /troupe/<cluster>/
  std::string listen;              // host:port to listen on for peers
  std::string advertise;           // host:port peers reach it at; default: listen (its host name if listen is 0.0.0.0)
  std::string data;                // host:port to listen on for frames; default: listen's port + 1
  std::string advertise_data;      // where peers send frames: advertise's host, data's port
  std::string admin;               // host:port for the CLI
  std::string admin_advertise;     // where other nodes reach its admin interface: advertise's host
  std::string metrics;             // host:port for /metrics; empty: none
  std::vector<std::string> etcd;   // host:port of each etcd member (or $TROUPE_ETCD)
  std::vector<std::string> plugin_paths;
  std::string token;             // or $TROUPE_TOKEN: what peers present (and admin callers, without admin_token)
  std::string admin_token;       // or $TROUPE_ADMIN_TOKEN: what admin callers present; empty: the token
  uint32_t lease_ms = 3000;      // membership lease; the store counts it in whole seconds
  std::optional<tls_files> tls;  // none: peer and admin traffic is not encrypted
  node_capacity capacity = machine_capacity();  // what the node admits work up to
};

/// Reads a PEM file for `field` of `config` (a path relative to the config's directory; no
/// config: `field` is a command-line option); `kind`: what the file must hold
/// ("CERTIFICATE", "PRIVATE KEY"). Errors name file and field.
expected<std::string> read_pem(const std::string& config, const std::string& field, const std::string& file,
                               const std::string& kind, errc code);

/// Reads and checks node.yaml; errors name the file, line and field. $TROUPE_ETCD
/// (HOST:PORT,...) gives the etcd endpoints when the file does not, $TROUPE_TOKEN the token.
expected<node_config> load_node_config(const std::string& path);

}  // namespace troupe::cluster
