// invert: out = 255 - in for every byte of an 8-bit video frame (rgb24, gray8 or yuv420p:
// a negative, as FFmpeg's negate filter makes it), into a host-owned buffer.
#include <troupe/plugin.hpp>

namespace {

class invert : public troupe::plugin {
 public:
  explicit invert(troupe::context& ctx) : plugin(ctx) {}
  void process(const troupe::frame_in& in) override {
    if (in.type() != "video/rgb24" && in.type() != "video/gray8" && in.type() != "video/yuv420p")
      throw troupe::frame_error("invert: expected a video/rgb24, video/gray8 or video/yuv420p frame, got '" +
                                std::string(in.type()) + "'");
    uint8_t* out = alloc(in.size());
    const uint8_t* src = in.data();
    for (size_t i = 0; i < in.size(); ++i) out[i] = static_cast<uint8_t>(255 - src[i]);
    troupe::frame_out o;  // stream, seq, type, timestamp and metadata: the input's
    o.data = out;
    o.size = in.size();
    emit(o);
  }
};

}  // namespace

TROUPE_PLUGIN("invert", invert)
