#include "link.hpp"

#include "handover.hpp"
#include "link_tls.hpp"
#include "link_wire.hpp"

#include "frame_wire.hpp"
#include "secret.hpp"

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

namespace {

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
bool resolve(const std::string& address, bool passive, sockaddr_storage& out, socklen_t& len, std::string& why) {
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

std::string peer_of(int fd) {
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

out_message finish(capnp::MallocMessageBuilder& mb, uint64_t payload_bytes = 0) {
  out_message m;
  m.header = capnp::messageToFlatArray(mb);
  m.prefix = {link_wire::magic, static_cast<uint32_t>(m.header.size()), payload_bytes};
  return m;
}

bool write_message(stream& s, out_message& m) {
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
read_status read_message(stream& s, in_message& m, std::string& why, bool hello = false) {
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
  why = link_wire::check_prefix(p, hello);
  if (!why.empty()) {
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

void set_timeout(int fd, int seconds) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

std::string channel_key(const std::string& pipeline, const std::string& stage) { return pipeline + '\0' + stage; }

}  // namespace

// -- the plane ---------------------------------------------------------------------------------

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

  void accept_loop() {
    while (!stopping.load()) {
      pollfd fds[2] = {{listen_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
      if (::poll(fds, 2, 1000) < 0 && errno != EINTR) break;
      reap();
      if (stopping.load()) break;
      if (!(fds[0].revents & POLLIN)) continue;
      int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto in = std::make_unique<inbound>();
      in->fd = fd;
      in->io = std::make_unique<stream>(fd);
      in->address = peer_of(fd);
      auto* p = in.get();
      std::lock_guard<std::mutex> lock(mutex);
      if (auto why = over_limit(in->address); !why.empty()) {
        refuse_connection(fd, in->address, why);
        continue;
      }
      inbounds.push_back(std::move(in));
      // One thread until the hello is taken; the writer starts once it is.
      try {
        p->reader = std::thread([this, p] { inbound_reader(*p); });
      } catch (const std::system_error& e) {
        inbounds.pop_back();
        refuse_connection(fd, p->address, std::string("no thread to serve it: ") + e.what());
      }
    }
  }

  // Why a new connection from address is refused now, if it is; REQUIRES: mutex held.
  std::string over_limit(const std::string& address) {
    size_t unauthenticated = 0, from_host = 0;
    auto host = address.substr(0, address.rfind(':'));
    for (auto& in : inbounds) {
      if (in->authenticated || in->done.load()) continue;
      ++unauthenticated;
      if (in->address.substr(0, in->address.rfind(':')) == host) ++from_host;
    }
    if (inbounds.size() >= max_inbound) return std::to_string(max_inbound) + " connections are open";
    if (unauthenticated >= max_unauthenticated)
      return std::to_string(max_unauthenticated) + " connections wait for their hello";
    if (from_host >= max_unauthenticated_per_host)
      return std::to_string(max_unauthenticated_per_host) + " connections from " + host + " wait for their hello";
    return {};
  }

  // Closes a connection at accept, counted; logged at most every 10 s. REQUIRES: mutex held.
  void refuse_connection(int fd, const std::string& address, const std::string& why) {
    ::close(fd);
    if (refused_connections) refused_connections->Increment();
    ++refused_since_log;
    auto now = std::chrono::steady_clock::now();
    if (now - refused_logged_at < std::chrono::seconds(10)) return;
    spdlog::error("[node={}] refused {} data connection{} (the last from {}): {}", o.node, refused_since_log,
                  refused_since_log == 1 ? "" : "s", address, why);
    refused_since_log = 0;
    refused_logged_at = now;
  }

  void reap() {
    std::list<std::unique_ptr<inbound>> dead;
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (auto it = inbounds.begin(); it != inbounds.end();) {
        if ((*it)->done.load()) {
          dead.push_back(std::move(*it));
          it = inbounds.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& in : dead) {
      if (in->reader.joinable()) in->reader.join();
      ::close(in->fd);
    }
  }

  void inbound_writer(inbound& in) {
    std::unique_lock<std::mutex> lk(in.m);
    while (true) {
      in.cv.wait(lk, [&] { return in.closed || !in.q.empty(); });
      if (in.closed) return;
      std::vector<out_message> batch;
      while (!in.q.empty()) {
        batch.push_back(std::move(in.q.front()));
        in.q.pop_front();
      }
      lk.unlock();
      std::vector<iovec> iov;
      for (auto& m : batch) m.add_to(iov);
      bool ok = in.io->write_all(iov);
      lk.lock();
      if (!ok) {
        in.closed = true;
        ::shutdown(in.fd, SHUT_RDWR);
        return;
      }
    }
  }

  // An answer (acks or retries) to the node that sent frames; REQUIRES: mutex not held.
  void answer(const std::string& from, out_message m);

  void push(inbound& in, out_message m) {
    std::lock_guard<std::mutex> lk(in.m);
    if (in.closed) return;
    in.q.push_back(std::move(m));
    in.cv.notify_one();
  }

  void inbound_reader(inbound& in) {
    serve_inbound(in);
    {
      std::lock_guard<std::mutex> lk(in.m);
      in.closed = true;
      in.cv.notify_one();
    }
    ::shutdown(in.fd, SHUT_RDWR);
    if (in.writer.joinable()) in.writer.join();
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (auto it = inbound_by_node.find(in.from); it != inbound_by_node.end() && it->second == &in)
        inbound_by_node.erase(it);
    }
    in.done.store(true);
    if (wake_fd >= 0) {
      uint64_t one = 1;
      [[maybe_unused]] auto r = ::write(wake_fd, &one, sizeof one);
    }
  }

  void serve_inbound(inbound& in) {
    std::string why;
    if (tls) {  // TLS only, both ways certified, before anything is read
      auto by = std::chrono::steady_clock::now() + std::chrono::seconds(handshake_timeout_s);
      switch (link_io::peek_opening(in.fd, by)) {
        case link_io::opening::nothing:
          if (std::chrono::steady_clock::now() < by) return;  // closed before a word
          return log_bad(in.address, "no TLS handshake within " + std::to_string(handshake_timeout_s) + " s");
        case link_io::opening::other:
          return log_bad(in.address, "not a TLS handshake (a plain connection? this port takes TLS only)");
        case link_io::opening::tls: break;
      }
      if (!in.io->start_tls(*tls, true, {}, by, why)) {
        if (why.empty()) return;  // closed during it, as a plain connection may close before its hello
        return log_bad(in.address, why);
      }
    } else {
      set_timeout(in.fd, handshake_timeout_s);
    }
    in_message m;
    auto st = read_message(*in.io, m, why, true);
    if (st == read_status::closed) return;
    if (st == read_status::bad) return log_bad(in.address, why);
    try {
      capnp::FlatArrayMessageReader r(m.header);
      auto msg = r.getRoot<wire::LinkMessage>();
      if (!msg.isHello()) return log_bad(in.address, "the first message was not a hello");
      auto h = msg.getHello();
      std::string node = h.getNode();
      std::string refused;
      if (h.getProtocol() != wire::LINK_PROTOCOL)
        refused = "link protocol " + std::to_string(h.getProtocol()) + ", this node speaks " +
                  std::to_string(wire::LINK_PROTOCOL);
      else if (!in.io->peer_is(node))
        refused = "its certificate does not carry the name of node '" + node + "'";
      else if (!same_secret(h.getToken().cStr(), o.token))
        refused = "wrong cluster token";
      if (refused.empty()) {
        std::lock_guard<std::mutex> lock(mutex);
        if (auto f = node_fence.find(node); f != node_fence.end() && h.getEpoch() <= f->second)
          refused = "node " + node + " acts on placement revision " + std::to_string(h.getEpoch()) +
                    ", but stages moved away from it at revision " + std::to_string(f->second) +
                    ": it must read the cluster's placements first";
      }
      capnp::MallocMessageBuilder mb;
      auto reply = mb.initRoot<wire::LinkMessage>().initHelloReply();
      reply.setOk(refused.empty());
      reply.setReason(refused);
      reply.setNode(o.node);
      auto out = finish(mb);
      if (!write_message(*in.io, out)) return;
      if (!refused.empty()) {
        if (refused.rfind("node ", 0) == 0) {  // fenced: it is a member, only behind; said once
          if (fenced_frames) fenced_frames->Add({{"node", o.node}, {"peer", node}});
          std::lock_guard<std::mutex> lock(mutex);
          if (!fenced_logged.insert(node + '\0' + "hello").second) return;
          spdlog::warn("[node={}] refused the data link from {} for now: {}", o.node, in.address, refused);
          return;
        }
        if (bad_messages) bad_messages->Increment();
        spdlog::error("[node={}] refused the data link from {} (node '{}'): {}", o.node, in.address, node, refused);
        return;
      }
      std::lock_guard<std::mutex> lock(mutex);
      in.from = node;
      in.authenticated = true;
      inbound_by_node[node] = &in;
      if (frames_received) {
        in.frames = &frames_received->Add({{"node", o.node}, {"peer", node}});
        in.bytes = &bytes_received->Add({{"node", o.node}, {"peer", node}});
      }
    } catch (const kj::Exception& e) {
      return log_bad(in.address, std::string("malformed hello: ") + e.getDescription().cStr());
    }
    set_timeout(in.fd, 0);
    try {
      in.writer = std::thread([this, p = &in] { inbound_writer(*p); });
    } catch (const std::system_error& e) {
      return log_bad(in.from + " (" + in.address + ")", std::string("no thread to answer it: ") + e.what());
    }
    spdlog::info("[node={}] data link from node {} ({})", o.node, in.from, in.address);
    while (!stopping.load()) {
      in_message msg;
      st = read_message(*in.io, msg, why);
      if (st == read_status::closed) break;
      if (st == read_status::bad) return log_bad(in.from + " (" + in.address + ")", why);
      if (!dispatch(in, msg, why)) return log_bad(in.from + " (" + in.address + ")", why);
    }
    spdlog::info("[node={}] data link from node {} closed", o.node, in.from);
  }

  // Hands a message from a peer to whom it is for; false (with why) if it is malformed.
  bool dispatch(inbound& in, in_message& m, std::string& why) {
    try {
      capnp::FlatArrayMessageReader r(m.header, link_wire::reader_options(m.header.size()));
      auto msg = r.getRoot<wire::LinkMessage>();
      switch (msg.which()) {
        case wire::LinkMessage::FRAMES: {
          auto fr = msg.getFrames();
          link_batch b;
          b.from = in.from;
          b.channel = fr.getChannel();
          b.epoch = fr.getEpoch();
          why = link_wire::decode_frames(fr.getBatch(), m.payload, m.payload_bytes, b.frames);
          if (!why.empty()) return false;
          if (in.frames) {
            in.frames->Increment(static_cast<double>(b.frames.size()));
            in.bytes->Increment(static_cast<double>(m.payload_bytes));
          }
          std::string pipeline = fr.getPipeline(), stage = fr.getStage();
          link_ingress_actor to;
          {
            std::lock_guard<std::mutex> lock(mutex);
            if (auto it = served.find(channel_key(pipeline, stage)); it != served.end()) to = it->second;
          }
          if (to) {
            handover::made();  // the frames decoded here are read by executor jobs
            caf::anon_send(to, link_frames_atom::value, std::move(b));
          } else {
            // Not served here (yet, or any more): the sender tries again later.
            capnp::MallocMessageBuilder mb;
            auto a = mb.initRoot<wire::LinkMessage>().initAcks();
            a.setChannel(b.channel);
            auto retry = a.initRetry(static_cast<unsigned>(b.frames.size()));
            for (unsigned i = 0; i < b.frames.size(); ++i) retry.set(i, b.frames[i].first);
            a.setReason("stage '" + stage + "' of pipeline '" + pipeline + "' is not served on node " + o.node);
            push(in, finish(mb));
          }
          return true;
        }
        case wire::LinkMessage::CONTROL: {
          auto c = msg.getControl();
          std::string pipeline = c.getPipeline();
          link_control lc;
          switch (c.getWhat()) {
            case wire::ControlKind::FINISHED: lc.kind = control_kind::finished; break;
            case wire::ControlKind::END: lc.kind = control_kind::end; break;
            default: why = "unknown control kind " + std::to_string(static_cast<unsigned>(c.getWhat())); return false;
          }
          lc.stage = c.getStage();
          lc.from = in.from;
          lc.epoch = c.getEpoch();
          std::lock_guard<std::mutex> lock(mutex);
          if (auto it = managers.find(pipeline); it != managers.end()) {
            caf::anon_send(it->second, link_control_atom::value, std::move(lc));
          } else if (early_control.size() < 1024 || early_control.count(pipeline)) {
            auto& early = early_control[pipeline];
            auto same = [&](const link_control& x) {
              return x.kind == lc.kind && x.stage == lc.stage && x.from == lc.from;
            };
            if (early.size() < 1024 && std::find_if(early.begin(), early.end(), same) == early.end())
              early.push_back(std::move(lc));
          }
          return true;
        }
        default: why = "unexpected message on a data link"; return false;
      }
    } catch (const kj::Exception& e) {
      why = std::string("malformed message: ") + e.getDescription().cStr();
      return false;
    }
  }

  // -- sending ---------------------------------------------------------------------------

  // REQUIRES: mutex held.
  peer_link& link_to(const std::string& address, const std::string& node) {
    auto& l = links[address];
    if (l && !node.empty()) l->node = node;  // a node that took the address over: checked from its next connection
    if (!l) {
      l = std::make_unique<peer_link>();
      l->address = address;
      l->node = node;
      if (frames_sent) {
        // The peer by name, as troupe_peer_* and the receiving side name it (by address only
        // where no name was given).
        std::map<std::string, std::string> labels{{"node", o.node}, {"peer", node.empty() ? address : node}};
        l->frames = &frames_sent->Add(labels);
        l->bytes = &bytes_sent->Add(labels);
        l->up = &up->Add(labels);
        l->connects = &connects->Add(labels);
      }
      auto* p = l.get();
      p->writer = std::thread([this, p] { writer_loop(*p); });
    }
    return *l;
  }

  // Connects (over TLS when the plane has it, to a certificate that names node if given) and
  // says hello; null with why if that fails.
  std::unique_ptr<stream> connect_to(const std::string& address, const std::string& node, std::string& why) {
    sockaddr_storage sa{};
    socklen_t len = 0;
    if (!resolve(address, false, sa, len, why)) return nullptr;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      why = std::strerror(errno);
      return nullptr;
    }
    auto s = std::make_unique<stream>(fd);
    auto fail = [&] {
      s.reset();
      ::close(fd);
      return nullptr;
    };
    set_timeout(fd, handshake_timeout_s);
    timeval tv{handshake_timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
      why = std::string("cannot connect: ") + std::strerror(errno);
      return fail();
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (tls && !s->start_tls(*tls, false, node,
                             std::chrono::steady_clock::now() + std::chrono::seconds(handshake_timeout_s), why)) {
      if (why.empty()) why = "the connection closed during the TLS handshake";
      return fail();
    }
    capnp::MallocMessageBuilder mb;
    auto h = mb.initRoot<wire::LinkMessage>().initHello();
    h.setProtocol(wire::LINK_PROTOCOL);
    h.setToken(o.token);
    h.setNode(o.node);
    h.setIncarnation(o.incarnation);
    {
      std::lock_guard<std::mutex> lock(mutex);
      h.setEpoch(newest_epoch);
    }
    auto out = finish(mb);
    in_message reply;
    std::string rwhy;
    // The answer is small and due within the handshake deadline, as a hello.
    if (!write_message(*s, out) || read_message(*s, reply, rwhy, true) != read_status::ok) {
      if (!rwhy.empty())
        why = rwhy;
      else if (tls)  // the receiver refused this node's certificate, say
        why = "no answer to hello: " + s->last_error();
      else
        why = "no answer to hello (if that node takes TLS only, give this node a 'tls' section too)";
      return fail();
    }
    try {
      capnp::FlatArrayMessageReader r(reply.header);
      auto msg = r.getRoot<wire::LinkMessage>();
      if (!msg.isHelloReply()) {
        why = "the answer to hello was something else";
      } else if (!msg.getHelloReply().getOk()) {
        why = std::string("refused by node ") + msg.getHelloReply().getNode().cStr() + ": " +
              msg.getHelloReply().getReason().cStr();
      } else if (!s->peer_is(msg.getHelloReply().getNode())) {
        why = std::string("node ") + msg.getHelloReply().getNode().cStr() +
              " answered with a certificate that does not carry its name";
      }
    } catch (const kj::Exception& e) {
      why = std::string("malformed answer to hello: ") + e.getDescription().cStr();
    }
    if (!why.empty()) return fail();
    timeval none{0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    return s;
  }

  void notify_up(peer_link& l, uint64_t connection) {
    std::vector<link_channel_actor> owners;
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (auto& [id, c] : channels)
        if (c.link == &l) owners.push_back(c.owner);
    }
    for (auto& o : owners) caf::anon_send(o, link_up_atom::value, connection);
  }

  void writer_loop(peer_link& l) {
    int backoff_ms = 50;
    std::string last_why;
    std::unique_lock<std::mutex> lk(l.m);
    while (!l.stopping) {
      if (l.fd < 0) {
        lk.unlock();
        std::string why, node;
        {
          std::lock_guard<std::mutex> lock(mutex);
          node = l.node;
        }
        auto io = connect_to(l.address, node, why);
        lk.lock();
        if (!io) {
          if (why != last_why) spdlog::warn("[node={}] data link to {}: {}; retrying", o.node, l.address, why);
          last_why = why;
          l.cv.wait_for(lk, std::chrono::milliseconds(backoff_ms), [&] { return l.stopping; });
          backoff_ms = std::min(backoff_ms * 2, 1000);
          continue;
        }
        int fd = io->fd();
        if (l.stopping) {
          io.reset();
          ::close(fd);
          break;
        }
        spdlog::info("[node={}] data link to {} up", o.node, l.address);
        last_why.clear();
        backoff_ms = 50;
        l.fd = fd;
        l.io = std::move(io);
        l.broken = false;
        auto connection = ++l.connection;
        // Frames queued for an earlier connection are sent again by their owners; control
        // goes again from here.
        l.q.clear();
        lk.unlock();
        {
          std::lock_guard<std::mutex> lock(mutex);
          std::lock_guard<std::mutex> again(l.m);
          std::erase_if(l.sent_control, [&](const item& i) { return control_expired(i.pipeline); });
          for (auto& c : l.sent_control) l.q.push_back(c);
        }
        lk.lock();
        if (l.up) {
          l.up->Set(1);
          l.connects->Increment();
        }
        l.reader = std::thread([this, &l, s = l.io.get()] { link_reader(l, *s); });
        lk.unlock();
        notify_up(l, connection);
        lk.lock();
        continue;
      }
      l.cv.wait(lk, [&] { return l.stopping || l.broken || !l.q.empty(); });
      if (l.stopping) break;
      if (l.broken) {
        disconnect(l, lk);
        continue;
      }
      std::vector<item> items;
      uint64_t bytes = 0;
      while (!l.q.empty() && items.size() < max_batch_frames) {
        auto size = l.q.front().f.size;
        if (!items.empty() && bytes + size > max_batch_bytes) break;  // it starts the next batch
        bytes += size;
        items.push_back(std::move(l.q.front()));
        l.q.pop_front();
      }
      auto* s = l.io.get();
      lk.unlock();
      bool ok = write_items(l, *s, items);
      lk.lock();
      if (!ok) l.broken = true;
    }
    if (l.fd >= 0) disconnect(l, lk);
  }

  void disconnect(peer_link& l, std::unique_lock<std::mutex>& lk) {
    ::shutdown(l.fd, SHUT_RDWR);
    lk.unlock();
    if (l.reader.joinable()) l.reader.join();
    lk.lock();
    l.io.reset();
    ::close(l.fd);
    l.fd = -1;
    if (l.up) l.up->Set(0);
    if (!l.stopping) spdlog::warn("[node={}] data link to {} dropped; reconnecting", o.node, l.address);
  }

  bool write_items(peer_link& l, stream& s, std::vector<item>& items) {
    // Runs of frames on one channel (a message each) and control items; the channels' names
    // are read under the plane's lock, the messages built without it.
    struct run {
      size_t from, to;
      std::string pipeline, stage;
      uint64_t epoch = 0;
    };
    std::vector<run> runs;
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto epoch_of = [&](const std::string& run) {
        auto e = epochs.find(run);
        return e == epochs.end() ? uint64_t{0} : e->second;
      };
      for (size_t i = 0; i < items.size();) {
        size_t j = i + 1;
        if (items[i].is_frame) {
          while (j < items.size() && items[j].is_frame && items[j].channel == items[i].channel) ++j;
          auto ch = channels.find(items[i].channel);
          if (ch != channels.end())
            runs.push_back({i, j, ch->second.pipeline, ch->second.stage, epoch_of(ch->second.pipeline)});
          // else closed since: its frames are dropped
        } else {
          runs.push_back({i, j, {}, {}, epoch_of(items[i].pipeline)});
        }
        i = j;
      }
    }
    std::vector<out_message> msgs;
    uint64_t frames = 0, bytes = 0;
    for (auto& r : runs) {
      capnp::MallocMessageBuilder mb;
      if (!items[r.from].is_frame) {
        auto c = mb.initRoot<wire::LinkMessage>().initControl();
        c.setPipeline(items[r.from].pipeline);
        c.setWhat(items[r.from].what == control_kind::end ? wire::ControlKind::END : wire::ControlKind::FINISHED);
        c.setStage(items[r.from].stage);
        c.setEpoch(r.epoch);
        msgs.push_back(finish(mb));
        continue;
      }
      auto fr = mb.initRoot<wire::LinkMessage>().initFrames();
      fr.setChannel(items[r.from].channel);
      fr.setPipeline(r.pipeline);
      fr.setStage(r.stage);
      fr.setEpoch(r.epoch);
      auto list = fr.initBatch(static_cast<unsigned>(r.to - r.from));
      std::vector<iovec> pieces;
      uint64_t payload = 0;
      for (size_t k = r.from; k < r.to; ++k) {
        auto& f = items[k].f;
        auto b = list[static_cast<unsigned>(k - r.from)];
        b.setId(items[k].id);
        write_frame_fields(b, f);
        b.setSize(f.size);
        if (f.size > 0) {
          pieces.push_back({const_cast<uint8_t*>(f.data), f.size});
          payload += f.size;
        }
      }
      auto m = finish(mb, payload);
      m.payload = std::move(pieces);
      frames += r.to - r.from;
      bytes += payload;
      msgs.push_back(std::move(m));
    }
    std::vector<iovec> iov;
    for (auto& m : msgs) m.add_to(iov);
    if (iov.empty()) return true;
    if (!s.write_all(iov)) return false;
    if (l.frames) {
      l.frames->Increment(static_cast<double>(frames));
      l.bytes->Increment(static_cast<double>(bytes));
    }
    return true;
  }

  void link_reader(peer_link& l, stream& s) {
    while (true) {
      in_message m;
      std::string why;
      auto st = read_message(s, m, why);
      if (st != read_status::ok) {
        if (st == read_status::bad) log_bad(l.address, why);
        break;
      }
      try {
        capnp::FlatArrayMessageReader r(m.header);
        auto msg = r.getRoot<wire::LinkMessage>();
        if (!msg.isAcks()) {
          log_bad(l.address, "unexpected message on a link this node sends on");
          break;
        }
        auto a = msg.getAcks();
        std::vector<uint64_t> acked, retry;
        for (auto id : a.getAcked()) acked.push_back(id);
        for (auto id : a.getRetry()) retry.push_back(id);
        if (!retry.empty())
          spdlog::debug("[node={}] {} frames to send again to {}: {}", o.node, retry.size(), l.address,
                        a.getReason().cStr());
        link_channel_actor owner;
        {
          std::lock_guard<std::mutex> lock(mutex);
          if (auto it = channels.find(a.getChannel()); it != channels.end()) owner = it->second.owner;
        }
        if (owner) caf::anon_send(owner, link_acks_atom::value, std::move(acked), std::move(retry));
      } catch (const kj::Exception& e) {
        log_bad(l.address, std::string("malformed message: ") + e.getDescription().cStr());
        break;
      }
    }
    std::lock_guard<std::mutex> lk(l.m);
    l.broken = true;
    l.cv.notify_one();
  }

  void stop() {
    stopping.store(true);
    if (wake_fd >= 0) {
      uint64_t one = 1;
      [[maybe_unused]] auto r = ::write(wake_fd, &one, sizeof one);
    }
    if (acceptor.joinable()) acceptor.join();
    std::map<std::string, std::unique_ptr<peer_link>> ls;
    std::list<std::unique_ptr<inbound>> ins;
    {
      std::lock_guard<std::mutex> lock(mutex);
      ls = std::move(links);
      ins = std::move(inbounds);
      inbound_by_node.clear();
      channels.clear();
      served.clear();
      managers.clear();
    }
    for (auto& [a, l] : ls) {
      {
        std::lock_guard<std::mutex> lk(l->m);
        l->stopping = true;
        l->cv.notify_one();
      }
      l->writer.join();
    }
    for (auto& in : ins) {
      ::shutdown(in->fd, SHUT_RDWR);
      if (in->reader.joinable()) in->reader.join();
      ::close(in->fd);
    }
    if (listen_fd >= 0) ::close(listen_fd);
    if (wake_fd >= 0) ::close(wake_fd);
    listen_fd = wake_fd = -1;
  }
};

data_plane::data_plane(std::unique_ptr<impl> i) : impl_(std::move(i)) {}

data_plane::~data_plane() { impl_->stop(); }

expected<std::shared_ptr<data_plane>> data_plane::start(link_options o) {
  auto d = std::make_unique<impl>();
  d->o = std::move(o);
  std::string why;
  sockaddr_storage sa{};
  socklen_t len = 0;
  auto fail = [&](const std::string& w) {
    return make_error(errc::io_error, "data address " + d->o.listen + ": " + w);
  };
  if (!resolve(d->o.listen, true, sa, len, why)) return fail(why);
  if (d->o.tls) {
    d->tls = link_io::tls_context::make(*d->o.tls, why);
    if (!d->tls) return make_error(errc::invalid_node_config, "tls: " + why);
  }
  d->listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(d->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(d->listen_fd, reinterpret_cast<sockaddr*>(&sa), len) != 0 || ::listen(d->listen_fd, 64) != 0) {
    auto w = std::string("cannot listen: ") + std::strerror(errno);
    ::close(d->listen_fd);
    return fail(w);
  }
  sockaddr_in bound{};
  socklen_t blen = sizeof bound;
  getsockname(d->listen_fd, reinterpret_cast<sockaddr*>(&bound), &blen);
  auto host = d->o.listen.substr(0, d->o.listen.rfind(':'));
  d->bound = host + ":" + std::to_string(ntohs(bound.sin_port));
  d->wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (auto& r = d->o.registry) {
    auto counter = [&](const char* name, const char* help) {
      return &prometheus::BuildCounter().Name(name).Help(help).Register(*r);
    };
    d->frames_sent = counter("troupe_link_frames_sent_total",
                             "Frames written to the data link to the peer (each send again counts)");
    d->bytes_sent = counter("troupe_link_bytes_sent_total", "Payload bytes written to the data link to the peer");
    d->frames_received = counter("troupe_link_frames_received_total", "Frames read from the data link of the peer");
    d->bytes_received =
        counter("troupe_link_bytes_received_total", "Payload bytes read from the data link of the peer");
    d->connects =
        counter("troupe_link_connects_total", "Connections made to the data address of the peer (1 plus reconnects)");
    d->fenced_frames = counter("troupe_link_fenced_frames_total",
                               "Frames dropped because their node no longer runs the stage that sent them");
    d->bad_messages =
        &counter("troupe_link_bad_messages_total", "Data links closed for a malformed or oversized message, or refused")
             ->Add({{"node", d->o.node}});
    d->refused_connections =
        &counter("troupe_link_refused_connections_total",
                 "Data connections closed at accept: too many open, or waiting for their hello, or no thread")
             ->Add({{"node", d->o.node}});
    d->up = &prometheus::BuildGauge()
                 .Name("troupe_link_up")
                 .Help("Whether the data link to the peer is connected")
                 .Register(*r);
  }
  auto* raw = d.get();
  raw->acceptor = std::thread([raw] { raw->accept_loop(); });
  return std::shared_ptr<data_plane>(new data_plane(std::move(d)));
}

std::string data_plane::address() const { return impl_->bound; }
const std::string& data_plane::node() const { return impl_->o.node; }

void data_plane::serve(const std::string& pipeline, const std::string& stage, link_ingress_actor ingress) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->served[channel_key(pipeline, stage)] = std::move(ingress);
}

void data_plane::serve_control(const std::string& pipeline, link_control_actor manager) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (auto it = impl_->early_control.find(pipeline); it != impl_->early_control.end()) {
    for (auto& c : it->second) caf::anon_send(manager, link_control_atom::value, c);
    impl_->early_control.erase(it);
  }
  impl_->managers[pipeline] = std::move(manager);
}

void data_plane::unserve(const std::string& pipeline) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto prefix = pipeline + '\0';
  std::erase_if(impl_->served, [&](auto& kv) { return kv.first.rfind(prefix, 0) == 0; });
  impl_->unserved_at[pipeline] = std::chrono::steady_clock::now();
  impl_->managers.erase(pipeline);
  impl_->early_control.erase(pipeline);
}

void data_plane::ack(const std::string& from, uint32_t channel, std::vector<uint64_t> ids) {
  capnp::MallocMessageBuilder mb;
  auto a = mb.initRoot<wire::LinkMessage>().initAcks();
  a.setChannel(channel);
  auto list = a.initAcked(static_cast<unsigned>(ids.size()));
  for (unsigned i = 0; i < ids.size(); ++i) list.set(i, ids[i]);
  impl_->answer(from, finish(mb));
}

void data_plane::refuse(const std::string& from, uint32_t channel, std::vector<uint64_t> ids, const std::string& why) {
  capnp::MallocMessageBuilder mb;
  auto a = mb.initRoot<wire::LinkMessage>().initAcks();
  a.setChannel(channel);
  auto list = a.initRetry(static_cast<unsigned>(ids.size()));
  for (unsigned i = 0; i < ids.size(); ++i) list.set(i, ids[i]);
  a.setReason(why);
  impl_->answer(from, finish(mb));
}

void data_plane::set_epoch(const std::string& run, uint64_t epoch) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto& e = impl_->epochs[run];
  e = std::max(e, epoch);
  impl_->newest_epoch = std::max(impl_->newest_epoch, epoch);
}

void data_plane::fence_node(const std::string& node, uint64_t epoch) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto& f = impl_->node_fence[node];
  f = std::max(f, epoch);
}

