// The router's policies, credit window and resend of unacknowledged frames.
#include "pipeline_runner.hpp"

#include <troupe/ring.hpp>
#include <troupe/router.hpp>

#include <map>
#include <set>

using namespace troupe;
using namespace troupe::test;

namespace {

struct sent_log {
  std::vector<std::pair<receiver_actor, uint64_t>> sends;  // (receiver, seq)
  size_t count_to(const receiver_actor& a) const {
    return std::count_if(sends.begin(), sends.end(), [&](auto& s) { return s.first == a; });
  }
};

frame make(uint64_t stream, uint64_t seq) {
  frame f;
  f.stream = stream;
  f.seq = seq;
  return f;
}

struct fixture {
  caf::actor_system sys{test_config()};
  caf::scoped_actor sa{sys}, sb{sys}, sc{sys};  // the receivers, which only need to exist
  receiver_actor a = caf::actor_cast<receiver_actor>(sa), b = caf::actor_cast<receiver_actor>(sb),
                 c = caf::actor_cast<receiver_actor>(sc);
  sent_log log;
  router make_router(uint32_t window) {
    return router(window, [this](const receiver_actor& to, frame&& f) { log.sends.emplace_back(to, f.seq); });
  }
  route_table table(route_policy p, std::vector<receiver_actor> rs) {
    route_table t;
    route_receivers list;
    for (auto& r : rs) list.push_back({r});
    t.edges.push_back(make_edge(7, p, std::move(list)));
    return t;
  }
};

}  // namespace

TEST(router, window_bounds_frames_in_flight_per_receiver) {
  fixture fx;
  auto r = fx.make_router(3);
  r.set_routes(fx.table(route_policy::round_robin, {fx.a}));
  for (uint64_t i = 0; i < 10; ++i) r.route(make(0, i));
  EXPECT_EQ(fx.log.sends.size(), 3u);
  EXPECT_TRUE(r.blocked());
  EXPECT_EQ(r.in_flight(), 3u);
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 2);
  EXPECT_EQ(fx.log.sends.size(), 5u);
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 3);
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 3);
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 3);
  EXPECT_EQ(fx.log.sends.size(), 10u);
  EXPECT_FALSE(r.blocked());
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 1);
  EXPECT_TRUE(r.idle());
}

TEST(router, byte_limit_bounds_payload_in_flight_but_one_frame_always_goes) {
  fixture fx;
  auto r = fx.make_router(100);
  r.limit_bytes(100);
  r.set_routes(fx.table(route_policy::round_robin, {fx.a}));
  auto sized = [](uint64_t seq, size_t size) {
    auto f = make(0, seq);
    f.payload = payload_slice(buffer::allocate(size));
    return f;
  };
  r.route(sized(0, 40));
  r.route(sized(1, 40));
  r.route(sized(2, 40));  // 120 > 100: waits
  EXPECT_EQ(fx.log.sends.size(), 2u);
  EXPECT_TRUE(r.blocked());
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 1);  // 40 left: the third fits
  EXPECT_EQ(fx.log.sends.size(), 3u);
  r.route(sized(3, 500));  // larger than the limit: waits until nothing is unacknowledged
  EXPECT_EQ(fx.log.sends.size(), 3u);
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 2);
  EXPECT_EQ(fx.log.sends.size(), 4u);
  r.route(sized(4, 1));  // nothing fits beside a frame over the limit
  EXPECT_EQ(fx.log.sends.size(), 4u);
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 1);
  EXPECT_EQ(fx.log.sends.size(), 5u);
  // A replaced receiver gives its frames back with their bytes: the limit holds for the next.
  r.set_routes(fx.table(route_policy::round_robin, {fx.b}));
  EXPECT_EQ(fx.log.count_to(fx.b), 1u);
  EXPECT_EQ(r.in_flight(), 1u);
}

TEST(router, round_robin_spreads_and_by_stream_keeps_a_stream_on_one_receiver) {
  fixture fx;
  auto r = fx.make_router(100);
  r.set_routes(fx.table(route_policy::round_robin, {fx.a, fx.b}));
  for (uint64_t i = 0; i < 10; ++i) r.route(make(i, 0));
  EXPECT_EQ(fx.log.count_to(fx.a), 5u);
  EXPECT_EQ(fx.log.count_to(fx.b), 5u);

  fixture fy;
  auto s = fy.make_router(100);
  s.set_routes(fy.table(route_policy::by_stream, {fy.a, fy.b}));
  std::map<uint64_t, std::set<caf::actor_addr>> receivers_of_stream;
  for (uint64_t seq = 0; seq < 5; ++seq)
    for (uint64_t stream = 0; stream < 4; ++stream) s.route(make(stream, seq));
  ASSERT_EQ(fy.log.sends.size(), 20u);
  for (size_t i = 0; i < 20; ++i) receivers_of_stream[i % 4].insert(fy.log.sends[i].first.address());
  for (auto& [stream, rs] : receivers_of_stream) EXPECT_EQ(rs.size(), 1u) << "stream " << stream;
}

TEST(router, least_loaded_prefers_the_receiver_with_fewer_in_flight) {
  fixture fx;
  auto r = fx.make_router(100);
  r.set_routes(fx.table(route_policy::least_loaded, {fx.a, fx.b}));
  r.route(make(0, 0));
  r.route(make(0, 1));
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 1);  // a: 0 in flight, b: 1
  r.route(make(0, 2));
  EXPECT_EQ(fx.log.sends.back().first, fx.a);
}

