// The data plane: frames of a pipeline's edges that cross nodes (schema/link.capnp).
//
// Each node has one data_plane. It listens on the node's data address; every peer that
// sends to it opens one connection, says hello (cluster token, protocol) and then sends
// batches of frames per channel and pipeline control. The receiver hands each batch to the
// actor serving the pipeline stage (the stage's ingress), and sends back the numbers of
// the frames that stage's instances have acknowledged. A sender keeps one connection per
// peer address: frames queue there, a writer thread batches what has queued (payloads
// written straight from the frames' buffers) and reconnects with backoff when the
// connection drops, after which every channel's owner sends again what is unacknowledged.
//
// Threads: one accepting thread, a reader and a writer per connection. Actors talk to the
// plane by calling it (it only queues) and hear from it by messages:
//   channel owner:  (link_acks_atom, acked ids, retry ids), (link_up_atom, connection number)
//                   after a connect (once per connection)
//   stage ingress:  (link_frames_atom, link_batch)
//   pipeline:       (link_control_atom, link_control)
//
// Epochs (schema/link.capnp): what this node sends for a pipeline run carries the placement
// revision set with set_epoch; a node fenced at a revision (fence_node) is refused at hello
// until it says it acts on a newer one, and a stage's ingress drops and asks again for
// batches it sends under a revision at or below its fence.
#pragma once

#include <troupe/error.hpp>
#include <troupe/frame.hpp>
#include <troupe/link_tls.hpp>

#include <prometheus/registry.h>
#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace troupe {

using link_frames_atom = caf::atom_constant<caf::atom("lframes")>;
using link_acks_atom = caf::atom_constant<caf::atom("lacks")>;
using link_up_atom = caf::atom_constant<caf::atom("lup")>;
using link_control_atom = caf::atom_constant<caf::atom("lcontrol")>;

/// Frames that arrived on one channel from one node, with the sender's numbers.
struct link_batch {
  std::string from;  // the sending node
  uint32_t channel = 0;
  uint64_t epoch = 0;  // the placement revision the sender acted on
  std::vector<std::pair<uint64_t, frame>> frames;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, link_batch& x) {
  return f(caf::meta::type_name("link_batch"), x.from, x.channel, x.epoch, x.frames);
}

/// Pipeline control between the nodes running parts of it.
enum class control_kind : uint8_t {
  finished,  // a stage finished on the sending node
  end,       // drain: the sources end their streams
};
const char* to_string(control_kind k);

struct link_control {
  control_kind kind = control_kind::finished;
  std::string stage;  // finished: which
  std::string from;   // the sending node
  uint64_t epoch = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, link_control& x) {
  return f(caf::meta::type_name("link_control"), x.kind, x.stage, x.from, x.epoch);
}

/// Whom the data link delivers to (data_plane), each what it takes:
/// the ingress of a stage served here: the frames that arrived for it
using link_ingress_actor = caf::typed_actor<caf::reacts_to<link_frames_atom, link_batch>>;
/// a pipeline's manager: control from the managers on other nodes
using link_control_actor = caf::typed_actor<caf::reacts_to<link_control_atom, link_control>>;
/// the owner of a channel: (acked, retry) numbers, and (connection) once a link is up again
using link_channel_actor =
    caf::typed_actor<caf::reacts_to<link_acks_atom, std::vector<uint64_t>, std::vector<uint64_t>>,
                     caf::reacts_to<link_up_atom, uint64_t>>;

struct link_options {
  std::string node;    // this node's name
  std::string token;   // the cluster token both sides must present
  std::string listen;  // host:port to accept on; port 0 picks one
  uint64_t incarnation = 0;
  std::shared_ptr<prometheus::Registry> registry;  // null: no metrics
  // With it, every connection both ways is TLS with certificates from the cluster's CA, and a
  // plain one is refused; without it, frames go in clear text.
  std::optional<link_io::tls_pems> tls;
};

class data_plane {
 public:
  /// Listens and starts the accepting thread; an error names the address (or the TLS file that
  /// OpenSSL refused).
  static expected<std::shared_ptr<data_plane>> start(link_options o);
  /// Closes every connection and joins every thread.
  ~data_plane();
  data_plane(const data_plane&) = delete;
  data_plane& operator=(const data_plane&) = delete;

  /// The address it listens on, with the port it got.
  std::string address() const;
  const std::string& node() const;

  // -- receiving ---------------------------------------------------------------------------

  /// Frames for (pipeline, stage) go to ingress. Until a stage is served, its frames are
  /// answered "retry" and sent again later.
  void serve(const std::string& pipeline, const std::string& stage, link_ingress_actor ingress);
  /// Control for a pipeline goes to manager; what came before it was served is handed
  /// over now.
  void serve_control(const std::string& pipeline, link_control_actor manager);
  /// Forgets a pipeline's ingresses and manager (its control is still sent again on a
  /// reconnect for a while, in case the last connection lost it).
  void unserve(const std::string& pipeline);
  /// The frames numbered ids on a channel from a node were acknowledged end to end.
  void ack(const std::string& from, uint32_t channel, std::vector<uint64_t> ids);
  /// Frames numbered ids on a channel from a node are not taken now (why, for the sender's
  /// log): the sender sends them again later.
  void refuse(const std::string& from, uint32_t channel, std::vector<uint64_t> ids, const std::string& why);

  // -- epochs ------------------------------------------------------------------------------

  /// The placement revision this node acts on for a pipeline run (only grows).
  void set_epoch(const std::string& run, uint64_t epoch);
  /// A node lost stages at this revision: until it acts on a newer one, its hello is refused.
  void fence_node(const std::string& node, uint64_t epoch);

  // -- sending -----------------------------------------------------------------------------

  /// A channel to a stage on the node at address; owner hears its acks and reconnects. With
  /// TLS, the certificate there must name node (if given).
  uint32_t open_channel(const std::string& address, const std::string& pipeline, const std::string& stage,
                        link_channel_actor owner, const std::string& node = {});
  void close_channel(uint32_t channel);
  /// Queues frames (with their numbers), in order; false if the channel is closed.
  bool send(uint32_t channel, std::vector<std::pair<uint64_t, frame>>&& frames);
  bool send(uint32_t channel, uint64_t id, const frame& f) {
    std::vector<std::pair<uint64_t, frame>> one;
    one.emplace_back(id, f);
    return send(channel, std::move(one));
  }
  /// Queues pipeline control for the node at address (named node); it is kept across reconnects.
  void control(const std::string& address, const std::string& pipeline, control_kind what, const std::string& stage,
               const std::string& node = {});

  /// Frames from a node that no longer runs the stage that sent them, or that sent them under
  /// a placement revision at or below its fence: dropped, counted (why: for the log, once).
  void fenced(const std::string& from, const std::string& pipeline, size_t frames, const std::string& why);

  /// Drops every connection, both ways, as a network fault would: senders reconnect and send
  /// again what is unacknowledged (a node whose instances were stopped and started again in
  /// the same placement has them take it anew).
  void cut_connections();

  struct impl;

 private:
  explicit data_plane(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe
