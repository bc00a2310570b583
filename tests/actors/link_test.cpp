// Frames across nodes, in one process: two data planes on loopback, and a manager per node
// running its part of a pipeline placed across both. The sink must take what a single-node
// run gives it, each frame once, also when the connections drop under it.
#include "pipeline_runner.hpp"

#include <troupe/link.hpp>
#include <troupe/remote.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

using namespace troupe;
using namespace troupe::test;
using namespace std::chrono_literals;

namespace {

std::string chain(int count, int rate, int replicas = 2) {
  return "pipeline: across\n"
         "window: 8\n"
         "stages:\n"
         "  - {name: source, plugin: testsrc, config: {width: 64, height: 36, count: " +
         std::to_string(count) + ", streams: 4, rate: " + std::to_string(rate) +
         "}}\n"
         "  - {name: invert, plugin: invert, routing: by_stream, replicas: " +
         std::to_string(replicas) +
         "}\n"
         "  - {name: sink, plugin: checksum, config: {output: \"{dir}/sum.txt\", frames_log: \"{dir}/frames.txt\"}}\n"
         "edges: [\"source -> invert -> sink\"]\n";
}

// The sum of a family's series (those with label stage=`stage`, if given).
double family_total(const prometheus::Collectable& r, const std::string& name, const std::string& stage = {}) {
  double total = 0;
  for (auto& f : r.Collect())
    if (f.name == name)
      for (auto& m : f.metric) {
        bool match = stage.empty();
        for (auto& l : m.label) match = match || (l.name == "stage" && l.value == stage);
        if (match) total += f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
      }
  return total;
}

std::shared_ptr<data_plane> start_plane(const std::string& node, const std::string& token,
                                        std::shared_ptr<prometheus::Registry> registry,
                                        std::optional<link_io::tls_pems> tls = std::nullopt) {
  link_options o;
  o.node = node;
  o.token = token;
  o.listen = "127.0.0.1:0";
  o.registry = std::move(registry);
  o.tls = std::move(tls);
  auto p = data_plane::start(std::move(o));
  if (!p) throw std::runtime_error(describe(p.error()));
  return *p;
}

struct across_result {
  bool completed_a = false, completed_b = false, ok = true, stopped = true;
  std::shared_ptr<prometheus::Registry> registry_a, registry_b;  // the data planes'
  std::vector<std::shared_ptr<metrics>> instances;               // per node, the instances'
  std::vector<std::shared_ptr<slot_registry>> slots;             // per node (their series live as long)
};

using nodes_map = std::map<std::string, std::vector<std::string>>;
using tls_map = std::map<std::string, link_io::tls_pems>;  // node -> its TLS files
const nodes_map invert_on_b{{"source", {"a"}}, {"invert", {"b"}}, {"sink", {"a"}}};

// Runs the pipeline with source and sink on node a and invert on node b; `during` is called
// every few milliseconds with both planes until both managers report the pipeline done.
across_result run_across(const temp_dir& dir, std::string yaml,
                         std::function<void(data_plane&, data_plane&)> during = {},
                         const nodes_map& nodes_of = invert_on_b, const tls_map& tls = {}) {
  for (size_t p; (p = yaml.find("{dir}")) != std::string::npos;) yaml.replace(p, 5, dir.path().string());
  auto spec = load_pipeline(dir.write("pipeline.yaml", yaml));
  if (!spec) throw std::runtime_error(describe(spec.error()));
  auto cat = catalog::discover({plugin_dir()});
  across_result r;
  r.registry_a = std::make_shared<prometheus::Registry>();
  r.registry_b = std::make_shared<prometheus::Registry>();
  auto tls_of = [&](const std::string& n) {
    auto it = tls.find(n);
    return it == tls.end() ? std::nullopt : std::optional<link_io::tls_pems>(it->second);
  };
  auto pa = start_plane("a", "t", r.registry_a, tls_of("a"));
  auto pb = start_plane("b", "t", r.registry_b, tls_of("b"));
  std::map<std::string, std::string> addresses{{"a", pa->address()}, {"b", pb->address()}};
  caf::actor_system sys{test_config()};
  {
    executor ex(2);
    caf::scoped_actor self{sys};
    std::vector<manager_actor> managers;
    auto& ms = r.instances;
    for (auto& [node, plane] : {std::pair{std::string("a"), pa}, std::pair{std::string("b"), pb}}) {
      placement where{node, nodes_of};
      auto planned = plan_pipeline(*spec, cat, &where);
      if (!planned) throw std::runtime_error(describe(planned.error()));
      auto p = std::make_shared<const plan>(std::move(*planned));
      ms.push_back(std::make_shared<metrics>());
      manager_setup s;
      s.plan = p;
      s.slots = std::make_shared<slot_registry>(*ms.back(), make_slots(*p, *ms.back()));
      r.slots.push_back(s.slots);
      auto libs = load_libraries(*p, test_launcher());
      if (!libs) throw std::runtime_error(describe(libs.error()));
      s.libraries = *libs;
      s.executor = &ex;
      s.launcher = test_launcher();
      s.listener = caf::actor_cast<listener_actor>(self);
      s.node = node;
      s.plane = plane;
      s.data_address = addresses;
      managers.push_back(spawn_manager(sys, std::move(s)));
    }
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!(r.completed_a && r.completed_b) && std::chrono::steady_clock::now() < deadline) {
      self->receive(
          [&](completed_atom, pipeline_outcome& o) {
            r.ok = r.ok && o.ok;
            (self->current_sender() == managers[0] ? r.completed_a : r.completed_b) = true;
          },
          caf::after(5ms) >> [] {});
      if (during) during(*pa, *pb);
    }
    for (auto& m : managers) self->send(m, stop_atom::value);
    int stopped = 0;
    self->receive_for(stopped, 2)([&](stopped_atom) {}, [&](completed_atom, pipeline_outcome&) { --stopped; });
    for (auto& m : managers) self->wait_for(m);
  }
  return r;
}

