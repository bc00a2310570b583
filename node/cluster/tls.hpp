// TLS on the peer and admin ports (kj-tls, OpenSSL underneath): a node's context serves its
// certificate and checks its peers' against the cluster's CA; the CLI's only checks.
#pragma once

#include <kj/compat/tls.h>
#include <kj/timer.h>

#include <memory>
#include <string>

namespace troupe::cluster {

/// A context that trusts only ca_pem; with a certificate and key, it also presents them (as a
/// server, and as a client when asked), and with verify_clients a client must present one from
/// that CA. Throws kj::Exception if OpenSSL refuses one of them.
inline std::unique_ptr<kj::TlsContext> make_tls_context(const std::string& ca_pem, const std::string& cert_pem = {},
                                                        const std::string& key_pem = {}, bool verify_clients = false) {
  kj::TlsCertificate ca(ca_pem);
  kj::TlsContext::Options o;
  o.useSystemTrustStore = false;  // the cluster's own CA, and nothing else
  o.trustedCertificates = kj::arrayPtr(&ca, 1);
  o.minVersion = kj::TlsVersion::TLS_1_2;
  o.verifyClients = verify_clients;
  std::unique_ptr<kj::TlsKeypair> keypair;
  if (!cert_pem.empty()) {
    keypair =
        std::make_unique<kj::TlsKeypair>(kj::TlsKeypair{kj::TlsPrivateKey(key_pem), kj::TlsCertificate(cert_pem)});
    o.defaultKeypair = *keypair;
  }
  return std::make_unique<kj::TlsContext>(kj::mv(o));  // OpenSSL holds what it needs from here
}

/// A failed TLS handshake, said for a log line: a plain (or HTTP) client is named as such.
inline std::string tls_failure(const kj::Exception& e) {
  std::string d = e.getDescription().cStr();
  if (d.find("wrong version number") != std::string::npos)
    return "not a TLS handshake (a plain connection? this port takes TLS only)";
  if (d.find("http request") != std::string::npos) return "an HTTP request (this port takes TLS only)";
  if (d.find("peer did not return a certificate") != std::string::npos)
    return "TLS handshake failed: the client presented no certificate (this port takes only the cluster's nodes, "
           "with certificates from its CA)";
  if (auto at = d.find("message = "); at != std::string::npos) d = d.substr(at + 10);
  return "TLS handshake failed: " + d;
}

}  // namespace troupe::cluster
