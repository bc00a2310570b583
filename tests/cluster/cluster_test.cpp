// The cluster's pure parts (placement, records, the lease clock) and its etcd client against a
// real etcd process started by the test on 127.0.0.1.
#include <cluster/etcd.hpp>
#include <cluster/lease.hpp>
#include <cluster/placement.hpp>
#include <cluster/records.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <kj/async-io.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

using namespace troupe;
using namespace troupe::cluster;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

namespace {

std::string text(const caf::error& e) { return describe(e); }

placement_record record_of(std::vector<stage_placement> stages, const std::string& deployed_to = "n1") {
  placement_record r;
  r.pipeline = "p";
  r.run = "run-1";
  r.source = "p.yaml";
  r.text = "pipeline: p";
  r.deployed_to = deployed_to;
  r.stages = std::move(stages);
  return r;
}

stage_placement pinned(const std::string& stage, std::vector<std::string> allowed) {
  stage_placement s;
  s.stage = stage;
  s.allowed = allowed;
  s.nodes = allowed;
  return s;
}

stage_placement anywhere(const std::string& stage, const std::string& on) {
  stage_placement s;
  s.stage = stage;
  s.any = true;
  s.nodes = {on};
  return s;
}

}  // namespace

// -- placement ---------------------------------------------------------------------------------

TEST(placement, a_stage_without_a_node_runs_where_it_was_deployed_and_any_goes_to_the_least_loaded) {
  std::set<std::string> known{"n1", "n2", "n3"}, live{"n1", "n2", "n3"};
  auto p =
      place({{"src", {}}, {"a", {"*"}}, {"b", {"*"}}, {"c", {"n2", "n3"}}, {"d", {"*"}}}, "n2", known, live, "p.yaml");
  ASSERT_TRUE(p) << text(p.error());
  ASSERT_EQ(p->size(), 5u);
  EXPECT_EQ((*p)[0].nodes, std::vector<std::string>{"n2"});
  EXPECT_EQ((*p)[0].allowed, std::vector<std::string>{"n2"});
  // Load before the any-stages: n2 has 2, n3 has 1, n1 none.
  EXPECT_TRUE((*p)[1].any);
  EXPECT_EQ((*p)[1].nodes, std::vector<std::string>{"n1"});
  EXPECT_EQ((*p)[2].nodes, std::vector<std::string>{"n1"});  // n1 1, n3 1: the lowest name
  EXPECT_EQ((*p)[3].nodes, (std::vector<std::string>{"n2", "n3"}));
  EXPECT_EQ((*p)[4].nodes, std::vector<std::string>{"n3"});  // n1 2, n2 2, n3 1
}

// Nodes that said they have no room take no `node: any` stage; pinned stages stay.
TEST(placement, any_goes_only_to_nodes_with_room) {
  std::set<std::string> known{"n1", "n2", "n3"}, live{"n1", "n2", "n3"};
  auto p = place({{"src", {"n1"}}, {"a", {"*"}}, {"b", {"*"}}}, "n1", known, live, "p.yaml",
                 std::set<std::string>{"n1", "n2"});
  ASSERT_TRUE(p) << text(p.error());
  EXPECT_EQ((*p)[0].nodes, std::vector<std::string>{"n1"});
  EXPECT_EQ((*p)[1].nodes, std::vector<std::string>{"n2"});
  EXPECT_EQ((*p)[2].nodes, std::vector<std::string>{"n1"});  // n1 1, n2 1: the lowest name, never n3
  auto none = place({{"a", {"*"}}}, "n1", known, live, "p.yaml", std::set<std::string>{});
  ASSERT_FALSE(none);
  EXPECT_EQ(text(none.error()), "p.yaml: stage 'a' may run on any node, but none up has room");
}

TEST(placement, naming_an_unknown_or_a_down_node_is_refused_with_file_stage_and_node) {
  std::set<std::string> known{"n1", "n2"}, live{"n1"};
  auto unknown = place({{"a", {"n9"}}}, "n1", known, live, "cut.yaml");
  ASSERT_FALSE(unknown);
  EXPECT_THAT(text(unknown.error()), HasSubstr("cut.yaml: stage 'a' is placed on node 'n9'"));
  EXPECT_THAT(text(unknown.error()), HasSubstr("not a member of the cluster (members: n1, n2)"));
  auto down = place({{"a", {"n1", "n2"}}}, "n1", known, live, "cut.yaml");
  ASSERT_FALSE(down);
  EXPECT_THAT(text(down.error()), HasSubstr("stage 'a' is placed on node 'n2', which is down"));
  auto none = place({{"a", {"*"}}}, "n1", known, {}, "cut.yaml");
  ASSERT_FALSE(none);
  EXPECT_THAT(text(none.error()), HasSubstr("may run on any node, but none is up"));
}

