#include "link_impl.hpp"

namespace troupe {

// -- the plane ---------------------------------------------------------------------------------

void data_plane::impl::stop() {
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
