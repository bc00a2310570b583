// Frames between two nodes on loopback: throughput of the data link (schema/link.capnp) for
// 64-byte and 6 MB frames, with every frame acknowledged end to end by the receiving actor
// and at most `window` frames unacknowledged, next to a plain TCP socket pump measured in
// the same run (one writer thread, one reader thread, the same bytes with a 16-byte header
// per frame, no acknowledgements, the reader's buffer reused). Then the same through the
// runtime's actors: an upstream sender on node a, the remote stage actor, the link, node
// b's ingress and a pass-through plugin instance, whose outputs a sink acknowledges (so each
// frame is acknowledged back to node a only once the sink has it). And the data link with TLS
// on both ends (certificates made with the openssl tool), against the plain link in the same run.
//
//   build/tests/bench/link_bench [seconds per figure, default 2] [runtime window for 64 B, default 256]
//                                [window for 6 MB, default 16]
#include "bench_actors.hpp"

#include <troupe/catalog.hpp>
#include <troupe/executor.hpp>
#include <troupe/instance.hpp>
#include <troupe/link.hpp>
#include <troupe/manager.hpp>
#include <troupe/remote.hpp>

#include <caf/all.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <thread>
#include <vector>

using namespace troupe;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_per_figure = 2.0;
uint32_t small_window = 256, large_window = 16;  // the pipeline's window for 64 B and 6 MB frames

struct figure {
  double frames_per_s = 0, bytes_per_s = 0;
};

// -- the plain socket pump ---------------------------------------------------------------------

figure socket_pump(size_t frame_size) {
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  ::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  ::listen(lfd, 1);
  socklen_t len = sizeof sa;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);
  int wfd = ::socket(AF_INET, SOCK_STREAM, 0);
  ::connect(wfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  int rfd = ::accept(lfd, nullptr, nullptr);
  int one = 1;
  setsockopt(wfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bytes_read{0};
  const size_t unit = frame_size + 16;
  // Small frames go many to a write, as any sender of small messages would batch them.
  const size_t per_write = std::max<size_t>(1, (256 * 1024) / unit);
  std::thread writer([&] {
    std::vector<uint8_t> buf(unit * per_write, 0x5a);
    while (!stop.load())
      for (size_t at = 0; at < buf.size();) {
        auto w = ::send(wfd, buf.data() + at, buf.size() - at, MSG_NOSIGNAL);
        if (w <= 0) return;
        at += static_cast<size_t>(w);
      }
  });
  std::thread reader([&] {
    std::vector<uint8_t> buf(std::max<size_t>(unit, 1 << 20));
    while (true) {
      auto r = ::recv(rfd, buf.data(), buf.size(), 0);
      if (r <= 0) return;
      bytes_read.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // warm up
  auto b0 = bytes_read.load();
  auto t0 = clock_type::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds_per_figure));
  auto b1 = bytes_read.load();
  double s = std::chrono::duration<double>(clock_type::now() - t0).count();
  stop.store(true);
  ::shutdown(wfd, SHUT_RDWR);
  ::shutdown(rfd, SHUT_RDWR);
  writer.join();
  reader.join();
  ::close(wfd);
  ::close(rfd);
  ::close(lfd);
  figure f;
  f.bytes_per_s = static_cast<double>(b1 - b0) * frame_size / unit / s;
  f.frames_per_s = static_cast<double>(b1 - b0) / unit / s;
  return f;
}

// -- the data link -------------------------------------------------------------------------------

caf::behavior acking_sink(caf::event_based_actor*, std::shared_ptr<data_plane> plane,
                          std::shared_ptr<std::atomic<uint64_t>> frames) {
  return {[=](link_frames_atom, link_batch& b) {
    std::vector<uint64_t> ids;
    ids.reserve(b.frames.size());
    for (auto& [id, f] : b.frames) ids.push_back(id);
    frames->fetch_add(ids.size(), std::memory_order_relaxed);
    plane->ack(b.from, b.channel, std::move(ids));
  }};
}

std::optional<link_io::tls_pems> bench_tls;  // with it, the link figures are over TLS

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A CA and one certificate naming both planes, made with the openssl tool; none if it fails.
std::optional<link_io::tls_pems> make_bench_tls() {
  auto dir = std::filesystem::temp_directory_path() / "troupe-link-bench-tls";
  std::filesystem::create_directories(dir);
  auto cmd = "cd '" + dir.string() +
             "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key "
             "-out ca.pem -days 1 -subj /CN=ca -addext basicConstraints=critical,CA:TRUE "
             "-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null && openssl req -x509 -CA ca.pem -CAkey ca.key "
             "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout n.key -out n.pem -days 1 -subj /CN=a "
             "-addext subjectAltName=DNS:a,DNS:b -addext extendedKeyUsage=serverAuth,clientAuth 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) return std::nullopt;
  return link_io::tls_pems{slurp(dir / "ca.pem"), slurp(dir / "n.pem"), slurp(dir / "n.key")};
}

std::shared_ptr<data_plane> start_plane(const std::string& node) {
  link_options o;
  o.node = node;
  o.token = "bench";
  o.listen = "127.0.0.1:0";
  o.tls = bench_tls;
  auto p = data_plane::start(std::move(o));
  if (!p) {
    std::fprintf(stderr, "%s\n", describe(p.error()).c_str());
    std::exit(1);
  }
  return *p;
}

figure link_figure(caf::actor_system& sys, size_t frame_size, uint32_t window) {
  auto a = start_plane("a");
  auto b = start_plane("b");
  auto received = std::make_shared<std::atomic<uint64_t>>(0);
  auto sink = sys.spawn(acking_sink, b, received);
  b->serve("bench", "sink", caf::actor_cast<link_ingress_actor>(sink));
  caf::scoped_actor self{sys};
  auto ch = a->open_channel(b->address(), "bench", "sink", caf::actor_cast<link_channel_actor>(self));
  auto payload = buffer::allocate(frame_size);
  std::memset(payload->data(), 0x5a, frame_size);
  auto f = bench::frame_over(payload, 0, "bench");
  uint64_t next = 0, in_flight = 0, acked = 0;
  bool up = false;
  auto pump = [&] {
    while (up && in_flight < window) {
      f.seq = next;
      a->send(ch, ++next, f);
      ++in_flight;
    }
  };
  auto until = [&](clock_type::time_point end) {
    while (clock_type::now() < end)
      self->receive(
          [&](link_up_atom, uint64_t) {
            up = true;
            pump();
          },
          [&](link_acks_atom, std::vector<uint64_t>& ids, std::vector<uint64_t>&) {
            in_flight -= ids.size();
            acked += ids.size();
            pump();
          },
          caf::after(std::chrono::milliseconds(100)) >> [] {});
  };
  until(clock_type::now() + std::chrono::milliseconds(300));  // connect and warm up
  auto a0 = acked;
  auto t0 = clock_type::now();
  until(t0 + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds_per_figure)));
  double s = std::chrono::duration<double>(clock_type::now() - t0).count();
  figure r;
  r.frames_per_s = static_cast<double>(acked - a0) / s;
  r.bytes_per_s = r.frames_per_s * static_cast<double>(frame_size);
  a->close_channel(ch);
  b->unserve("bench");
  caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
  return r;
}