// Certificates made with the openssl tool in dir: a CA of the cluster ("ca"), one of no one
// ("rogue"), and certificates signed by either for the given names.
class test_pki {
 public:
  explicit test_pki(const temp_dir& dir) : dir_(dir) {
    for (auto ca : {"ca", "rogue"})
      run(std::string("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ") + ca +
          ".key -out " + ca + ".pem -days 2 -subj /CN=" + ca +
          " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign");
  }
  /// A certificate for name (its file stem: file), signed by ca.
  link_io::tls_pems issue(const std::string& name, const std::string& ca = "ca", std::string file = {}) {
    if (file.empty()) file = name;
    run("openssl req -x509 -CA " + ca + ".pem -CAkey " + ca + ".key -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 " +
        "-nodes -keyout " + file + ".key -out " + file + ".pem -days 2 -subj /CN=" + name +
        " -addext subjectAltName=DNS:" + name +
        " -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth,clientAuth");
    return {read("ca.pem"), read(file + ".pem"), read(file + ".key")};
  }

 private:
  void run(const std::string& command) {
    auto full = "cd '" + dir_.path().string() + "' && " + command + " 2>/dev/null";
    if (std::system(full.c_str()) != 0) throw std::runtime_error("failed: " + command);
  }
  std::string read(const std::string& file) {
    std::ifstream in(dir_.path() / file);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  const temp_dir& dir_;
};

// troupe_link_bad_messages_total once it reaches n, or after about three seconds.
double wait_for_bad(const prometheus::Registry& r, double n) {
  auto bad = [&] { return family_total(r, "troupe_link_bad_messages_total"); };
  for (int i = 0; i < 300 && bad() < n; ++i) std::this_thread::sleep_for(10ms);
  return bad();
}

// Sends frame 7 from plane `from` to a stage `to` does not serve; the numbers `to` answers to
// send again (empty if no answer came).
std::vector<uint64_t> answer_to_one_frame(data_plane& from, data_plane& to, caf::scoped_actor& self,
                                          const std::string& node = {}) {
  frame f;
  f.stream = 1;
  f.seq = 1;
  auto ch = from.open_channel(to.address(), "p", "s", caf::actor_cast<link_channel_actor>(self), node);
  from.send(ch, 7, f);
  std::vector<uint64_t> retry;
  bool answered = false;
  for (int i = 0; i < 3 && !answered; ++i)
    self->receive([&](link_up_atom, uint64_t) { from.send(ch, 7, f); },
                  [&](link_acks_atom, std::vector<uint64_t>&, std::vector<uint64_t>& r) { retry = r, answered = true; },
                  caf::after(2s) >> [] {});
  return retry;
}

frames_log single_node_run(int count) {
  temp_dir d;
  auto p = plan_yaml(d, chain(count, 0));
  if (!p) throw std::runtime_error(describe(p.error()));
  auto r = run_pipeline(*p);
  EXPECT_TRUE(r.completed && r.outcome.ok) << r.outcome.reason;
  return read_frames_log((d.path() / "frames.txt").string());
}

}  // namespace

