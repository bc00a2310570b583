#include "plugin_fixture.hpp"

using namespace troupe;
using namespace troupe::test;

TEST(testsrc, same_stream_and_seq_give_the_same_bytes) {
  plugin_fixture a("testsrc", {{"width", "40"}, {"height", "30"}, {"count", "3"}, {"streams", "2"}});
  plugin_fixture b("testsrc", {{"width", "40"}, {"height", "30"}, {"count", "3"}, {"streams", "2"}});
  ASSERT_TRUE(a.create_result.ok() && a.start().ok() && b.create_result.ok() && b.start().ok());
  std::vector<frame> fa, fb;
  while (a.produce().status == TROUPE_OK) fa.insert(fa.end(), a.outputs.begin(), a.outputs.end());
  fa.insert(fa.end(), a.outputs.begin(), a.outputs.end());
  while (b.produce().status == TROUPE_OK) fb.insert(fb.end(), b.outputs.begin(), b.outputs.end());
  fb.insert(fb.end(), b.outputs.begin(), b.outputs.end());
  ASSERT_EQ(fa.size(), 6u);  // count per stream x streams, interleaved
  ASSERT_EQ(fb.size(), 6u);
  for (size_t i = 0; i < fa.size(); ++i) {
    EXPECT_EQ(fa[i].stream, i % 2);
    EXPECT_EQ(fa[i].seq, i / 2);
    EXPECT_EQ(fa[i].type, "video/rgb24");
    EXPECT_EQ(fa[i].payload.size(), 40u * 30 * 3);
    EXPECT_EQ(*fa[i].find_meta("width"), "40");
    EXPECT_EQ(std::memcmp(fa[i].payload.data(), fb[i].payload.data(), fa[i].payload.size()), 0) << i;
  }
  EXPECT_NE(std::memcmp(fa[0].payload.data(), fa[2].payload.data(), fa[0].payload.size()),
            0);  // seq 0 vs 1 of stream 0
  EXPECT_NE(std::memcmp(fa[0].payload.data(), fa[1].payload.data(), fa[0].payload.size()), 0);  // stream 0 vs 1
}

TEST(testsrc, ends_after_count_and_rate_paces_emission) {
  plugin_fixture p("testsrc", {{"width", "8"}, {"height", "8"}, {"count", "1000"}, {"rate", "1"}});
  ASSERT_TRUE(p.create_result.ok() && p.start().ok());
  ASSERT_EQ(p.produce().status, TROUPE_OK);
  EXPECT_EQ(p.outputs.size(), 1u);  // one frame is due at once, the next after a second
  ASSERT_EQ(p.produce().status, TROUPE_OK);
  EXPECT_EQ(p.outputs.size(), 0u);

  plugin_fixture q("testsrc", {{"width", "8"}, {"height", "8"}, {"count", "2"}});
  ASSERT_TRUE(q.create_result.ok() && q.start().ok());
  EXPECT_EQ(q.produce().status, TROUPE_END);
  EXPECT_EQ(q.outputs.size(), 2u);
}
