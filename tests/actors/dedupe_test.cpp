#include <troupe/dedupe.hpp>

#include <gtest/gtest.h>

using troupe::dedupe_window;

TEST(dedupe, a_frame_is_taken_once_per_stream_seq_and_part) {
  dedupe_window d(16);
  EXPECT_TRUE(d.admit(1, 5, 0));
  EXPECT_FALSE(d.admit(1, 5, 0));
  EXPECT_TRUE(d.admit(1, 5, 1));  // another output of the same input
  EXPECT_TRUE(d.admit(2, 5, 0));  // another stream
  EXPECT_TRUE(d.admit(1, 3, 0));  // out of order, within the window
}

TEST(dedupe, memory_is_bounded_and_old_keys_stay_seen) {
  dedupe_window d(8);
  for (uint64_t s = 0; s < 10000; ++s) ASSERT_TRUE(d.admit(0, s, 0));
  // Everything below the window's floor counts as seen, so a late replay is dropped.
  EXPECT_FALSE(d.admit(0, 0, 0));
  EXPECT_FALSE(d.admit(0, 9000, 0));
  EXPECT_FALSE(d.admit(0, 9999, 0));
  EXPECT_TRUE(d.admit(0, 10000, 0));
}

TEST(dedupe, out_of_order_within_the_window_and_parts_have_their_own) {
  dedupe_window d(128);
  // Two upstream replicas interleave a stream out of order, within the window.
  for (uint64_t s : {10, 12, 11, 14, 13, 200, 150, 199}) EXPECT_TRUE(d.admit(7, s, 0)) << s;
  for (uint64_t s : {10, 12, 11, 14, 13, 200, 150, 199}) EXPECT_FALSE(d.admit(7, s, 0)) << s;
  EXPECT_FALSE(d.admit(7, 5, 0)) << "left behind the window when the stream jumped to 200: seen";
  EXPECT_TRUE(d.admit(7, 198, 0));
  // Further outputs of an input are keys of their own, with their own floor.
  EXPECT_TRUE(d.admit(7, 200, 1));
  EXPECT_FALSE(d.admit(7, 200, 1));
  for (uint32_t p = 1; p <= 200; ++p) d.admit(7, 300, p);
  EXPECT_FALSE(d.admit(7, 200, 2)) << "below the parts' floor: seen";
}
