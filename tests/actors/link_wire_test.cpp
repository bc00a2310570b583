// The data link's wire format judged without sockets: what a prefix may claim, before and
// after the hello, and how a batch is checked against its payload section.
#include <troupe/link_wire.hpp>

#include <capnp/message.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

using namespace troupe;
using ::testing::HasSubstr;
using ::testing::Optional;

namespace {

struct batch_of {
  capnp::MallocMessageBuilder mb;
  capnp::List<wire::LinkFrame>::Builder list;
  explicit batch_of(std::vector<uint64_t> sizes)
      : list(mb.initRoot<wire::LinkMessage>().initFrames().initBatch(static_cast<unsigned>(sizes.size()))) {
    for (unsigned i = 0; i < sizes.size(); ++i) {
      list[i].setId(i + 1);
      list[i].setSeq(i);
      list[i].setSize(sizes[i]);
    }
  }
  capnp::List<wire::LinkFrame>::Reader reader() { return list.asReader(); }
};

TEST(link_wire, a_prefix_is_judged_before_anything_is_allocated) {
  using link_wire::check_prefix;
  EXPECT_EQ(check_prefix({link_wire::magic, 8, 0}, true), std::nullopt);
  EXPECT_EQ(check_prefix({link_wire::magic, 8, 1 << 20}, false), std::nullopt);
  EXPECT_EQ(check_prefix({0x1234, 8, 0}, false), "not a data link message (bad magic)");
  EXPECT_EQ(check_prefix({link_wire::magic, 0, 0}, false), "message header of 0 bytes (at most 16777216)");
  EXPECT_EQ(check_prefix({link_wire::magic, 1u << 27, 0}, false),
            "message header of 1073741824 bytes (at most 16777216)");
  EXPECT_EQ(check_prefix({link_wire::magic, 1024, 0}, true),
            "a hello of 8192 bytes (at most 4096 before the token is checked)");
  EXPECT_EQ(check_prefix({link_wire::magic, 8, 1}, true),
            "a hello of 65 bytes (at most 4096 before the token is checked)");
  EXPECT_EQ(check_prefix({link_wire::magic, 8, (uint64_t{1} << 30) + 1}, false),
            "message payload of 1073741825 bytes (at most 1073741824)");
}

TEST(link_wire, a_batch_takes_its_payloads_from_the_payload_section_in_order) {
  batch_of b({3, 0, 5});
  auto payload = buffer::allocate(8);
  std::memcpy(payload->data(), "abcdefgh", 8);
  std::vector<std::pair<uint64_t, frame>> out;
  ASSERT_EQ(link_wire::decode_frames(b.reader(), payload, 8, out), std::nullopt);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].first, 1u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(out[0].second.payload.data()), out[0].second.payload.size()),
            "abc");
  EXPECT_EQ(out[1].second.payload.size(), 0u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(out[2].second.payload.data()), out[2].second.payload.size()),
            "defgh");
  EXPECT_EQ(out[2].second.payload.buffer(), payload);  // views, not copies
}

TEST(link_wire, a_batch_that_does_not_add_up_is_refused_and_nothing_is_taken) {
  auto payload = buffer::allocate(8);
  std::vector<std::pair<uint64_t, frame>> out;
  batch_of over({5, 5});
  EXPECT_EQ(link_wire::decode_frames(over.reader(), payload, 8, out),
            "frame payloads overrun the message's payload section");
  batch_of under({3});
  EXPECT_EQ(link_wire::decode_frames(under.reader(), payload, 8, out),
            "the message's payload section is longer than its frames");
  batch_of huge({uint64_t{1} << 63, uint64_t{1} << 63});
  EXPECT_EQ(link_wire::decode_frames(huge.reader(), payload, 8, out),
            "frame payloads overrun the message's payload section");
  batch_of many(std::vector<uint64_t>(link_wire::max_batch_frames + 1, 0));
  EXPECT_THAT(link_wire::decode_frames(many.reader(), payload, 0, out),
              Optional(HasSubstr("a batch of 4097 frames (at most 4096)")));
  EXPECT_TRUE(out.empty());
}

}  // namespace
