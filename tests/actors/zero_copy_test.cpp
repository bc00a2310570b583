// A frame crosses two local stages without its payload being copied.
#include <troupe/handover.hpp>
#include "pipeline_runner.hpp"

using namespace troupe;
using namespace troupe::test;
using namespace std::chrono_literals;

TEST(zero_copy, payload_address_is_the_same_after_two_stages) {
  temp_dir d;
  auto p = plan_yaml(d, R"(stages:
  - {name: src, plugin: testsrc}
  - {name: p1, plugin: passthrough}
  - {name: p2, plugin: passthrough}
  - {name: sink, plugin: checksum, config: {output: "{dir}/sum.txt"}}
edges: ["src -> p1 -> p2 -> sink"]
)");
  ASSERT_OK(p);
  auto libs = load_libraries(**p, test_launcher());
  ASSERT_OK(libs);
  metrics m;
  auto slots = make_slots(**p, m);
  caf::actor_system sys{test_config()};
  executor ex(2);
  caf::scoped_actor self{sys};
  // p2 sends to this test actor in place of the sink; p1 sends to p2.
  auto p2 = spawn_started_instance(sys, *p, *libs, slots, ex, 2, self, self);
  auto p1 = spawn_started_instance(sys, *p, *libs, slots, ex, 1, self, p2);
  int running = 0;
  self->receive_for(running, 4)([&](report_atom, instance_report&) {});  // started, running x2

  auto payload = buffer::allocate(6 * 1024 * 1024);
  std::fill(payload->data(), payload->data() + payload->size(), 7);
  frame f;
  f.stream = 1;
  f.seq = 42;
  f.type = "video/rgb24";
  f.payload = payload_slice(payload);
  // The test stands in for an upstream stage, which hands what it wrote over before sending.
  handover::made();
  self->send(p1, frame_atom::value, f);
  bool got = false;
  self->receive(
      [&](frame_atom, const frame& out) {
        got = true;
        EXPECT_EQ(out.payload.data(), payload->data());
        EXPECT_EQ(out.payload.buffer().get(), payload.get());
        EXPECT_EQ(out.payload.size(), payload->size());
        EXPECT_EQ(out.seq, 42u);
        EXPECT_EQ(out.generation, 1u);
      },
      caf::after(10s) >> [] {});
  EXPECT_TRUE(got);
  // Three holders at most: the test, p1's unacked copy and p2's unacked copy. No copy of bytes.
  EXPECT_EQ(slots[1]->bytes_out.Value(), 6 * 1024 * 1024);
  self->send_exit(p1, caf::exit_reason::user_shutdown);
  self->send_exit(p2, caf::exit_reason::user_shutdown);
}

TEST(instance, a_frame_sent_twice_is_processed_once_and_acknowledged_twice) {
  temp_dir d;
  auto p = plan_yaml(d, R"(stages:
  - {name: src, plugin: testsrc}
  - {name: p1, plugin: passthrough}
  - {name: sink, plugin: checksum, config: {output: "{dir}/sum.txt"}}
edges: ["src -> p1 -> sink"]
)");
  ASSERT_OK(p);
  auto libs = load_libraries(**p, test_launcher());
  ASSERT_OK(libs);
  metrics m;
  auto slots = make_slots(**p, m);
  caf::actor_system sys{test_config()};
  executor ex(2);
  caf::scoped_actor self{sys};
  auto inst = spawn_started_instance(sys, *p, *libs, slots, ex, 1, self, self);
  int reports = 0;
  self->receive_for(reports, 2)([&](report_atom, instance_report&) {});
  frame f;
  f.stream = 2;
  f.seq = 7;
  f.type = "bytes";
  for (uint64_t seq : {7, 7, 8}) {
    f.seq = seq;
    handover::made();
    self->send(inst, frame_atom::value, f);
  }
  std::vector<uint64_t> outputs;
  uint32_t acked = 0;
  while (acked < 3) {
    bool timed_out = false;
    self->receive([&](frame_atom, const frame& out) { outputs.push_back(out.seq); },
                  [&](frames_atom, const frame_batch& b) {
                    for (auto& out : b.frames) outputs.push_back(out.seq);
                  },
                  [&](ack_atom, uint32_t n) { acked += n; }, caf::after(10s) >> [&] { timed_out = true; });
    ASSERT_FALSE(timed_out) << "acked " << acked;
  }
  // Outputs come before the acks of their inputs.
  EXPECT_EQ(outputs, (std::vector<uint64_t>{7, 8}));
  EXPECT_EQ(slots[1]->duplicates.Value(), 1);
  EXPECT_EQ(slots[1]->frames_in.Value(), 2);
  self->send_exit(inst, caf::exit_reason::user_shutdown);
}

// A large payload's block is used again once the last frame sharing it is gone (a fresh block
// costs a page fault per page); the AddressSanitizer build never recycles, so that a payload
// used after its release is still caught there.
TEST(buffer, a_released_large_block_serves_the_next_payload_of_its_size) {
  constexpr size_t size = (1280 * 720 * 3) / 2;  // a 720p yuv420p frame
  auto first = troupe::buffer::allocate(size);
  const uint8_t* block = first->data();
  auto shared = first;  // two frames share it
  first.reset();
  auto second = troupe::buffer::allocate(size);
  EXPECT_NE(second->data(), block) << "a block still shared must not be handed out";
  shared.reset();
  auto third = troupe::buffer::allocate(size);
  EXPECT_EQ(third->size(), size);
#if defined(__SANITIZE_ADDRESS__)
  EXPECT_NE(third->data(), block);  // held in ASan's quarantine, not recycled
#else
  EXPECT_EQ(third->data(), block);
#endif
}