TEST(placement, any_stage_moves_off_a_down_node_and_fences_it_at_the_read_epoch) {
  auto r = record_of({pinned("src", {"n1"}), anywhere("mid", "n2"), pinned("sink", {"n1"})});
  EXPECT_FALSE(replace(r, 10, {"n1", "n2", "n3"}));  // nothing to change
  auto next = replace(r, 10, {"n1", "n3"});
  ASSERT_TRUE(next);
  auto* mid = next->next.find("mid");
  ASSERT_NE(mid, nullptr);
  EXPECT_EQ(mid->nodes, std::vector<std::string>{"n3"});  // n1 runs two stages already
  EXPECT_EQ(mid->moves, 1u);
  EXPECT_EQ(next->next.fences.at("n2"), 10);
  ASSERT_EQ(next->changes.size(), 1u);
  EXPECT_THAT(next->changes[0], HasSubstr("stage 'mid' moves from n2 to node n3"));
  // An older fence never lowers a newer one.
  auto again = next->next;
  again.stages[1].nodes = {"n2"};
  auto later = replace(again, 4, {"n1", "n3"});
  ASSERT_TRUE(later);
  EXPECT_EQ(later->next.fences.at("n2"), 10);
}

TEST(placement, any_stage_leaves_a_node_without_room_for_one_with_room_unfenced) {
  // mid moved to n3 (n2 went down); n3 has no room for it in this run: it goes to n1.
  auto r = record_of({pinned("src", {"n1"}), anywhere("mid", "n3"), pinned("sink", {"n1"})});
  std::map<std::string, room_refusal> refused{
      {"n3",
       {"run-1",
        {"mid"},
        "node n3 cannot take pipeline 'p': stage 'mid' (1 replica of 256 MiB): it needs 256 "
        "MiB of memory, 200 MiB free of 200 MiB (capacity in n3.yaml)"}}};
  auto next = replace(r, 12, {"n1", "n3"}, refused);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->next.find("mid")->nodes, std::vector<std::string>{"n1"});
  EXPECT_EQ(next->next.fences.count("n3"), 0u);  // it never ran mid: nothing of it to drop
  ASSERT_EQ(next->changes.size(), 1u);
  EXPECT_EQ(next->changes[0], "stage 'mid' moves from n3 to node n1 (n3 has no room for it)");
  EXPECT_FALSE(replace(next->next, 13, {"n1", "n3"}, refused));  // settled
  // A refusal of another run, or of other stages, moves nothing.
  auto other = refused;
  other["n3"].run = "run-0";
  EXPECT_FALSE(replace(r, 12, {"n1", "n3"}, other));
  other = refused;
  other["n3"].stages = {"pre"};
  EXPECT_FALSE(replace(r, 12, {"n1", "n3"}, other));
  // No live node with room: it waits where it is, and says why.
  refused["n1"] = {"run-1", {"mid"}, "node n1 cannot take ..."};
  EXPECT_FALSE(replace(r, 12, {"n1", "n3"}, refused));
  auto w = waiting(r, {"n1", "n3"}, refused);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_THAT(w[0], HasSubstr("stage 'mid' waits for room on n3: node n3 cannot take pipeline 'p'"));
}

TEST(placement, a_listed_stage_shrinks_to_its_live_nodes_and_grows_back_in_file_order) {
  auto r = record_of({pinned("mid", {"n2", "n3"})});
  auto shrunk = replace(r, 7, {"n1", "n3"});
  ASSERT_TRUE(shrunk);
  EXPECT_EQ(shrunk->next.stages[0].nodes, std::vector<std::string>{"n3"});
  EXPECT_EQ(shrunk->next.fences.at("n2"), 7);
  auto grown = replace(shrunk->next, 9, {"n1", "n2", "n3"});
  ASSERT_TRUE(grown);
  EXPECT_EQ(grown->next.stages[0].nodes, (std::vector<std::string>{"n2", "n3"}));
  EXPECT_EQ(grown->next.fences.at("n2"), 7);  // what n2 sent before it left stays fenced
}

TEST(placement, a_pinned_stage_whose_node_is_down_waits_for_it_and_says_so) {
  auto r = record_of({pinned("src", {"n1"}), pinned("pre", {"n2"})});
  EXPECT_FALSE(replace(r, 5, {"n1", "n3"}));  // nowhere else to go: unchanged
  auto w = waiting(r, {"n1", "n3"});
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0], "stage 'pre' waits for n2");
  EXPECT_TRUE(waiting(r, {"n1", "n2"}).empty());
}

