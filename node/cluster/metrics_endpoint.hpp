// The HTTP endpoint Prometheus scrapes (/metrics), shared by `troupe run --metrics` and
// `troupe node`. Several threads serve it and a client that stalls is cut off, so that a few
// slow or idle connections do not keep scrapes out; an address without a host binds to
// loopback only.
#pragma once

#include <prometheus/exposer.h>

#include <memory>
#include <string>
#include <vector>

namespace troupe::cluster {

/// "9100" -> "127.0.0.1:9100"; anything with a host stays as it is.
inline std::string metrics_bind_address(const std::string& address) {
  return address.find(':') == std::string::npos ? "127.0.0.1:" + address : address;
}

/// Listens on address (throws std::exception naming what failed, as prometheus-cpp does).
inline std::unique_ptr<prometheus::Exposer> serve_metrics(const std::string& address) {
  return std::make_unique<prometheus::Exposer>(std::vector<std::string>{
      "listening_ports", metrics_bind_address(address), "num_threads", "16", "request_timeout_ms", "2000"});
}

}  // namespace troupe::cluster
