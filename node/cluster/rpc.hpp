// Calls to another node's Peer or Admin interface (schema/node.capnp), each on a connection
// of its own that lives as long as the call.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/compat/tls.h>
#include <kj/timer.h>

#include <string>

namespace troupe::cluster {

/// An exception's description without the RPC system's prefix.
inline std::string reason(const kj::Exception& e) {
  std::string d = e.getDescription().cStr();
  const std::string prefix = "remote exception: ";
  return d.rfind(prefix, 0) == 0 ? d.substr(prefix.size()) : d;
}

inline kj::Exception failure(const std::string& why, kj::Exception::Type type = kj::Exception::Type::FAILED) {
  return kj::Exception(type, __FILE__, __LINE__, kj::heapString(why));
}

template <class P>
struct promise_value;
template <class T>
struct promise_value<kj::Promise<T>> {
  using type = T;
};

struct rpc_connection {
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient client;
  explicit rpc_connection(kj::Own<kj::AsyncIoStream> s) : stream(kj::mv(s)), client(*stream) {}
};

/// Connects to address and calls interface I there: send(cap) builds and sends the request
/// and returns the promise of what the caller makes of its answer. With tls, the connection
/// is TLS and the node's certificate must name it (node). Bounded by timeout; a call that does
/// not reach the node fails with "node NAME (ADDRESS) did not answer: ...", one it refused
/// with its reason.
template <class I, class Send>
auto call_node(kj::Network& net, kj::TlsContext* tls, kj::Timer& timer, const std::string& node,
               const std::string& address, kj::Duration timeout, Send send) {
  auto done = net.parseAddress(address)
                  .then([](kj::Own<kj::NetworkAddress> a) { return a->connect().attach(kj::mv(a)); })
                  .then([tls, node](kj::Own<kj::AsyncIoStream> s) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
                    if (tls == nullptr) return kj::mv(s);
                    return tls->wrapClient(kj::mv(s), node);
                  })
                  .then([send = kj::mv(send)](kj::Own<kj::AsyncIoStream> s) mutable {
                    auto c = kj::heap<rpc_connection>(kj::mv(s));
                    auto cap = c->client.bootstrap().template castAs<I>();
                    // The capability goes before the connection it came from.
                    return send(cap).attach(kj::mv(cap)).attach(kj::mv(c));
                  });
  using T = typename promise_value<decltype(done)>::type;
  return timer.timeoutAfter(timeout, kj::mv(done)).catch_([node, address](kj::Exception&& e) -> kj::Promise<T> {
    std::string d = e.getDescription().cStr();
    if (d.rfind("remote exception: ", 0) == 0) return failure(reason(e));  // it answered: no
    return failure("node " + node + " (" + address + ") did not answer: " + reason(e),
                   kj::Exception::Type::DISCONNECTED);
  });
}

}  // namespace troupe::cluster