TEST(placement, a_node_that_cannot_keep_its_lease_stops_only_what_others_may_take) {
  auto r = record_of({pinned("src", {"n2"}), pinned("mid", {"n2", "n3"}), anywhere("any", "n2")});
  auto f = self_fenced(r, "n2");
  EXPECT_EQ(f.stages[0].nodes, std::vector<std::string>{"n2"});  // pinned to n2: nobody else may run it
  EXPECT_EQ(f.stages[1].nodes, std::vector<std::string>{"n3"});
  EXPECT_TRUE(f.stages[2].nodes.empty());
}

TEST(placement, a_pipeline_is_complete_when_every_node_finished_this_run) {
  auto r = record_of({pinned("src", {"n1"}), pinned("mid", {"n2", "n3"})});
  std::set<std::string> live{"n1", "n2", "n3"};
  EXPECT_FALSE(complete(r, {{"n1", "run-1"}, {"n2", "run-1"}}, live));
  EXPECT_FALSE(complete(r, {{"n1", "run-1"}, {"n2", "run-1"}, {"n3", "run-0"}}, live));  // an older run
  EXPECT_TRUE(complete(r, {{"n1", "run-1"}, {"n2", "run-1"}, {"n3", "run-1"}}, live));
  // Stopping: a node that is down counts as finished.
  EXPECT_FALSE(complete(r, {{"n1", "run-1"}, {"n2", "run-1"}}, {"n1", "n2"}));
  r.state = pipeline_state::stopping;
  EXPECT_TRUE(complete(r, {{"n1", "run-1"}, {"n2", "run-1"}}, {"n1", "n2"}));
}

// -- records -----------------------------------------------------------------------------------

TEST(records, a_placement_record_survives_its_json) {
  auto r = record_of({pinned("src", {"n1"}), anywhere("mid", "n3")});
  r.stages[1].moves = 2;
  r.state = pipeline_state::stopping;
  r.fences = {{"n2", 41}};
  auto back = parse_record("/troupe/c/pipelines/p", to_json(r));
  ASSERT_TRUE(back) << text(back.error());
  EXPECT_EQ(to_json(*back), to_json(r));
  EXPECT_EQ(back->state, pipeline_state::stopping);
  EXPECT_EQ(back->fences.at("n2"), 41);
  EXPECT_EQ(back->stages[1].moves, 2u);
  EXPECT_EQ(back->nodes(), (std::set<std::string>{"n1", "n3"}));
  EXPECT_TRUE(back->runs_on("n3"));
  EXPECT_FALSE(back->runs_on("n2"));
}

