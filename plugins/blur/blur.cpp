// blur: a separable box blur of RGB24 frames with running sums: O(width * height) per pass
// whatever the radius. Edges repeat the border pixel.
#include <troupe/plugin.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace {

class blur : public troupe::plugin {
 public:
  explicit blur(troupe::context& ctx) : plugin(ctx), radius_(ctx.config.get_int("radius", 2)) {}

  void process(const troupe::frame_in& in) override {
    if (radius_ == 0) return forward(in);
    const int64_t w = in.meta_int("width"), h = in.meta_int("height");
    if (w <= 0 || h <= 0) throw troupe::frame_error("blur: frame has no valid width/height metadata");
    const size_t expected = static_cast<size_t>(w * h * 3);
    if (in.size() != expected)
      throw troupe::frame_error("blur: expected " + std::to_string(expected) + " bytes for " + std::to_string(w) + "x" +
                                std::to_string(h) + " RGB24, got " + std::to_string(in.size()));
    tmp_.resize(expected);
    uint8_t* out = alloc(expected);
    pass(in.data(), tmp_.data(), w, h, 3, w * 3);  // horizontal: step one pixel, lines are rows
    pass(tmp_.data(), out, h, w, w * 3, 3);        // vertical: step one row, lines are columns
    troupe::frame_out o;
    o.meta.assign(in.view().meta, in.view().meta + in.view().meta_count);
    o.data = out;
    o.size = expected;
    emit(o);
  }

 private:
  // Blurs `lines` lines of `n` pixels each; `step` is the distance between neighbours
  // along a line, `stride` between the starts of two lines (both in bytes).
  void pass(const uint8_t* src, uint8_t* dst, int64_t n, int64_t lines, int64_t step, int64_t stride) const {
    const int64_t r = radius_, window = 2 * r + 1;
    for (int64_t line = 0; line < lines; ++line) {
      const uint8_t* s = src + line * stride;
      uint8_t* d = dst + line * stride;
      for (int c = 0; c < 3; ++c) {
        auto at = [&](int64_t i) -> int64_t { return s[std::clamp<int64_t>(i, 0, n - 1) * step + c]; };
        int64_t sum = 0;
        for (int64_t i = -r; i <= r; ++i) sum += at(i);
        for (int64_t i = 0; i < n; ++i) {
          d[i * step + c] = static_cast<uint8_t>((sum + window / 2) / window);
          sum += at(i + r + 1) - at(i - r);
        }
      }
    }
  }

  const int64_t radius_;
  std::vector<uint8_t> tmp_;
};

}  // namespace

TROUPE_PLUGIN("blur", blur)
