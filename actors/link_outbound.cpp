// The data plane's outbound side (link_impl.hpp): connections this node opens to its peers,
// the batches written on them and the acknowledgements read back.
#include "link_impl.hpp"

namespace troupe {

data_plane::impl::peer_link& data_plane::impl::link_to(const std::string& address, const std::string& node) {
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

std::unique_ptr<stream> data_plane::impl::connect_to(const std::string& address, const std::string& node,
                                                     std::string& why) {
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

void data_plane::impl::notify_up(peer_link& l, uint64_t connection) {
  std::vector<link_channel_actor> owners;
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto& [id, c] : channels)
      if (c.link == &l) owners.push_back(c.owner);
  }
  for (auto& o : owners) caf::anon_send(o, link_up_atom::value, connection);
}

void data_plane::impl::writer_loop(peer_link& l) {
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
      auto size = l.q.front().f.payload.size();
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

void data_plane::impl::disconnect(peer_link& l, std::unique_lock<std::mutex>& lk) {
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

bool data_plane::impl::write_items(peer_link& l, stream& s, std::vector<item>& items) {
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
      b.setSize(f.payload.size());
      if (f.payload.size() > 0) {
        pieces.push_back({const_cast<uint8_t*>(f.payload.data()), f.payload.size()});
        payload += f.payload.size();
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

void data_plane::impl::link_reader(peer_link& l, stream& s) {
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

}  // namespace troupe
