#include <troupe/link_tls.hpp>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace troupe::link_io {

namespace {

// The oldest OpenSSL error of this thread, said for a log line, and the queue cleared.
std::string openssl_error(const char* otherwise) {
  auto e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return otherwise;
  char text[256];
  ERR_error_string_n(e, text, sizeof text);
  std::string s = text;
  // "error:0A00010B:SSL routines::wrong version number" -> "wrong version number"
  if (auto at = s.rfind(':'); at != std::string::npos) s = s.substr(at + 1);
  return s;
}

// Waits until fd has events, the deadline passes (false, timed_out set) or a second has gone by
// (true: a caller then looks again).
bool wait_for(int fd, short events, deadline by, bool* timed_out) {
  int ms = 1000;
  if (by) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*by - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      if (timed_out) *timed_out = true;
      return false;
    }
    ms = static_cast<int>(std::min<long long>(left + 1, ms));
  }
  pollfd pf{fd, events, 0};
  return ::poll(&pf, 1, ms) >= 0 || errno == EINTR;
}

// A socket BIO that writes with MSG_NOSIGNAL: a peer that goes away mid-write is an error on
// that connection, never a SIGPIPE for the node.
int bio_write(BIO* b, const char* data, int len) {
  auto w = ::send(static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(b))), data, static_cast<size_t>(len),
                  MSG_NOSIGNAL);
  BIO_clear_retry_flags(b);
  if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_write(b);
  return static_cast<int>(w);
}

int bio_read(BIO* b, char* data, int len) {
  auto r = ::recv(static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(b))), data, static_cast<size_t>(len), 0);
  BIO_clear_retry_flags(b);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_read(b);
  return static_cast<int>(r);
}

long bio_ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

BIO_METHOD* socket_method() {
  static BIO_METHOD* method = [] {
    auto* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "troupe data link");
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    return m;
  }();
  return method;
}

using bio_ptr = std::unique_ptr<BIO, decltype(&BIO_free)>;

bio_ptr pem_bio(const std::string& pem) {
  return {BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free};
}

}  // namespace

// -- the context --------------------------------------------------------------------------------

std::shared_ptr<tls_context> tls_context::make(const tls_pems& pems, std::string& why) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) {
    why = openssl_error("no TLS context");
    return nullptr;
  }
  std::shared_ptr<tls_context> made(new tls_context(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);  // only SSL_read ever reads the socket
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(ctx, 1);  // whole socket reads, not one per record header and body
  SSL_CTX_set_default_read_buffer_len(ctx, 256 * 1024);
  // Each side checks the other's certificate against the cluster's CA; a client without one is
  // refused.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  auto* store = SSL_CTX_get_cert_store(ctx);
  auto ca = pem_bio(pems.ca);
  int cas = 0;
  // OpenSSL works out a certificate's extensions when it first checks it and keeps them in the
  // certificate; done here, before the connections' threads share these certificates.
  auto settle = [](X509* c) { X509_check_purpose(c, -1, 0); };
  while (X509* c = PEM_read_bio_X509(ca.get(), nullptr, nullptr, nullptr)) {
    settle(c);
    X509_STORE_add_cert(store, c);
    X509_free(c);
    ++cas;
  }
  ERR_clear_error();  // the end of the PEM text
  if (cas == 0) {
    why = "ca: no certificate in it";
    return nullptr;
  }
  auto chain = pem_bio(pems.cert);
  X509* leaf = PEM_read_bio_X509(chain.get(), nullptr, nullptr, nullptr);
  if (leaf) settle(leaf);
  if (leaf == nullptr || SSL_CTX_use_certificate(ctx, leaf) != 1) {
    if (leaf) X509_free(leaf);
    why = "cert: " + openssl_error("no certificate in it");
    return nullptr;
  }
  X509_free(leaf);
  while (X509* c = PEM_read_bio_X509(chain.get(), nullptr, nullptr, nullptr)) {
    settle(c);
    if (SSL_CTX_add0_chain_cert(ctx, c) != 1) X509_free(c);
  }
  ERR_clear_error();
  auto key_bio = pem_bio(pems.key);
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) {
    why = "key: no private key in it (" + openssl_error("not PEM") + ")";
    return nullptr;
  }
  bool used = SSL_CTX_use_PrivateKey(ctx, key) == 1;
  EVP_PKEY_free(key);
  if (!used || SSL_CTX_check_private_key(ctx) != 1) {
    why = "key: it is not the certificate's key (" + openssl_error("no match") + ")";
    return nullptr;
  }
  return made;
}

tls_context::~tls_context() { SSL_CTX_free(ctx_); }

// -- a stream -----------------------------------------------------------------------------------

stream::~stream() {
  if (ssl_) SSL_free(ssl_);
}

bool stream::start_tls(const tls_context& ctx, bool server, const std::string& expect, deadline by, std::string& why) {
  ERR_clear_error();
  ssl_ = SSL_new(ctx.get());
  BIO* bio = ssl_ ? BIO_new(socket_method()) : nullptr;
  if (bio == nullptr) {
    why = openssl_error("no memory for TLS");
    return false;
  }
  BIO_set_data(bio, reinterpret_cast<void*>(static_cast<intptr_t>(fd_)));
  SSL_set_bio(ssl_, bio, bio);
  if (!expect.empty()) {
    SSL_set_tlsext_host_name(ssl_, expect.c_str());
    SSL_set1_host(ssl_, expect.c_str());  // the handshake fails unless the certificate names it
  }
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
  while (true) {
    ERR_clear_error();
    int r = server ? SSL_accept(ssl_) : SSL_connect(ssl_);
    if (r == 1) return true;
    int err = SSL_get_error(ssl_, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      bool timed_out = false;
      if (wait_for(fd_, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, by, &timed_out)) continue;
      if (timed_out) why = "no whole TLS handshake in time";  // else the connection failed: why stays empty
      return false;
    }
    if (auto v = SSL_get_verify_result(ssl_); v != X509_V_OK) {
      ERR_clear_error();
      why = std::string("the peer's certificate is not trusted: ") + X509_verify_cert_error_string(v);
      return false;
    }
    auto reason = openssl_error("");
    // The peer closed the connection (or a cut closed it): not a refusal, why stays empty.
    if (reason.empty() || reason == "unexpected eof while reading") return false;
    why = "TLS handshake failed: " + reason;
    return false;
  }
}