TEST(link, frames_cross_nodes_as_on_one) {
  auto want = single_node_run(25);
  ASSERT_EQ(want.hashes.size(), 100u);
  temp_dir d;
  auto r = run_across(d, chain(25, 0));
  ASSERT_TRUE(r.completed_a && r.completed_b) << "both nodes finish the pipeline";
  EXPECT_TRUE(r.ok);
  auto got = read_frames_log((d.path() / "frames.txt").string());
  EXPECT_EQ(got.hashes, want.hashes);
  EXPECT_EQ(got.repeated, 0u);
  // Every frame went a -> b and back b -> a, in batches over one connection each way.
  EXPECT_GE(family_total(*r.registry_a, "troupe_link_frames_sent_total"), 100);
  EXPECT_GE(family_total(*r.registry_b, "troupe_link_frames_sent_total"), 100);
  EXPECT_GE(family_total(*r.registry_a, "troupe_link_bytes_received_total"), 100.0 * 64 * 36 * 3);
  EXPECT_EQ(family_total(*r.registry_a, "troupe_link_connects_total"), 1);
}

TEST(link, resumes_without_loss_or_repeat_when_connections_drop) {
  constexpr int count = 300;
  auto want = single_node_run(count);
  temp_dir d;
  int cuts = 0;
  auto last = std::chrono::steady_clock::now();
  auto r = run_across(d, chain(count, 1500), [&](data_plane& a, data_plane& b) {
    if (cuts >= 12 || std::chrono::steady_clock::now() - last < 15ms) return;
    last = std::chrono::steady_clock::now();
    (cuts++ % 2 == 0 ? a : b).cut_connections();
  });
  ASSERT_TRUE(r.completed_a && r.completed_b) << "both nodes finish the pipeline";
  EXPECT_TRUE(r.ok);
  EXPECT_GE(cuts, 6) << "the run outlasted several cuts";
  auto got = read_frames_log((d.path() / "frames.txt").string());
  EXPECT_EQ(got.hashes.size(), want.hashes.size());
  EXPECT_EQ(got.hashes, want.hashes);
  EXPECT_EQ(got.repeated, 0u) << "a frame sent again after a reconnect reached the sink twice";
  EXPECT_GT(family_total(*r.registry_a, "troupe_link_connects_total") +
                family_total(*r.registry_b, "troupe_link_connects_total"),
            2)
      << "the links reconnected";
}

