// passthrough, invert, blur, watermark, detect.
#include "plugin_fixture.hpp"

using namespace troupe;
using namespace troupe::test;

TEST(passthrough, output_shares_the_input_payload) {
  plugin_fixture p("passthrough");
  ASSERT_TRUE(p.create_result.ok() && p.start().ok());
  auto in = rgb_frame(
      4, 4, [](int x, int, int) { return uint8_t(x); }, 3, 9);
  ASSERT_TRUE(p.process(in).ok());
  ASSERT_EQ(p.outputs.size(), 1u);
  EXPECT_EQ(p.outputs[0].payload.data(), in.payload.data());
  EXPECT_EQ(p.outputs[0].payload.buffer().get(), in.payload.buffer().get());
  EXPECT_EQ(p.outputs[0].stream, 3u);
  EXPECT_EQ(p.outputs[0].seq, 9u);
  EXPECT_EQ(p.outputs[0].generation, 1u);
  EXPECT_EQ(p.outputs[0].meta.get(), in.meta.get());  // metadata shared too
}

TEST(invert, twice_is_identity_and_a_pixel_is_inverted) {
  plugin_fixture p("invert");
  ASSERT_TRUE(p.create_result.ok() && p.start().ok());
  auto in = rgb_frame(5, 3, [](int x, int y, int c) { return uint8_t(x * 40 + y * 7 + c); });
  ASSERT_TRUE(p.process(in).ok());
  auto once = p.outputs.at(0);
  EXPECT_EQ(px(once, 5, 2, 1, 0), 255 - (2 * 40 + 7));
  EXPECT_NE(once.payload.data(), in.payload.data());
  ASSERT_TRUE(p.process(once).ok());
  EXPECT_EQ(std::memcmp(p.outputs.at(0).payload.data(), in.payload.data(), in.payload.size()), 0);
  frame doc = in;
  doc.type = "text/plain";
  auto r = p.process(doc);
  EXPECT_EQ(r.status, TROUPE_ERROR);
  EXPECT_THAT(r.error,
              ::testing::HasSubstr("expected a video/rgb24, video/gray8 or video/yuv420p frame, got 'text/plain'"));
}

TEST(blur, constant_image_stays_constant_and_a_point_spreads_over_the_box) {
  plugin_fixture p("blur", {{"radius", "1"}});
  ASSERT_TRUE(p.create_result.ok() && p.start().ok());
  auto flat = rgb_frame(9, 7, [](int, int, int) { return uint8_t(77); });
  ASSERT_TRUE(p.process(flat).ok());
  for (size_t i = 0; i < flat.payload.size(); ++i) ASSERT_EQ(p.outputs.at(0).payload.data()[i], 77);

  auto dot = rgb_frame(9, 9, [](int x, int y, int) { return uint8_t(x == 4 && y == 4 ? 255 : 0); });
  ASSERT_TRUE(p.process(dot).ok());
  auto& out = p.outputs.at(0);
  int lit = 0, total = 0;
  for (int y = 0; y < 9; ++y)
    for (int x = 0; x < 9; ++x) {
      auto v = px(out, 9, x, y, 0);
      bool inside = std::abs(x - 4) <= 1 && std::abs(y - 4) <= 1;
      if (v > 0) ++lit;
      EXPECT_EQ(v > 0, inside) << x << "," << y;
      total += v;
    }
  EXPECT_EQ(lit, 9);
  EXPECT_NEAR(total, 255, 9);  // rounding per pass
}

TEST(blur, radius_zero_forwards_and_a_wrong_size_fails_the_frame) {
  plugin_fixture p("blur", {{"radius", "0"}});
  ASSERT_TRUE(p.create_result.ok() && p.start().ok());
  auto in = rgb_frame(4, 4, [](int, int, int) { return uint8_t(1); });
  ASSERT_TRUE(p.process(in).ok());
  EXPECT_EQ(p.outputs.at(0).payload.data(), in.payload.data());

  plugin_fixture q("blur", {{"radius", "2"}});
  ASSERT_TRUE(q.create_result.ok() && q.start().ok());
  in.meta = std::make_shared<metadata>(metadata{{"width", "5"}, {"height", "4"}});
  auto r = q.process(in);
  EXPECT_EQ(r.status, TROUPE_ERROR);
  EXPECT_THAT(r.error, ::testing::HasSubstr("expected 60 bytes"));
}

TEST(watermark, changes_only_pixels_inside_the_mark_and_is_deterministic) {
  plugin_fixture p("watermark", {{"text", "AB"}, {"x", "2"}, {"y", "3"}, {"opacity", "1"}});
  ASSERT_TRUE(p.create_result.ok() && p.start().ok());
  auto in = rgb_frame(64, 32, [](int, int, int) { return uint8_t(10); });
  ASSERT_TRUE(p.process(in).ok());
  auto a = p.outputs.at(0);
  ASSERT_TRUE(p.process(in).ok());
  EXPECT_EQ(std::memcmp(a.payload.data(), p.outputs.at(0).payload.data(), a.payload.size()), 0);
  int changed = 0;
  // Two glyph cells of 5x7 scaled 2x, 12 pixels apart: x in [2, 2+12+10), y in [3, 3+14).
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 64; ++x)
      if (px(a, 64, x, y, 0) != 10) {
        ++changed;
        EXPECT_TRUE(x >= 2 && x < 24 && y >= 3 && y < 17) << x << "," << y;
      }
  EXPECT_GT(changed, 0);
  // A mark past the right edge is clipped, not written out of bounds.
  plugin_fixture q("watermark", {{"text", "XYZ"}, {"x", "60"}, {"y", "28"}});
  ASSERT_TRUE(q.create_result.ok() && q.start().ok());
  EXPECT_TRUE(q.process(in).ok());
}

TEST(detect, finds_a_bright_cell_where_it_is_and_nothing_on_black) {
  plugin_fixture p("detect", {{"cell", "8"}, {"threshold", "200"}});
  ASSERT_TRUE(p.create_result.ok() && p.start().ok());
  auto bright = rgb_frame(32, 16, [](int x, int y, int) { return uint8_t(x >= 16 && x < 24 && y < 8 ? 255 : 0); });
  ASSERT_TRUE(p.process(bright).ok());
  auto& d = p.outputs.at(0);
  EXPECT_EQ(d.type, "meta/detections");
  EXPECT_EQ(*d.find_meta("count"), "1");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(d.payload.data()), d.payload.size()), "16 0 8 8\n");
  auto black = rgb_frame(32, 16, [](int, int, int) { return uint8_t(0); });
  ASSERT_TRUE(p.process(black).ok());
  EXPECT_EQ(*p.outputs.at(0).find_meta("count"), "0");
  EXPECT_EQ(p.outputs.at(0).payload.size(), 0u);
}