std::string stream::last_error() {
  std::lock_guard<std::mutex> lock(ssl_mutex_);
  return last_error_;
}

bool stream::peer_is(const std::string& name) const {
  if (!ssl_) return true;
  X509* cert = SSL_get0_peer_certificate(ssl_);
  return cert != nullptr && X509_check_host(cert, name.data(), name.size(), 0, nullptr) == 1;
}

bool stream::read_exact(void* p, size_t n, deadline by, bool* timed_out) {
  if (ssl_) return tls_read(p, n, by, timed_out);
  auto* b = static_cast<uint8_t*>(p);
  while (n > 0) {
    if (by) {  // all of it by then, however slowly it trickles in
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*by - std::chrono::steady_clock::now());
      pollfd pf{fd_, POLLIN, 0};
      auto ready = left.count() <= 0 ? 0 : ::poll(&pf, 1, static_cast<int>(left.count()) + 1);
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0 && timed_out) *timed_out = true;
      if (ready <= 0) return false;
    }
    auto r = ::recv(fd_, b, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    b += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool stream::tls_read(void* p, size_t n, deadline by, bool* timed_out) {
  auto* b = static_cast<uint8_t*>(p);
  while (n > 0) {
    int r, err = SSL_ERROR_NONE;
    {
      std::lock_guard<std::mutex> lock(ssl_mutex_);
      ERR_clear_error();
      r = SSL_read(ssl_, b, static_cast<int>(std::min<size_t>(n, INT_MAX)));
      if (r <= 0) err = SSL_get_error(ssl_, r);
      if (r <= 0 && err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
        last_error_ = openssl_error("the connection closed");
    }
    if (r > 0) {
      b += r;
      n -= static_cast<size_t>(r);
      continue;
    }
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      if (!wait_for(fd_, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, by, timed_out)) return false;
      continue;
    }
    return false;  // closed, or a TLS error
  }
  return true;
}

bool stream::write_all(std::vector<iovec>& iov) {
  if (ssl_) {
    // TLS seals records of up to 16 KiB: small pieces are gathered into one, large ones go as
    // they are.
    constexpr size_t gather = 64 * 1024, small = 16 * 1024;
    std::vector<uint8_t> staged;
    for (auto& v : iov) {
      if (v.iov_len >= small) {
        if (!staged.empty() && !tls_write(staged.data(), staged.size())) return false;
        staged.clear();
        if (!tls_write(static_cast<const uint8_t*>(v.iov_base), v.iov_len)) return false;
        continue;
      }
      if (staged.size() + v.iov_len > gather) {
        if (!tls_write(staged.data(), staged.size())) return false;
        staged.clear();
      }
      if (staged.capacity() == 0) staged.reserve(gather);
      auto* at = static_cast<const uint8_t*>(v.iov_base);
      staged.insert(staged.end(), at, at + v.iov_len);
    }
    return staged.empty() || tls_write(staged.data(), staged.size());
  }
  size_t at = 0;
  while (at < iov.size()) {
    msghdr mh{};
    mh.msg_iov = iov.data() + at;
    mh.msg_iovlen = std::min<size_t>(iov.size() - at, IOV_MAX);
    auto w = ::sendmsg(fd_, &mh, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    auto left = static_cast<size_t>(w);
    while (at < iov.size() && left >= iov[at].iov_len) left -= iov[at++].iov_len;
    if (left > 0) {
      iov[at].iov_base = static_cast<uint8_t*>(iov[at].iov_base) + left;
      iov[at].iov_len -= left;
    }
  }
  return true;
}

bool stream::tls_write(const uint8_t* p, size_t n) {
  while (n > 0) {
    int w, err = SSL_ERROR_NONE;
    {
      std::lock_guard<std::mutex> lock(ssl_mutex_);
      ERR_clear_error();
      w = SSL_write(ssl_, p, static_cast<int>(std::min<size_t>(n, INT_MAX)));
      if (w <= 0) err = SSL_get_error(ssl_, w);
      if (w <= 0 && err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
        last_error_ = openssl_error("the connection closed");
    }
    if (w > 0) {
      p += w;
      n -= static_cast<size_t>(w);
      continue;
    }
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
      // A connection shut down for a disconnect wakes this with an error at once.
      wait_for(fd_, err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN, std::nullopt, nullptr);
      continue;
    }
    return false;
  }
  return true;
}

opening peek_opening(int fd, deadline by) {
  while (true) {
    bool timed_out = false;
    if (!wait_for(fd, POLLIN, by, &timed_out)) return opening::nothing;
    uint8_t first[2] = {};
    auto r = ::recv(fd, first, sizeof first, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (r <= 0) return opening::nothing;
    // A TLS record of type handshake (22), version 3.x.
    return first[0] == 0x16 && (r < 2 || first[1] == 0x03) ? opening::tls : opening::other;
  }
}

}  // namespace troupe::link_io
