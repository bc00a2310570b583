// The bytes of one data-link connection: straight on its socket, or through TLS (OpenSSL).
//
// With TLS both ends present a certificate from the cluster's CA (mutual TLS): a sender checks
// that the receiver's names the node it meant to reach, a receiver that the sender's names the
// node its hello says it is. The socket is then non-blocking and every call into the SSL object
// is made under the stream's mutex, since a connection's reader and writer are two threads;
// each waits for the socket with poll outside the lock.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

using SSL = struct ssl_st;
using SSL_CTX = struct ssl_ctx_st;

namespace troupe::link_io {

using deadline = std::optional<std::chrono::steady_clock::time_point>;

/// PEM text of the cluster's CA (one or more certificates), this node's certificate (its chain
/// may follow) and its private key.
struct tls_pems {
  std::string ca, cert, key;
};

/// One SSL_CTX for both ends of every link of a node.
class tls_context {
 public:
  /// Empty why: made; else why OpenSSL refused the PEM text (naming ca, cert or key).
  static std::shared_ptr<tls_context> make(const tls_pems& pems, std::string& why);
  ~tls_context();
  tls_context(const tls_context&) = delete;
  tls_context& operator=(const tls_context&) = delete;
  SSL_CTX* get() const { return ctx_; }

 private:
  explicit tls_context(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

class stream {
 public:
  explicit stream(int fd) : fd_(fd) {}
  ~stream();
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;

  int fd() const { return fd_; }
  bool tls() const { return ssl_ != nullptr; }

  /// The TLS handshake, by the deadline; the socket becomes non-blocking. As a client, expect
  /// (if not empty) is the name the server's certificate must carry. False with why, or with
  /// why empty if the connection closed during it.
  bool start_tls(const tls_context& ctx, bool server, const std::string& expect, deadline by, std::string& why);
  /// Whether the TLS peer's certificate carries name (true without TLS).
  bool peer_is(const std::string& name) const;

  /// All n bytes; false if the connection ended or failed first, or the deadline passed
  /// (timed_out then says so).
  bool read_exact(void* p, size_t n, deadline by = std::nullopt, bool* timed_out = nullptr);
  /// Every piece, in order; false if the connection failed. Pieces may be adjusted.
  bool write_all(std::vector<iovec>& iov);
  /// With TLS, why the last read or write failed, as OpenSSL said it (a peer's alert, say).
  std::string last_error();

 private:
  bool tls_read(void* p, size_t n, deadline by, bool* timed_out);
  bool tls_write(const uint8_t* p, size_t n);

  int fd_;
  SSL* ssl_ = nullptr;
  std::mutex ssl_mutex_;    // a connection's reader and writer share ssl_
  std::string last_error_;  // guarded by ssl_mutex_
};

/// For a connection refused before its first message: whether its first bytes, which arrived by
/// the deadline, open a TLS handshake (a TLS record of type handshake).
enum class opening { tls, other, nothing };
opening peek_opening(int fd, deadline by);

}  // namespace troupe::link_io
