// blur: a separable box blur of RGB24 frames with running sums: O(width * height) per pass
// whatever the radius. Edges repeat the border pixel.
#include <troupe/plugin.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace {

class blur : public troupe::plugin {
 public:
  explicit blur(troupe::context& ctx) : plugin(ctx), radius_(ctx.config.get_int("radius", 2)) {
    // div_[sum] = the rounded mean of a window whose bytes add up to sum.
    const int64_t window = 2 * radius_ + 1;
    div_.resize(static_cast<size_t>(255 * window + 1));
    for (size_t sum = 0; sum < div_.size(); ++sum)
      div_[sum] = static_cast<uint8_t>((static_cast<int64_t>(sum) + window / 2) / window);
  }

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
    horizontal(in.data(), tmp_.data(), w, h);
    vertical(tmp_.data(), out, w, h);
    troupe::frame_out o;
    o.meta.assign(in.view().meta, in.view().meta + in.view().meta_count);
    o.data = out;
    o.size = expected;
    emit(o);
  }

 private:
  // Along each row, the three channels together, with running sums over the window.
  void horizontal(const uint8_t* src, uint8_t* dst, int64_t w, int64_t h) {
    const int64_t r = radius_;
    const uint8_t* div = div_.data();
    for (int64_t y = 0; y < h; ++y) {
      const uint8_t* s = src + y * w * 3;
      uint8_t* d = dst + y * w * 3;
      auto at = [&](int64_t x) { return s + std::clamp<int64_t>(x, 0, w - 1) * 3; };
      uint32_t sum[3] = {0, 0, 0};
      for (int64_t i = -r; i <= r; ++i)
        for (int c = 0; c < 3; ++c) sum[c] += at(i)[c];
      for (int64_t x = 0; x < w; ++x) {
        const uint8_t *in = at(x + r + 1), *out = at(x - r);
        for (int c = 0; c < 3; ++c) {
          d[x * 3 + c] = div[sum[c]];
          sum[c] += in[c] - out[c];
        }
      }
    }
  }

  // Down the columns, a row at a time: one running sum per byte of a row, so memory is
  // read in order (a column at a time would jump a whole row per pixel).
  void vertical(const uint8_t* src, uint8_t* dst, int64_t w, int64_t h) {
    const int64_t r = radius_, row = w * 3;
    const uint8_t* div = div_.data();
    sums_.assign(static_cast<size_t>(row), 0);
    uint32_t* sums = sums_.data();
    auto line = [&](int64_t y) { return src + std::clamp<int64_t>(y, 0, h - 1) * row; };
    for (int64_t i = -r; i <= r; ++i) {
      const uint8_t* s = line(i);
      for (int64_t x = 0; x < row; ++x) sums[x] += s[x];
    }
    for (int64_t y = 0; y < h; ++y) {
      uint8_t* d = dst + y * row;
      for (int64_t x = 0; x < row; ++x) d[x] = div[sums[x]];
      const uint8_t* in = line(y + r + 1);
      const uint8_t* out = line(y - r);
      for (int64_t x = 0; x < row; ++x) sums[x] += in[x] - out[x];
    }
  }

  const int64_t radius_;
  std::vector<uint8_t> tmp_, div_;
  std::vector<uint32_t> sums_;
};

}  // namespace

TROUPE_PLUGIN("blur", blur)
