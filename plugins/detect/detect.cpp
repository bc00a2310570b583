// detect: finds bright regions. The frame is cut into cells of `cell` pixels; a cell whose
// mean luma exceeds `threshold` is a detection. Emits one "meta/detections" frame per input
// whose payload is text lines "x y w h", with no pixels.
#include <troupe/plugin.hpp>

#include <algorithm>
#include <string>

namespace {

class detect : public troupe::plugin {
 public:
  explicit detect(troupe::context& ctx)
      : plugin(ctx), cell_(ctx.config.get_int("cell", 32)), threshold_(ctx.config.get_int("threshold", 200)) {}

  void process(const troupe::frame_in& in) override {
    const int64_t w = in.meta_int("width"), h = in.meta_int("height");
    if (w <= 0 || h <= 0 || in.size() != static_cast<size_t>(w * h * 3))
      throw troupe::frame_error("detect: expected an RGB24 frame with width/height metadata");
    boxes_.clear();
    int64_t count = 0;
    for (int64_t cy = 0; cy < h; cy += cell_)
      for (int64_t cx = 0; cx < w; cx += cell_) {
        const int64_t cw = std::min(cell_, w - cx), ch = std::min(cell_, h - cy);
        int64_t sum = 0;
        for (int64_t y = cy; y < cy + ch; ++y) {
          const uint8_t* p = in.data() + (y * w + cx) * 3;
          for (int64_t x = 0; x < cw; ++x, p += 3) sum += (p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8;
        }
        if (sum > threshold_ * cw * ch) {
          boxes_ += std::to_string(cx) + " " + std::to_string(cy) + " " + std::to_string(cw) + " " +
                    std::to_string(ch) + "\n";
          ++count;
        }
      }
    count_ = std::to_string(count);
    width_ = std::to_string(w);
    height_ = std::to_string(h);
    troupe::frame_out o;
    o.type = "meta/detections";
    o.meta = {{"count", count_.c_str()}, {"width", width_.c_str()}, {"height", height_.c_str()}};
    o.data = reinterpret_cast<const uint8_t*>(boxes_.data());
    o.size = boxes_.size();
    emit(o);
  }

 private:
  const int64_t cell_, threshold_;
  std::string boxes_, count_, width_, height_;
};

}  // namespace

TROUPE_PLUGIN("detect", detect)
