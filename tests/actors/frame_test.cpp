// A payload slice keeps its bytes inside its buffer, and the messages actors exchange
// survive CAF's serialiser and print without their payload bytes.
#include <troupe/frame.hpp>
#include <troupe/link.hpp>
#include <troupe/messages.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/deep_to_string.hpp>

#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

using namespace troupe;

namespace {

std::shared_ptr<buffer> bytes_of(const std::string& s) {
  auto b = buffer::allocate(s.size());
  std::memcpy(b->data(), s.data(), s.size());
  return b;
}

std::string text_of(const payload_slice& p) {
  return p.empty() ? std::string() : std::string(reinterpret_cast<const char*>(p.data()), p.size());
}

// Through CAF's binary serialiser and back; with an actor system at hand (sys), as in a
// message, for types that carry actor handles.
template <class T>
T round_trip(T x, caf::actor_system* sys = nullptr) {
  auto* unit = sys ? sys->dummy_execution_unit() : nullptr;
  std::vector<char> bytes;
  caf::binary_serializer sink{unit, bytes};
  EXPECT_FALSE(sink(x));
  T y;
  caf::binary_deserializer source{unit, bytes};
  EXPECT_FALSE(source(y));
  EXPECT_EQ(source.remaining(), 0u);
  return y;
}

frame sample_frame() {
  frame f;
  f.stream = 3;
  f.seq = 17;
  f.part = 2;
  f.generation = 5;
  f.timestamp_ns = -40;
  f.type = "text/plain";
  f.meta = std::make_shared<const metadata>(metadata{{"lang", "en"}, {"page", "4"}});
  f.payload = payload_slice(bytes_of("0123456789"), 2, 5);
  return f;
}

}  // namespace

TEST(payload_slice, a_range_outside_its_buffer_is_refused) {
  auto b = bytes_of("abcdef");
  EXPECT_EQ(text_of(payload_slice(b, 1, 3)), "bcd");
  EXPECT_EQ(text_of(payload_slice(b, 6, 0)), "");
  EXPECT_THROW(payload_slice(b, 4, 3), std::out_of_range);
  EXPECT_THROW(payload_slice(b, 7, 0), std::out_of_range);
  EXPECT_THROW(payload_slice(b, 1, SIZE_MAX), std::out_of_range);  // offset + size wraps
  EXPECT_THROW(payload_slice(nullptr, 0, 1), std::out_of_range);
  EXPECT_TRUE(payload_slice(nullptr).empty());
}

TEST(payload_slice, within_finds_bytes_only_inside_the_buffer) {
  auto b = bytes_of("abcdef");
  auto in = payload_slice::within(b, b->data() + 2, 4);
  ASSERT_TRUE(in.has_value());
  EXPECT_EQ(in->offset(), 2u);
  EXPECT_EQ(text_of(*in), "cdef");
  EXPECT_EQ(in->buffer(), b);
  EXPECT_FALSE(payload_slice::within(b, b->data() + 2, 5).has_value());
  EXPECT_FALSE(payload_slice::within(b, b->data() - 1, 1).has_value());
  EXPECT_FALSE(payload_slice::within(nullptr, b->data(), 1).has_value());
  auto other = bytes_of("xyz");
  EXPECT_FALSE(payload_slice::within(b, other->data(), 1).has_value());
}

TEST(payload_slice, sub_stays_inside_the_slice_and_shares_the_buffer) {
  auto b = bytes_of("0123456789");
  payload_slice s(b, 2, 6);  // "234567"
  auto t = s.sub(1, 3);
  EXPECT_EQ(text_of(t), "345");
  EXPECT_EQ(t.buffer(), b);
  EXPECT_EQ(t.offset(), 3u);
  EXPECT_THROW(s.sub(4, 3), std::out_of_range);  // would reach "8", outside the slice
}