void data_plane::impl::answer(const std::string& from, out_message m) {
  std::lock_guard<std::mutex> lock(mutex);
  // Without a connection from that node the answer is lost; it sends the frames again when
  // it reconnects, and they are answered again.
  if (auto it = inbound_by_node.find(from); it != inbound_by_node.end()) push(*it->second, std::move(m));
}

uint32_t data_plane::open_channel(const std::string& address, const std::string& pipeline, const std::string& stage,
                                  link_channel_actor owner, const std::string& node) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto id = impl_->next_channel++;
  auto& l = impl_->link_to(address, node);
  impl_->channels[id] = {pipeline, stage, std::move(owner), &l};
  std::lock_guard<std::mutex> lk(l.m);
  if (l.fd >= 0) caf::anon_send(impl_->channels[id].owner, link_up_atom::value, l.connection);
  return id;
}

void data_plane::close_channel(uint32_t channel) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->channels.erase(channel);
}

bool data_plane::send(uint32_t channel, std::vector<std::pair<uint64_t, frame>>&& frames) {
  impl::peer_link* l = nullptr;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    auto it = impl_->channels.find(channel);
    if (it == impl_->channels.end()) return false;
    l = it->second.link;
  }
  std::lock_guard<std::mutex> lk(l->m);
  bool was_empty = l->q.empty();  // the writer waits only on an empty queue
  for (auto& [id, f] : frames) {
    impl::item i;
    i.channel = channel;
    i.id = id;
    i.f = std::move(f);
    l->q.push_back(std::move(i));
  }
  if (was_empty && !frames.empty()) l->cv.notify_one();
  return true;
}

