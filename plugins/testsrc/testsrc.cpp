// testsrc: a source of deterministic RGB24 test patterns: colour bars shifted by seq and
// stream, and a bright square that moves, so that detectors find something. The same
// (stream, seq) always gives the same bytes.
#include <troupe/plugin.hpp>

#include <algorithm>
#include <chrono>
#include <string>

namespace {

class testsrc : public troupe::plugin {
 public:
  explicit testsrc(troupe::context& ctx)
      : plugin(ctx),
        width_(ctx.config.get_int("width", 320)),
        height_(ctx.config.get_int("height", 240)),
        rate_(ctx.config.get_double("rate", 0)),
        count_(ctx.config.get_int("count", 100)),
        streams_(std::max<int64_t>(1, ctx.config.get_int("streams", 1))),
        first_stream_(ctx.config.get_int("first_stream", 0)),
        width_text_(std::to_string(width_)),
        height_text_(std::to_string(height_)) {
    if (width_ <= 0 || height_ <= 0) throw troupe::fatal_error("testsrc: width and height must be positive");
    if (!(rate_ >= 0 && rate_ <= 1e9))  // NaN fails both
      throw troupe::fatal_error("testsrc: rate must be a number of frames per second from 0 (unpaced) to 1e9");
    if (count_ < 0 || streams_ > 1000000 || count_ > INT64_MAX / streams_)
      throw troupe::fatal_error("testsrc: count and streams must be non-negative, and count * streams fit 64 bits");
  }

  void start() override { started_ = std::chrono::steady_clock::now(); }

  bool produce() override {
    const int64_t total = count_ * streams_;
    int64_t due = total;
    if (rate_ > 0) {
      double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
      // In double until it is known to fit: a long run at a high rate passes any integer.
      double frames = (elapsed * rate_ + 1) * static_cast<double>(streams_);
      due = frames >= static_cast<double>(total) ? total : static_cast<int64_t>(frames) / streams_ * streams_;
    }
    for (int emitted = 0; next_ < due && emitted < max_per_call; ++emitted, ++next_)
      emit_frame(static_cast<uint64_t>(first_stream_ + next_ % streams_), static_cast<uint64_t>(next_ / streams_));
    return next_ < total;
  }

 private:
  static constexpr int max_per_call = 8;

  void emit_frame(uint64_t stream, uint64_t seq) {
    const size_t size = static_cast<size_t>(width_ * height_ * 3);
    uint8_t* px = alloc(size);
    static constexpr uint8_t bars[8][3] = {{255, 255, 255}, {255, 255, 0}, {0, 255, 255}, {0, 255, 0},
                                           {255, 0, 255},   {255, 0, 0},   {0, 0, 255},   {0, 0, 0}};
    const int64_t bar_w = std::max<int64_t>(1, width_ / 8);
    const int64_t shift = static_cast<int64_t>(seq * 4 + stream * 16);
    // One row of bars, dimmed so that only the square is bright, then copied down.
    for (int64_t x = 0; x < width_; ++x) {
      auto& c = bars[((x + shift) / bar_w) % 8];
      for (int k = 0; k < 3; ++k) px[x * 3 + k] = static_cast<uint8_t>(c[k] * 3 / 5);
    }
    for (int64_t y = 1; y < height_; ++y) std::copy_n(px, width_ * 3, px + y * width_ * 3);
    // A bright square moving along the diagonal.
    const int64_t side = std::max<int64_t>(1, std::min(width_, height_) / 6);
    const int64_t x0 =
        static_cast<int64_t>((seq * 7 + stream * 13) % static_cast<uint64_t>(std::max<int64_t>(1, width_ - side)));
    const int64_t y0 =
        static_cast<int64_t>((seq * 5 + stream * 11) % static_cast<uint64_t>(std::max<int64_t>(1, height_ - side)));
    for (int64_t y = y0; y < std::min(height_, y0 + side); ++y)
      std::fill_n(px + (y * width_ + x0) * 3, std::min(side, width_ - x0) * 3, uint8_t{250});
    troupe::frame_out o;
    o.stream = stream;
    o.seq = seq;
    o.timestamp_ns = rate_ > 0 ? static_cast<int64_t>(seq * 1e9 / rate_) : static_cast<int64_t>(seq) * 33333333;
    o.type = "video/rgb24";
    o.meta = {{"width", width_text_.c_str()}, {"height", height_text_.c_str()}};
    o.data = px;
    o.size = size;
    emit(o);
  }

  const int64_t width_, height_;
  const double rate_;
  const int64_t count_, streams_, first_stream_;
  const std::string width_text_, height_text_;
  std::chrono::steady_clock::time_point started_;
  int64_t next_ = 0;  // frames emitted across all streams
};

}  // namespace

TROUPE_PLUGIN("testsrc", testsrc)
