// The data plane's insides (link.hpp), shared by the files that define them:
//   link.cpp            the plane's interface, starting and stopping it
//   link_inbound.cpp    connections peers open here: accepting, hello, batches in, answers
//   link_outbound.cpp   connections this node opens: connecting, writing batches, acks back
// Internal to the runtime library.
#pragma once

#include <troupe/link.hpp>

#include <troupe/handover.hpp>
#include <troupe/link_tls.hpp>
#include <troupe/link_wire.hpp>

#include <troupe/frame_wire.hpp>
#include <troupe/secret.hpp>

#include <link.capnp.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <tuple>
namespace troupe {

// What both directions use: the wire's limits, messages as written and as read.
namespace link_detail {

using link_wire::max_batch_frames;
using wire_prefix = link_wire::prefix;
constexpr uint64_t max_batch_bytes = uint64_t{4} << 20;  // a larger frame goes alone
constexpr int handshake_timeout_s = 5;
// Before its hello is accepted, a connection may send one small message (link_wire), within
// the handshake deadline; and only so many such connections are served at once.
constexpr size_t max_inbound = 256;         // connections from peers, all told
constexpr size_t max_unauthenticated = 32;  // of which before their hello
constexpr size_t max_unauthenticated_per_host = 8;

// "host:port" into a socket address; an empty host or "*" means every interface.
inline bool resolve(const std::string& address, bool passive, sockaddr_storage& out, socklen_t& len, std::string& why) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    why = "expected host:port, got '" + address + "'";
    return false;
  }
  auto host = address.substr(0, colon);
  auto port = address.substr(colon + 1);
  if (host == "*") host.clear();
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res); rc != 0 || !res) {
    why = "cannot resolve '" + address + "': " + gai_strerror(rc);
    return false;
  }
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  len = res->ai_addrlen;
  freeaddrinfo(res);
  return true;
}

inline std::string peer_of(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return "?";
  char host[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
  return std::string(host) + ":" + std::to_string(ntohs(sa.sin_port));
}

using link_io::stream;

// One message ready to write: prefix, flat header, and the payload pieces it names.
struct out_message {
  wire_prefix prefix{};
  kj::Array<capnp::word> header;
  std::vector<iovec> payload;  // the frames' own bytes: the items written keep them alive
  void add_to(std::vector<iovec>& iov) {
    iov.push_back({&prefix, sizeof prefix});
    iov.push_back({header.begin(), header.size() * sizeof(capnp::word)});
    for (auto& p : payload) iov.push_back(p);
  }
};

inline out_message finish(capnp::MallocMessageBuilder& mb, uint64_t payload_bytes = 0) {
  out_message m;
  m.header = capnp::messageToFlatArray(mb);
  m.prefix = {link_wire::magic, static_cast<uint32_t>(m.header.size()), payload_bytes};
  return m;
}

inline bool write_message(stream& s, out_message& m) {
  std::vector<iovec> iov;
  m.add_to(iov);
  return s.write_all(iov);
}

// A message read off a connection, or why the connection must close.
struct in_message {
  kj::Array<capnp::word> header;
  std::shared_ptr<buffer> payload;
  uint64_t payload_bytes = 0;
};

enum class read_status { ok, closed, bad };

// hello: the first message of a connection, before it is authenticated: small, no payload,
// and whole within the handshake deadline.
inline read_status read_message(stream& s, in_message& m, std::string& why, bool hello = false) {
  link_io::deadline deadline;
  if (hello) deadline = std::chrono::steady_clock::now() + std::chrono::seconds(handshake_timeout_s);
  wire_prefix p{};
  bool timed_out = false;
  if (!s.read_exact(&p, sizeof p, deadline, &timed_out)) {
    if (timed_out) {
      why = "no hello within " + std::to_string(handshake_timeout_s) + " s";
      return read_status::bad;
    }
    return read_status::closed;
  }
  if (auto refused = link_wire::check_prefix(p, hello)) {
    why = std::move(*refused);
    auto* first = reinterpret_cast<const uint8_t*>(&p);
    if (hello && first[0] == 0x16 && first[1] == 0x03)  // a TLS record of type handshake
      why = "a TLS handshake, but this data port takes plain connections (no 'tls' in this node's config)";
    return read_status::bad;
  }
  m.header = kj::heapArray<capnp::word>(p.header_words);
  // A connection that ends inside a message was cut (a network fault, a peer that stopped):
  // closed, not refused; a hello that does not come whole in time is refused.
  if (!s.read_exact(m.header.begin(), m.header.size() * sizeof(capnp::word), deadline, &timed_out)) {
    if (!timed_out) return read_status::closed;
    why = "no whole hello within " + std::to_string(handshake_timeout_s) + " s";
    return read_status::bad;
  }
  m.payload_bytes = p.payload_bytes;
  if (p.payload_bytes > 0) {
    m.payload = buffer::allocate(p.payload_bytes);
    if (!s.read_exact(m.payload->data(), p.payload_bytes)) return read_status::closed;
  }
  return read_status::ok;
}

inline void set_timeout(int fd, int seconds) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

inline std::string channel_key(const std::string& pipeline, const std::string& stage) {
  return pipeline + '\0' + stage;
}

}  // namespace link_detail

using namespace link_detail;

struct data_plane::impl {
  link_options o;
  std::shared_ptr<link_io::tls_context> tls;  // null: plain connections
  int listen_fd = -1;
  int wake_fd = -1;
  std::string bound;
  std::thread acceptor;
  std::atomic<bool> stopping{false};