TEST(link, closes_garbage_and_refuses_a_wrong_token_and_goes_on_serving) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto a = start_plane("a", "t", registry);
  auto wait_bad = [&](double n) { return wait_for_bad(*registry, n); };
  // Not a data link message at all.
  {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(std::stoi(a->address().substr(a->address().rfind(':') + 1))));
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    std::string junk(64, 'x');
    ASSERT_EQ(::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL), 64);
    EXPECT_EQ(wait_bad(1), 1);
    char c;
    EXPECT_LE(::recv(fd, &c, 1, 0), 0) << "the node closed the connection";
    ::close(fd);
  }
  caf::actor_system sys{test_config()};
  caf::scoped_actor self{sys};
  frame f;
  f.stream = 1;
  f.seq = 1;
  // A node with another token is refused.
  {
    auto c = start_plane("c", "other", nullptr);
    auto ch = c->open_channel(a->address(), "p", "s", caf::actor_cast<link_channel_actor>(self));
    c->send(ch, 1, f);
    EXPECT_GE(wait_bad(2), 2);
  }
  // A node with the token is served: its frames for a stage not served there are answered
  // "send again later".
  auto b = start_plane("b", "t", nullptr);
  EXPECT_EQ(answer_to_one_frame(*b, *a, self), std::vector<uint64_t>{7}) << "frame 7 to be sent again";
}

TEST(link, a_stage_on_two_nodes_shares_the_frames_and_loses_none) {
  auto want = single_node_run(50);
  temp_dir d;
  // invert runs one replica on each node; by_stream keeps each stream on one of them.
  auto r = run_across(d, chain(50, 0, 1), {}, {{"source", {"a"}}, {"invert", {"a", "b"}}, {"sink", {"a"}}});
  ASSERT_TRUE(r.completed_a && r.completed_b) << "both nodes finish the pipeline";
  EXPECT_TRUE(r.ok);
  auto got = read_frames_log((d.path() / "frames.txt").string());
  EXPECT_EQ(got.hashes, want.hashes);
  EXPECT_EQ(got.repeated, 0u);
  auto on_a = family_total(*r.instances[0]->collectable(), "troupe_instance_frames_in_total", "invert");
  auto on_b = family_total(*r.instances[1]->collectable(), "troupe_instance_frames_in_total", "invert");
  EXPECT_EQ(on_a + on_b, 200);
  EXPECT_EQ(on_a, 100) << "two of the four streams stay on node a";
  EXPECT_EQ(on_b, 100) << "and two go to node b";
}

TEST(link, frames_cross_nodes_over_mutual_tls_as_on_one_also_when_connections_drop) {
  constexpr int count = 150;
  auto want = single_node_run(count);
  temp_dir d;
  test_pki pki(d);
  tls_map tls{{"a", pki.issue("a")}, {"b", pki.issue("b")}};
  int cuts = 0;
  auto last = std::chrono::steady_clock::now();
  auto r = run_across(
      d, chain(count, 1500),
      [&](data_plane& a, data_plane& b) {
        if (cuts >= 6 || std::chrono::steady_clock::now() - last < 15ms) return;
        last = std::chrono::steady_clock::now();
        (cuts++ % 2 == 0 ? a : b).cut_connections();
      },
      invert_on_b, tls);
  ASSERT_TRUE(r.completed_a && r.completed_b) << "both nodes finish the pipeline";
  EXPECT_TRUE(r.ok);
  auto got = read_frames_log((d.path() / "frames.txt").string());
  EXPECT_EQ(got.hashes, want.hashes);
  EXPECT_EQ(got.repeated, 0u);
  EXPECT_GE(family_total(*r.registry_a, "troupe_link_bytes_received_total"), 1.0 * count * 4 * 64 * 36 * 3);
  EXPECT_EQ(family_total(*r.registry_a, "troupe_link_bad_messages_total"), 0);
  EXPECT_EQ(family_total(*r.registry_b, "troupe_link_bad_messages_total"), 0);
}

