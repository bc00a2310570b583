#include "plugin_fixture.hpp"

using namespace troupe;
using namespace troupe::test;
using ::testing::HasSubstr;

namespace {
std::string run_checksum(const temp_dir& d, const std::string& name, const std::vector<frame>& frames) {
  auto out = (d.path() / name).string();
  plugin_fixture p("checksum", {{"output", out}, {"frames_log", out + ".frames"}});
  EXPECT_TRUE(p.create_result.ok() && p.start().ok());
  for (auto& f : frames) {
    EXPECT_TRUE(p.process(f).ok());
    EXPECT_TRUE(p.outputs.empty());  // a sink emits nothing
  }
  EXPECT_TRUE(p.stop().ok());
  return read_file(out);
}
}  // namespace

TEST(checksum, summary_counts_per_stream_and_digest_ignores_order) {
  temp_dir d;
  std::vector<frame> frames;
  for (uint64_t s = 0; s < 2; ++s)
    for (uint64_t q = 0; q < 3; ++q)
      frames.push_back(rgb_frame(
          2, 2, [&](int x, int, int c) { return uint8_t(x + c + q * 3 + s * 50); }, s, q));
  auto forward = run_checksum(d, "a.txt", frames);
  std::reverse(frames.begin(), frames.end());
  auto backward = run_checksum(d, "b.txt", frames);
  EXPECT_EQ(forward, backward);
  EXPECT_THAT(forward, HasSubstr("stream 0 frames 3 bytes 36 digest "));
  EXPECT_THAT(forward, HasSubstr("stream 1 frames 3 bytes 36 digest "));
  EXPECT_THAT(forward, HasSubstr("total frames 6 bytes 72 duplicates 0\n"));
  EXPECT_EQ(std::count(forward.begin(), forward.end(), '\n'), 3);
  auto log = read_file(d.path() / "a.txt.frames");
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 6);
  // Different bytes, different digest.
  frames[0] = rgb_frame(
      2, 2, [](int, int, int) { return uint8_t(200); }, frames[0].stream, frames[0].seq);
  EXPECT_NE(run_checksum(d, "c.txt", frames), backward);
}

TEST(checksum, a_frame_seen_twice_is_a_duplicate) {
  temp_dir d;
  auto f = rgb_frame(
      2, 2, [](int, int, int) { return uint8_t(1); }, 4, 7);
  auto text = run_checksum(d, "dup.txt", {f, f});
  EXPECT_THAT(text, HasSubstr("stream 4 frames 1 bytes 12"));
  EXPECT_THAT(text, HasSubstr("duplicates 1"));
}

TEST(checksum, unwritable_output_fails_stop_naming_the_path) {
  plugin_fixture p("checksum", {{"output", "/nonexistent-dir/sum.txt"}});
  ASSERT_TRUE(p.create_result.ok() && p.start().ok());
  auto r = p.stop();
  EXPECT_EQ(r.status, TROUPE_FATAL);
  EXPECT_THAT(r.error, HasSubstr("/nonexistent-dir/sum.txt"));
}

TEST(checksum, a_long_stream_is_counted_exactly_while_only_recent_keys_are_kept) {
  temp_dir d;
  std::vector<frame> frames;
  const uint64_t n = 40000;  // more than the 16384 keys a stream keeps
  for (uint64_t q = 0; q < n; ++q) {
    // Out of order by a little, as replicas deliver: pairs swapped.
    uint64_t seq = q % 2 == 0 ? q + 1 : q - 1;
    frames.push_back(rgb_frame(
        1, 1, [&](int, int, int c) { return uint8_t(seq + c); }, 0, seq));
  }
  // Sent again: one long ago (below what is kept: still seen), one recent.
  frames.push_back(frames[10]);
  frames.push_back(frames[n - 3]);
  auto text = run_checksum(d, "long.txt", frames);
  EXPECT_THAT(text, HasSubstr("stream 0 frames 40000 bytes 120000 digest "));
  EXPECT_THAT(text, HasSubstr("duplicates 2\n"));
}