void data_plane::control(const std::string& address, const std::string& pipeline, control_kind what,
                         const std::string& stage, const std::string& node) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto& l = impl_->link_to(address, node);
  std::lock_guard<std::mutex> lk(l.m);
  impl::item i;
  i.is_frame = false;
  i.pipeline = pipeline;
  i.what = what;
  i.stage = stage;
  l.sent_control.push_back(i);
  l.q.push_back(std::move(i));
  l.cv.notify_one();
}

void data_plane::fenced(const std::string& from, const std::string& pipeline, size_t frames, const std::string& why) {
  if (impl_->fenced_frames)
    impl_->fenced_frames->Add({{"node", impl_->o.node}, {"peer", from}}).Increment(double(frames));
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (!impl_->fenced_logged.insert(from + '\0' + pipeline).second) return;  // said once
  }
  spdlog::warn("[node={}] dropped {} frames of pipeline run '{}' from node {}: {} (fenced)", impl_->o.node, frames,
               pipeline, from, why);
}

const char* to_string(control_kind k) {
  switch (k) {
    case control_kind::finished: return "finished";
    case control_kind::end: return "end";
  }
  return "?";
}

void data_plane::cut_connections() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (auto& [a, l] : impl_->links) {
    std::lock_guard<std::mutex> lk(l->m);
    if (l->fd >= 0) ::shutdown(l->fd, SHUT_RDWR);
  }
  for (auto& in : impl_->inbounds) ::shutdown(in->fd, SHUT_RDWR);
}

}  // namespace troupe
