// The data plane's inbound side (link_impl.hpp): connections peers open here, their hello,
// the batches they bring and the answers sent back.
#include "link_impl.hpp"

namespace troupe {

void data_plane::impl::accept_loop() {
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

std::string data_plane::impl::over_limit(const std::string& address) {
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

void data_plane::impl::refuse_connection(int fd, const std::string& address, const std::string& why) {
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

void data_plane::impl::reap() {
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

void data_plane::impl::inbound_writer(inbound& in) {
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

void data_plane::impl::push(inbound& in, out_message m) {
  std::lock_guard<std::mutex> lk(in.m);
  if (in.closed) return;
  in.q.push_back(std::move(m));
  in.cv.notify_one();
}

void data_plane::impl::inbound_reader(inbound& in) {
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

void data_plane::impl::serve_inbound(inbound& in) {
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

bool data_plane::impl::dispatch(inbound& in, in_message& m, std::string& why) {
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
        if (auto bad = link_wire::decode_frames(fr.getBatch(), m.payload, m.payload_bytes, b.frames)) {
          why = std::move(*bad);
          return false;
        }
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

}  // namespace troupe