TEST(router, replaced_receiver_gets_its_unacked_frames_again_in_order) {
  fixture fx;
  auto r = fx.make_router(4);
  r.set_routes(fx.table(route_policy::round_robin, {fx.a}));
  for (uint64_t i = 0; i < 6; ++i) r.route(make(0, i));
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 1);  // seq 0 done; 1..4 in flight, 5 pending
  fx.log.sends.clear();
  r.set_routes(fx.table(route_policy::round_robin, {fx.c}));  // a's successor
  ASSERT_EQ(fx.log.sends.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(fx.log.sends[i].first, fx.c);
    EXPECT_EQ(fx.log.sends[i].second, i + 1);
  }
  // An ack from the replaced receiver changes nothing.
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 4);
  EXPECT_EQ(r.in_flight(), 4u);
  auto carry = r.take_carry();
  ASSERT_EQ(carry.per_stage.size(), 1u);
  // A successor gets the unacknowledged 1..4 (receivers drop what they have), then 5.
  ASSERT_EQ(carry.per_stage[0].second.size(), 5u);
  EXPECT_EQ(carry.per_stage[0].second.front().seq, 1u);
  EXPECT_EQ(carry.per_stage[0].second.back().seq, 5u);
}

TEST(router, a_callers_note_comes_back_with_each_acknowledgement_and_is_not_sent) {
  fixture fx;
  auto r = fx.make_router(2);
  r.set_routes(fx.table(route_policy::round_robin, {fx.a}));
  std::vector<std::pair<uint64_t, uint64_t>> acked;  // (seq, note)
  r.on_acked([&](const frame& f, uint64_t note) { acked.emplace_back(f.seq, note); });
  std::vector<frame> fs;
  for (uint64_t i = 0; i < 3; ++i) fs.push_back(make(0, i));
  r.route_all(std::move(fs), {100, 101, 102});
  r.route(make(0, 3));  // without a note
  // The receiver is replaced before acknowledging: its frames go again, with their notes.
  r.set_routes(fx.table(route_policy::round_robin, {fx.c}));
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.c), 2);
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.c), 2);
  EXPECT_EQ(acked, (std::vector<std::pair<uint64_t, uint64_t>>{{0, 100}, {1, 101}, {2, 102}, {3, 0}}));
  EXPECT_TRUE(r.idle());
}

TEST(router, a_draining_receiver_gets_nothing_new_and_is_told_once_its_frames_are_acknowledged) {
  fixture fx;
  std::vector<receiver_actor> told;
  router r(
      2, [&](const receiver_actor& to, frame&& f) { fx.log.sends.emplace_back(to, f.seq); },
      [&](const receiver_actor& to) { told.push_back(to); });
  r.set_routes(fx.table(route_policy::round_robin, {fx.a, fx.b}));
  for (uint64_t i = 0; i < 4; ++i) r.route(make(0, i));  // a: 0, 2; b: 1, 3
  ASSERT_EQ(fx.log.count_to(fx.b), 2u);
  auto t = fx.table(route_policy::round_robin, {fx.a, fx.b});
  auto list = *t.edges[0].receivers;
  list[1].draining = true;
  t.edges[0].receivers = std::make_shared<const route_receivers>(std::move(list));
  r.set_routes(t);
  EXPECT_TRUE(told.empty());  // b still holds two frames
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.a), 2);
  for (uint64_t i = 4; i < 6; ++i) r.route(make(0, i));
  EXPECT_EQ(fx.log.count_to(fx.a), 4u);
  EXPECT_EQ(fx.log.count_to(fx.b), 2u);  // nothing new for b
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.b), 1);
  EXPECT_TRUE(told.empty());
  r.on_ack(caf::actor_cast<caf::actor_addr>(fx.b), 1);
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told[0], fx.b);
  r.set_routes(t);  // published again: not told twice
  EXPECT_EQ(told.size(), 1u);
  // b leaves the routes and c joins in front: a keeps its unacknowledged frames (nothing
  // is sent twice), whatever its position.
  auto before = fx.log.sends.size();
  r.set_routes(fx.table(route_policy::round_robin, {fx.c, fx.a}));
  EXPECT_EQ(fx.log.sends.size(), before);
  EXPECT_EQ(r.in_flight(), 2u);
}

// The router's and the inbox's queue: order across wrap-around and growth, both ends, and a
// slot let go releases what it held.
TEST(ring, keeps_order_across_wrap_and_growth_and_lets_go_of_what_it_pops) {
  ring<std::shared_ptr<int>> q;
  std::weak_ptr<int> first;
  uint64_t next_in = 0, next_out = 0;
  for (int round = 0; round < 50; ++round) {
    for (int k = 0; k < 5 + round % 7; ++k) {
      auto v = std::make_shared<int>(static_cast<int>(next_in++));
      if (next_in == 1) first = v;
      q.push_back(std::move(v));
    }
    for (int k = 0; k < 3 && !q.empty(); ++k) {
      ASSERT_EQ(*q.front(), static_cast<int>(next_out++));
      q.pop_front();
    }
  }
  EXPECT_TRUE(first.expired());  // popped: nothing keeps it
  EXPECT_EQ(q.size(), next_in - next_out);
  size_t i = 0;
  for (auto& v : q) EXPECT_EQ(*v, static_cast<int>(next_out + i++));
  EXPECT_EQ(*q.back(), static_cast<int>(next_in - 1));
  q.push_front(std::make_shared<int>(-1));
  EXPECT_EQ(*q[0], -1);
  EXPECT_EQ(*q[1], static_cast<int>(next_out));
  auto moved = std::move(q);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(moved.size(), next_in - next_out + 1);
  moved.pop_front(moved.size());
  EXPECT_TRUE(moved.empty());
  moved.push_back(std::make_shared<int>(7));
  EXPECT_EQ(*moved.front(), 7);
}