// -- through the runtime ---------------------------------------------------------------------

figure runtime_figure(caf::actor_system& sys, size_t frame_size, uint32_t runtime_window) {
  auto dir = std::filesystem::temp_directory_path() / "troupe-link-bench";
  std::filesystem::create_directories(dir);
  auto path = (dir / "bench.yaml").string();
  std::ofstream(path) << "pipeline: bench\nwindow: " << runtime_window
                      << "\nstages:\n  - {name: src, plugin: testsrc}\n"
                         "  - {name: pass, plugin: passthrough}\n  - {name: sink, plugin: checksum}\n"
                         "edges: [\"src -> pass -> sink\"]\n";
  auto spec = load_pipeline(path);
  auto p = spec ? plan_pipeline(*spec, catalog::discover({TROUPE_PLUGIN_OUTPUT_DIR})) : expected<plan>(spec.error());
  if (!p) {
    std::fprintf(stderr, "%s\n", describe(p.error()).c_str());
    std::exit(1);
  }
  auto pl = std::make_shared<const plan>(std::move(*p));
  auto libs = load_libraries(*pl, nullptr);  // embedded stages only
  if (!libs) {
    std::fprintf(stderr, "%s\n", describe(libs.error()).c_str());
    std::exit(1);
  }
  metrics m;
  auto slots = make_slots(*pl, m);
  executor ex(2);
  auto a = start_plane("a");
  auto b = start_plane("b");
  caf::scoped_actor self{sys};
  auto count = std::make_shared<std::atomic<uint64_t>>(0);
  auto sink =
      sys.spawn(bench::acking_sink,
                std::function<void(uint64_t)>([count](uint64_t k) { count->fetch_add(k, std::memory_order_relaxed); }));
  // Node b: the pass-through instance, fed by the ingress.
  instance_setup is;
  is.slot = 1;
  is.stage = 1;
  is.plan = pl;
  is.stats = slots[1];
  is.library = (*libs)[1];
  is.executor = &ex;
  is.manager = caf::actor_cast<supervisor_actor>(self);
  is.node = "b";
  is.end_to_end = true;  // as a node's manager runs it: inputs from another node are held until their outputs are acked
  is.routes.edges.push_back(make_edge(2, route_policy::round_robin, {{caf::actor_cast<receiver_actor>(sink)}}));
  auto pass = spawn_instance(sys, std::move(is));
  self->send(pass, start_atom::value);
  int reports = 0;
  self->receive_for(reports, 2)([](report_atom, instance_report&) {});  // started, running
  ingress_setup ig;
  ig.plane = b;
  ig.window = pl->window;
  ig.run = "bench";
  ig.fence.senders = {"a"};
  ig.routes.edges.push_back(make_edge(1, route_policy::round_robin, {{pass}}));
  auto ingress = spawn_ingress(sys, std::move(ig));
  b->serve("bench", "pass", ingress);
  // Node a: the remote stage, fed by an upstream sender.
  remote_stage_setup rs;
  rs.manager = caf::actor_cast<supervisor_actor>(self);
  rs.plane = a;
  rs.address = b->address();
  rs.pipeline = "bench";
  rs.stage = "pass";
  auto remote = spawn_remote_stage(sys, std::move(rs));
  self->send(remote, start_atom::value);
  reports = 0;
  self->receive_for(reports, 2)([](report_atom, instance_report&) {});
  auto payload = buffer::allocate(frame_size);
  std::memset(payload->data(), 0x5a, frame_size);
  auto feed = sys.spawn(bench::feeder, remote, payload, pl->window, UINT64_MAX);
  self->send(feed, bench::go_atom::value);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // connect and warm up
  auto c0 = count->load();
  auto t0 = clock_type::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds_per_figure));
  auto c1 = count->load();
  double s = std::chrono::duration<double>(clock_type::now() - t0).count();
  self->send_exit(feed, caf::exit_reason::user_shutdown);
  self->wait_for(feed);
  self->send(remote, stop_atom::value);
  self->send(pass, stop_atom::value);
  self->wait_for(pass);
  b->unserve("bench");
  for (auto& x : {caf::actor_cast<caf::actor>(remote), caf::actor_cast<caf::actor>(ingress), sink})
    self->send_exit(x, caf::exit_reason::user_shutdown);
  self->wait_for(remote, ingress, sink);
  figure r;
  r.frames_per_s = static_cast<double>(c1 - c0) / s;
  r.bytes_per_s = r.frames_per_s * static_cast<double>(frame_size);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) seconds_per_figure = std::atof(argv[1]);
  if (argc > 2) small_window = static_cast<uint32_t>(std::atoi(argv[2]));
  if (argc > 3) large_window = static_cast<uint32_t>(std::atoi(argv[3]));
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", size_t{2});
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  std::printf("Frames between two data planes on loopback (one machine, both ends), %.1f s per figure\n",
              seconds_per_figure);
  std::printf("%-10s %-34s %14s %12s %10s\n", "frame", "path", "frames/s", "MB/s", "of pump");
  for (size_t size : {size_t{64}, size_t{6} << 20}) {
    auto pump = socket_pump(size);
    uint32_t window = size == 64 ? 8192 : 16;
    auto link = link_figure(sys, size, window);
    auto label = size == 64 ? std::string("64 B") : std::string("6 MB");
    std::printf("%-10s %-34s %14.0f %12.1f %10s\n", label.c_str(), "plain TCP socket pump", pump.frames_per_s,
                pump.bytes_per_s / 1e6, "100%");
    char ratio[32];
    std::snprintf(ratio, sizeof ratio, "%.0f%%", 100 * link.bytes_per_s / pump.bytes_per_s);
    auto path = "data link, acked, window " + std::to_string(window);
    std::printf("%-10s %-34s %14.0f %12.1f %10s\n", label.c_str(), path.c_str(), link.frames_per_s,
                link.bytes_per_s / 1e6, ratio);
    if (auto tls = make_bench_tls()) {
      bench_tls = tls;
      auto over_tls = link_figure(sys, size, window);
      bench_tls.reset();
      std::snprintf(ratio, sizeof ratio, "%.0f%%", 100 * over_tls.bytes_per_s / pump.bytes_per_s);
      auto tls_path = "data link over TLS, window " + std::to_string(window);
      std::printf("%-10s %-34s %14.0f %12.1f %10s  (%.0f%% of the plain link)\n", label.c_str(), tls_path.c_str(),
                  over_tls.frames_per_s, over_tls.bytes_per_s / 1e6, ratio,
                  100 * over_tls.bytes_per_s / link.bytes_per_s);
    } else {
      std::printf("%-10s %-34s (no figure: the openssl tool could not make certificates)\n", label.c_str(),
                  "data link over TLS");
    }
    auto runtime_window = size == 64 ? small_window : large_window;
    auto rt = runtime_figure(sys, size, runtime_window);
    std::snprintf(ratio, sizeof ratio, "%.0f%%", 100 * rt.bytes_per_s / pump.bytes_per_s);
    auto rt_path = "actors + link + instance, window " + std::to_string(runtime_window);
    std::printf("%-10s %-34s %14.0f %12.1f %10s\n", label.c_str(), rt_path.c_str(), rt.frames_per_s,
                rt.bytes_per_s / 1e6, ratio);
  }
  std::printf("Goals: 6 MB at least 70%% of the pump's bytes/s; 64 B at least 200,000 frames/s.\n");
  return 0;
}