TEST(link, a_tls_port_refuses_plain_peers_other_cas_and_borrowed_names) {
  temp_dir d;
  test_pki pki(d);
  log_capture logs;
  auto registry = std::make_shared<prometheus::Registry>();
  auto a = start_plane("a", "t", registry, pki.issue("a"));
  auto wait_bad = [&](double n) { return wait_for_bad(*registry, n); };
  caf::actor_system sys{test_config()};
  caf::scoped_actor self{sys};
  frame f;
  f.stream = 1;
  f.seq = 1;
  // A node without TLS.
  {
    auto plain = start_plane("p", "t", nullptr);
    plain->send(plain->open_channel(a->address(), "p", "s", caf::actor_cast<link_channel_actor>(self), "a"), 1, f);
    EXPECT_EQ(wait_bad(1), 1);
    EXPECT_TRUE(logs.saw("not a TLS handshake (a plain connection? this port takes TLS only)"));
    EXPECT_TRUE(logs.saw("give this node a 'tls' section too"));
  }
  // A node whose certificate another CA signed: the handshake fails on both sides.
  {
    auto rogue = start_plane("r", "t", nullptr, pki.issue("r", "rogue"));
    rogue->send(rogue->open_channel(a->address(), "p", "s", caf::actor_cast<link_channel_actor>(self), "a"), 1, f);
    EXPECT_GE(wait_bad(2), 2);
    EXPECT_TRUE(logs.saw("the peer's certificate is not trusted"));
  }
  // A node of the cluster that says it is another: its certificate does not carry that name.
  {
    auto borrowed = pki.issue("c");
    auto liar = start_plane("b", "t", nullptr, borrowed);
    liar->send(liar->open_channel(a->address(), "p", "s", caf::actor_cast<link_channel_actor>(self), "a"), 1, f);
    EXPECT_GE(wait_bad(3), 3);
    EXPECT_TRUE(logs.saw("its certificate does not carry the name of node 'b'"));
  }
  // A sender that expects another node at the address refuses a's certificate.
  {
    auto b = start_plane("b", "t", nullptr, pki.issue("b"));
    b->send(b->open_channel(a->address(), "p", "s", caf::actor_cast<link_channel_actor>(self), "x"), 1, f);
    EXPECT_TRUE(logs.saw("hostname mismatch"));
  }
  // A node with TLS sending to one without: named there.
  {
    auto plain_registry = std::make_shared<prometheus::Registry>();
    auto plain = start_plane("p", "t", plain_registry);
    auto b = start_plane("b", "t", nullptr, pki.issue("b"));
    b->send(b->open_channel(plain->address(), "p", "s", caf::actor_cast<link_channel_actor>(self), "p"), 1, f);
    EXPECT_TRUE(logs.saw("a TLS handshake, but this data port takes plain connections"));
    EXPECT_GE(family_total(*plain_registry, "troupe_link_bad_messages_total"), 1);
  }
  // The cluster's own node is served, over TLS: its frames for a stage not served there are
  // answered "send again later".
  auto b = start_plane("b", "t", nullptr, pki.issue("b"));
  EXPECT_EQ(answer_to_one_frame(*b, *a, self, "a"), std::vector<uint64_t>{7}) << "frame 7 to be sent again";
}

TEST(link, a_tls_plane_names_the_file_openssl_refuses) {
  temp_dir d;
  test_pki pki(d);
  auto a = pki.issue("a");
  auto b = pki.issue("b");
  link_options o;
  o.node = "a";
  o.listen = "127.0.0.1:0";
  o.tls = link_io::tls_pems{a.ca, a.cert, b.key};
  auto p = data_plane::start(o);
  ASSERT_FALSE(p);
  EXPECT_NE(describe(p.error()).find("tls: key: it is not the certificate's key"), std::string::npos)
      << describe(p.error());
  o.tls = link_io::tls_pems{"", a.cert, a.key};
  p = data_plane::start(o);
  ASSERT_FALSE(p);
  EXPECT_NE(describe(p.error()).find("tls: ca: no certificate in it"), std::string::npos) << describe(p.error());
}
