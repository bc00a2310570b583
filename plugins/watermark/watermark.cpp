// watermark: copies an RGB24 frame and blends a mark into it at (x, y): one 5x7 glyph
// cell per character of `text`, scaled 2x, whose lit pixels come from a hash of the
// character (a stable pattern, not a font). Clipped to the frame.
#include <troupe/plugin.hpp>

#include <algorithm>
#include <cstring>
#include <string>

namespace {

class watermark : public troupe::plugin {
 public:
  static constexpr int glyph_w = 5, glyph_h = 7, scale = 2;

  explicit watermark(troupe::context& ctx)
      : plugin(ctx),
        text_(ctx.config.get_string("text", "troupe")),
        x_(ctx.config.get_int("x", 16)),
        y_(ctx.config.get_int("y", 16)),
        opacity_(std::clamp(ctx.config.get_double("opacity", 0.5), 0.0, 1.0)) {}

  void process(const troupe::frame_in& in) override {
    const int64_t w = in.meta_int("width"), h = in.meta_int("height");
    if (w <= 0 || h <= 0 || in.size() != static_cast<size_t>(w * h * 3))
      throw troupe::frame_error("watermark: expected an RGB24 frame with width/height metadata");
    uint8_t* out = alloc(in.size());
    std::memcpy(out, in.data(), in.size());
    const int alpha = static_cast<int>(opacity_ * 256);
    for (size_t i = 0; i < text_.size(); ++i) {
      const uint64_t bits = glyph(static_cast<unsigned char>(text_[i]));
      const int64_t gx = x_ + static_cast<int64_t>(i) * (glyph_w + 1) * scale;
      for (int row = 0; row < glyph_h * scale; ++row)
        for (int col = 0; col < glyph_w * scale; ++col) {
          if (!((bits >> ((row / scale) * glyph_w + col / scale)) & 1)) continue;
          const int64_t px = gx + col, py = y_ + row;
          if (px < 0 || py < 0 || px >= w || py >= h) continue;
          uint8_t* p = out + (py * w + px) * 3;
          for (int k = 0; k < 3; ++k) p[k] = static_cast<uint8_t>(p[k] + (((255 - p[k]) * alpha) >> 8));
        }
    }
    troupe::frame_out o;
    o.meta.assign(in.view().meta, in.view().meta + in.view().meta_count);
    o.data = out;
    o.size = in.size();
    emit(o);
  }

 private:
  // 35 bits of pattern for a character; a space is blank.
  static uint64_t glyph(unsigned char c) {
    if (c == ' ') return 0;
    uint64_t x = c * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 32;
    return (x & ((1ull << 35) - 1)) | 1ull;  // never blank
  }

  const std::string text_;
  const int64_t x_, y_;
  const double opacity_;
};

}  // namespace

TROUPE_PLUGIN("watermark", watermark)