  // Metrics (may be absent).
  prometheus::Family<prometheus::Counter>* frames_sent = nullptr;
  prometheus::Family<prometheus::Counter>* bytes_sent = nullptr;
  prometheus::Family<prometheus::Counter>* frames_received = nullptr;
  prometheus::Family<prometheus::Counter>* bytes_received = nullptr;
  prometheus::Family<prometheus::Counter>* connects = nullptr;
  prometheus::Family<prometheus::Gauge>* up = nullptr;
  prometheus::Counter* bad_messages = nullptr;
  prometheus::Counter* refused_connections = nullptr;
  prometheus::Family<prometheus::Counter>* fenced_frames = nullptr;
  // Connections refused at accept since the last log line about it (said at most every 10 s).
  size_t refused_since_log = 0;
  std::chrono::steady_clock::time_point refused_logged_at{};

  struct item {
    bool is_frame = true;
    uint32_t channel = 0;
    uint64_t id = 0;
    frame f;
    std::string pipeline, stage;  // control
    control_kind what = control_kind::finished;
  };

  // A connection this node opened to send to a peer.
  struct peer_link {
    std::string address;
    std::string node;  // the node expected there, if known (guarded by the plane's mutex)
    std::mutex m;
    std::condition_variable cv;
    std::deque<item> q;
    // Control sent on this link: it may have been lost with a connection, so each new
    // connection carries all of it again (the receiver takes it once).
    std::vector<item> sent_control;
    bool stopping = false, broken = false;
    int fd = -1;
    std::unique_ptr<stream> io;  // of fd; only the writer thread sets or resets it
    uint64_t connection = 0;     // how many connections it has made
    std::thread writer, reader;
    prometheus::Counter* frames = nullptr;
    prometheus::Counter* bytes = nullptr;
    prometheus::Gauge* up = nullptr;
    prometheus::Counter* connects = nullptr;
  };

  // A connection a peer opened to send here.
  struct inbound {
    int fd = -1;
    std::unique_ptr<stream> io;  // of fd
    std::string from = "?", address;
    std::mutex m;
    std::condition_variable cv;
    std::deque<out_message> q;
    bool closed = false;
    std::thread reader, writer;
    std::atomic<bool> done{false};
    bool authenticated = false;  // its hello was taken (guarded by the plane's mutex)
    prometheus::Counter* frames = nullptr;
    prometheus::Counter* bytes = nullptr;
  };

  struct channel_info {
    std::string pipeline, stage;
    link_channel_actor owner;
    peer_link* link = nullptr;
  };

  std::mutex mutex;  // guards everything below; taken before any link's own mutex
  std::map<std::string, std::unique_ptr<peer_link>> links;
  std::map<uint32_t, channel_info> channels;
  uint32_t next_channel = 1;
  std::map<std::string, link_ingress_actor> served;  // channel_key(pipeline, stage)
  std::map<std::string, link_control_actor> managers;
  std::set<std::string> fenced_logged;
  std::map<std::string, uint64_t> epochs;      // run -> the placement revision it acts on
  std::map<std::string, uint64_t> node_fence;  // node -> hello refused at or below
  uint64_t newest_epoch = 0;
  std::map<std::string, std::vector<link_control>> early_control;
  // When this node's part of a pipeline ended: a while later its control is not sent again.
  std::map<std::string, std::chrono::steady_clock::time_point> unserved_at;
  static constexpr auto control_kept = std::chrono::seconds(60);

  bool control_expired(const std::string& pipeline) {
    auto it = unserved_at.find(pipeline);
    return it != unserved_at.end() && std::chrono::steady_clock::now() - it->second > control_kept;
  }
  std::list<std::unique_ptr<inbound>> inbounds;
  std::map<std::string, inbound*> inbound_by_node;

  void log_bad(const std::string& from, const std::string& why) {
    if (bad_messages) bad_messages->Increment();
    spdlog::error("[node={}] closed the data link from {}: {}", o.node, from, why);
  }

  // -- accepting -------------------------------------------------------------------------

  void accept_loop();

  // Why a new connection from address is refused now, if it is; REQUIRES: mutex held.
  std::string over_limit(const std::string& address);

  // Closes a connection at accept, counted; logged at most every 10 s. REQUIRES: mutex held.
  void refuse_connection(int fd, const std::string& address, const std::string& why);

  void reap();

  void inbound_writer(inbound& in);

  // An answer (acks or retries) to the node that sent frames; REQUIRES: mutex not held.
  void answer(const std::string& from, out_message m);

  void push(inbound& in, out_message m);

  void inbound_reader(inbound& in);

  void serve_inbound(inbound& in);

  // Hands a message from a peer to whom it is for; false (with why) if it is malformed.
  bool dispatch(inbound& in, in_message& m, std::string& why);

  // -- sending ---------------------------------------------------------------------------

  // REQUIRES: mutex held.
  peer_link& link_to(const std::string& address, const std::string& node);

  // Connects (over TLS when the plane has it, to a certificate that names node if given) and
  // says hello; null with why if that fails.
  std::unique_ptr<stream> connect_to(const std::string& address, const std::string& node, std::string& why);

  void notify_up(peer_link& l, uint64_t connection);

  void writer_loop(peer_link& l);

  void disconnect(peer_link& l, std::unique_lock<std::mutex>& lk);

  bool write_items(peer_link& l, stream& s, std::vector<item>& items);

  void link_reader(peer_link& l, stream& s);

  void stop();
};

}  // namespace troupe