TEST(messages, a_frame_survives_the_serialiser_with_its_metadata_and_payload) {
  auto f = sample_frame();
  auto g = round_trip(f);
  EXPECT_EQ(g.stream, 3u);
  EXPECT_EQ(g.seq, 17u);
  EXPECT_EQ(g.part, 2u);
  EXPECT_EQ(g.generation, 5u);
  EXPECT_EQ(g.timestamp_ns, -40);
  EXPECT_EQ(g.type, "text/plain");
  ASSERT_NE(g.meta, nullptr);
  EXPECT_EQ(*g.meta, *f.meta);
  EXPECT_EQ(text_of(g.payload), "23456");
  EXPECT_EQ(g.payload.offset(), 0u);  // a buffer of its own, holding just the slice
  EXPECT_NE(g.payload.buffer(), f.payload.buffer());

  frame empty;
  auto e = round_trip(empty);
  EXPECT_EQ(e.meta, nullptr);
  EXPECT_TRUE(e.payload.empty());
}

TEST(messages, a_report_survives_the_serialiser_with_its_carried_frames_and_culprit) {
  instance_report r;
  r.slot = 4;
  r.generation = 9;
  r.state = instance_state::failed;
  r.failure = failure_class::lost;
  r.error = "plugin 'x' crashed";
  r.carry.per_stage.push_back({1, {sample_frame()}});
  r.culprit = frame_key{3, 17, 2};
  auto s = round_trip(r);
  EXPECT_EQ(s.slot, 4u);
  EXPECT_EQ(s.generation, 9u);
  EXPECT_EQ(s.state, instance_state::failed);
  EXPECT_EQ(s.failure, failure_class::lost);
  EXPECT_EQ(s.error, r.error);
  ASSERT_EQ(s.carry.per_stage.size(), 1u);
  ASSERT_EQ(s.carry.per_stage[0].second.size(), 1u);
  EXPECT_EQ(text_of(s.carry.per_stage[0].second[0].payload), "23456");
  ASSERT_TRUE(s.culprit.has_value());
  EXPECT_EQ(*s.culprit, (frame_key{3, 17, 2}));

  r.culprit.reset();
  EXPECT_FALSE(round_trip(r).culprit.has_value());
}

TEST(messages, a_link_batch_survives_the_serialiser) {
  link_batch b;
  b.from = "node-a";
  b.channel = 7;
  b.epoch = 12;
  b.frames.push_back({100, sample_frame()});
  auto c = round_trip(b);
  EXPECT_EQ(c.from, "node-a");
  EXPECT_EQ(c.channel, 7u);
  EXPECT_EQ(c.epoch, 12u);
  ASSERT_EQ(c.frames.size(), 1u);
  EXPECT_EQ(c.frames[0].first, 100u);
  EXPECT_EQ(text_of(c.frames[0].second.payload), "23456");
}

TEST(messages, a_route_table_survives_the_serialiser_and_its_list_stays_shared) {
  route_table t;
  t.edges.push_back(make_edge(4, route_policy::by_stream, {{{}, false}, {{}, true}}));
  // Handles go through the serialiser with an actor system at hand, as in a message.
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto u = round_trip(t, &sys);
  ASSERT_EQ(u.edges.size(), 1u);
  EXPECT_EQ(u.edges[0].stage, 4u);
  EXPECT_EQ(u.edges[0].policy, route_policy::by_stream);
  ASSERT_EQ(u.edges[0].receivers->size(), 2u);
  EXPECT_FALSE((*u.edges[0].receivers)[0].draining);
  EXPECT_TRUE((*u.edges[0].receivers)[1].draining);
  auto copy = u;  // as each sender's copy of one table: the list is not copied
  EXPECT_EQ(copy.edges[0].receivers.get(), u.edges[0].receivers.get());
}

TEST(messages, a_frame_prints_its_payload_size_not_its_bytes) {
  auto f = sample_frame();
  auto big = buffer::allocate(1 << 20);
  std::memset(big->data(), 'Z', big->size());
  f.payload = payload_slice(big);
  auto text = caf::deep_to_string(f);
  EXPECT_NE(text.find("text/plain"), std::string::npos) << text;
  EXPECT_NE(text.find("lang"), std::string::npos) << text;
  EXPECT_NE(text.find(std::to_string(1 << 20)), std::string::npos) << text;
  EXPECT_LT(text.size(), 200u) << "the payload's bytes are printed: " << text.substr(0, 200);
}