TEST(records, a_record_that_does_not_parse_names_its_key_and_what_is_wrong) {
  const std::string key = "/troupe/c/pipelines/p";
  for (auto [bad, why] : std::vector<std::pair<std::string, std::string>>{
           {"{not json", "expected a JSON object"},
           {"[1,2]", "expected a JSON object"},
           {R"({"pipeline":"p","run":"r","state":"paused","stages":[]})", "state 'paused'"},
           {R"({"pipeline":"p","run":"r","stages":{}})", "expected a list of stages"},
           {R"({"pipeline":"p","run":"r","stages":[{"stage":"a","nodes":"n1"}]})", "a stage without"},
           {R"({"pipeline":"p","run":"r","fences":{"n1":"x"},"stages":[]})", "fences of numbers"},
           {R"({"pipeline":"","run":"r","stages":[]})", "no pipeline name or run"}}) {
    auto r = parse_record(key, bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_THAT(text(r.error()), HasSubstr("record " + key + " in the cluster's store"));
    EXPECT_THAT(text(r.error()), HasSubstr(why)) << bad;
  }
  auto n = parse_node_info("/troupe/c/nodes/x", R"({"name": 3})");
  ASSERT_FALSE(n);
  EXPECT_THAT(text(n.error()), HasSubstr("/troupe/c/nodes/x"));
}

TEST(records, a_view_keeps_what_parses_and_names_what_does_not) {
  keyspace keys("c");
  node_info n1{"n1", "127.0.0.1:1", "127.0.0.1:2", "", "127.0.0.1:3"};
  auto rec = record_of({pinned("src", {"n1"})});
  etcd_range range;
  range.revision = 99;
  range.kvs = {{keys.node("n1"), to_json(n1), 1, 1, 0},
               {keys.node("n2"), "garbage", 2, 2, 0},
               {keys.member("n1"), "7", 3, 3, 7},
               {keys.pipeline("p"), to_json(rec), 4, 42, 0},
               {keys.pipeline("q"), "{}", 5, 5, 0},
               {keys.leader("p"), "n1", 6, 6, 7},
               {keys.part("p", "n1"), "run-1", 8, 8, 0},
               {"/troupe/other/nodes/z", to_json(n1), 9, 9, 0},
               {keys.refusal("p", "n2"), to_json(room_refusal{"run-1", {"mid"}, "no room"}), 10, 10, 7},
               {keys.refusal("p", "n3"), "{\"stages\": 4}", 11, 11, 8}};
  std::vector<std::string> problems;
  auto v = read_view(keys, range, problems);
  EXPECT_EQ(v.revision, 99);
  EXPECT_EQ(v.nodes.size(), 1u);
  EXPECT_EQ(v.nodes.at("n1").data, "127.0.0.1:3");
  EXPECT_TRUE(v.up("n1"));
  EXPECT_FALSE(v.up("n2"));
  ASSERT_EQ(v.pipelines.size(), 1u);
  EXPECT_EQ(v.pipelines.at("p").epoch, 42);
  EXPECT_EQ(v.pipelines.at("p").leader, "n1");
  EXPECT_EQ(v.pipelines.at("p").done.at("n1"), "run-1");
  ASSERT_NE(v.pipelines.at("p").refused_by("n2"), nullptr);
  EXPECT_EQ(v.pipelines.at("p").refused_by("n2")->stages, std::vector<std::string>{"mid"});
  EXPECT_EQ(v.pipelines.at("p").refused_by("n3"), nullptr);
  ASSERT_EQ(problems.size(), 3u);
  EXPECT_THAT(problems[0], HasSubstr(keys.node("n2")));
  EXPECT_THAT(problems[1], HasSubstr(keys.pipeline("q")));
  EXPECT_THAT(problems[2], HasSubstr(keys.refusal("p", "n3") + " in the cluster's store: expected run and why"));
}

// -- the lease clock ---------------------------------------------------------------------------

TEST(lease_clock, the_node_fences_itself_half_a_ttl_after_its_last_renewal) {
  lease_clock c;
  auto t0 = lease_clock::clock::time_point{} + 100s;
  EXPECT_FALSE(c.held());
  EXPECT_TRUE(c.must_fence(t0));
  c.renewed(t0, 6);
  EXPECT_TRUE(c.held());
  EXPECT_EQ(c.keep_alive_every(), 1000ms);
  EXPECT_FALSE(c.must_fence(t0 + 2999ms));
  EXPECT_TRUE(c.must_fence(t0 + 3s));
  EXPECT_EQ(c.expires_by(), t0 + 6s);
  c.renewed(t0 + 2s, 6);  // renewed in time: the deadline moves
  EXPECT_FALSE(c.must_fence(t0 + 4s));
  c.lost();
  EXPECT_TRUE(c.must_fence(t0 + 2s));
  // Odd and one-second leases: half of them, to the millisecond.
  c.renewed(t0, 1);
  EXPECT_FALSE(c.must_fence(t0 + 499ms));
  EXPECT_TRUE(c.must_fence(t0 + 500ms));
  EXPECT_EQ(c.keep_alive_every(), 166ms);
  c.renewed(t0, 3);
  EXPECT_FALSE(c.must_fence(t0 + 1499ms));
  EXPECT_TRUE(c.must_fence(t0 + 1500ms));
}

// -- the etcd client, against etcd ---------------------------------------------------------------

namespace {

int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

// One etcd member of its own, on free loopback ports, killed and removed at the end.
class etcd_process {
 public:
  etcd_process() {
    dir_ = std::filesystem::temp_directory_path() / ("troupe-etcd-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    client_ = "127.0.0.1:" + std::to_string(free_port());
    auto peer = "http://127.0.0.1:" + std::to_string(free_port());
    std::vector<std::string> args{"etcd",
                                  "--name=t",
                                  "--data-dir=" + dir_.string(),
                                  "--listen-client-urls=http://" + client_,
                                  "--advertise-client-urls=http://" + client_,
                                  "--listen-peer-urls=" + peer,
                                  "--initial-advertise-peer-urls=" + peer,
                                  "--initial-cluster=t=" + peer};
    pid_ = ::fork();
    if (pid_ == 0) {
      int log = ::open((dir_.string() + ".log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(log, 1);
      ::dup2(log, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execvp("etcd", argv.data());
      ::_exit(127);
    }
  }
  ~etcd_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::filesystem::remove_all(dir_);
    std::filesystem::remove(dir_.string() + ".log");
  }
  const std::string& endpoint() const { return client_; }

 private:
  std::filesystem::path dir_;
  std::string client_;
  pid_t pid_ = -1;
};

// Tries a call until etcd has started (it takes a moment), at most 20 s.
template <class F>
auto when_up(kj::WaitScope& wait, F call) {
  for (int i = 0;; ++i) {
    try {
      return call().wait(wait);
    } catch (const kj::Exception& e) {
      if (i >= 200) throw;
      std::this_thread::sleep_for(100ms);
    }
  }
}

}  // namespace

TEST(etcd_client, leases_transactions_and_ranges_against_a_real_etcd) {
  etcd_process etcd;
  auto io = kj::setupAsyncIo();
  // The first endpoint answers nothing: every call goes on to the next one.
  etcd_client c(*io.provider, {"127.0.0.1:" + std::to_string(free_port()), etcd.endpoint()}, 1000ms);
  auto lease = when_up(io.waitScope, [&] { return c.grant(5); });
  EXPECT_GT(lease.id, 0);
  EXPECT_GE(lease.ttl_s, 5);
  EXPECT_EQ(c.endpoint(), etcd.endpoint());

  keyspace keys("unit");
  // Create-if-absent under the lease: the first wins, the second finds the key.
  etcd_txn create;
  create.compares.push_back({keys.member("n1"), etcd_txn::compare::what::create_revision, 0, ""});
  create.success.push_back({etcd_txn::op::kind::put, keys.member("n1"), "x", lease.id});
  auto first = c.txn(create).wait(io.waitScope);
  EXPECT_TRUE(first.succeeded);
  EXPECT_FALSE(c.txn(create).wait(io.waitScope).succeeded);

  // A record written once, then changed only by the one who read its revision.
  auto rec = record_of({pinned("src", {"n1"})});
  etcd_txn put;
  put.success.push_back({etcd_txn::op::kind::put, keys.pipeline("p"), to_json(rec), 0});
  auto written = c.txn(put).wait(io.waitScope);
  ASSERT_TRUE(written.succeeded);
  auto range = c.range(keys.root).wait(io.waitScope);
  EXPECT_GE(range.revision, written.revision);
  std::vector<std::string> problems;
  auto view = read_view(keys, range, problems);
  EXPECT_TRUE(problems.empty());
  EXPECT_TRUE(view.up("n1"));
  EXPECT_EQ(view.members.at("n1"), lease.id);
  ASSERT_EQ(view.pipelines.count("p"), 1u);
  auto epoch = view.pipelines.at("p").epoch;
  EXPECT_EQ(epoch, written.revision);
  etcd_txn cas;
  cas.compares.push_back({keys.pipeline("p"), etcd_txn::compare::what::mod_revision, epoch, ""});
  cas.success.push_back({etcd_txn::op::kind::put, keys.pipeline("p"), to_json(rec), 0});
  EXPECT_TRUE(c.txn(cas).wait(io.waitScope).succeeded);
  EXPECT_FALSE(c.txn(cas).wait(io.waitScope).succeeded);  // that revision is gone now
  etcd_txn by_value;
  by_value.compares.push_back({keys.member("n1"), etcd_txn::compare::what::value, 0, "y"});
  by_value.success.push_back({etcd_txn::op::kind::erase, keys.pipeline("p"), "", 0});
  EXPECT_FALSE(c.txn(by_value).wait(io.waitScope).succeeded);

  // Keep-alive renews; revoking the lease takes the member key with it.
  EXPECT_GT(c.keep_alive(lease.id).wait(io.waitScope), 0);
  c.revoke(lease.id).wait(io.waitScope);
  EXPECT_LE(c.keep_alive(lease.id).wait(io.waitScope), 0);
  view = read_view(keys, c.range(keys.root).wait(io.waitScope), problems);
  EXPECT_FALSE(view.up("n1"));
  EXPECT_EQ(view.pipelines.count("p"), 1u);
}

TEST(etcd_client, a_call_no_endpoint_answers_fails_naming_every_endpoint) {
  auto io = kj::setupAsyncIo();
  auto a = "127.0.0.1:" + std::to_string(free_port()), b = "127.0.0.1:" + std::to_string(free_port());
  etcd_client c(*io.provider, {a, b}, 500ms);
  try {
    c.range("/troupe/").wait(io.waitScope);
    FAIL() << "a range with no etcd answered";
  } catch (const kj::Exception& e) {
    EXPECT_EQ(e.getType(), kj::Exception::Type::DISCONNECTED);
    std::string d = e.getDescription().cStr();
    EXPECT_THAT(d, HasSubstr("etcd not reached"));
    EXPECT_THAT(d, HasSubstr(a));
    EXPECT_THAT(d, HasSubstr(b));
  }
}
