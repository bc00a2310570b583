// The filter behind `scale` and `convert` (libswscale): resizes a frame and/or converts its
// pixel format, keeping every other metadata entry (pts, time_base, ...) and updating width,
// height and format.
#pragma once

#include "av.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace troupe::media {

class sws_filter : public troupe::plugin {
 public:
  /// name: the plugin's name in errors; resize: whether width/height are read from config.
  sws_filter(troupe::context& ctx, std::string name, bool resize)
      : plugin(ctx),
        name_(std::move(name)),
        width_(resize ? static_cast<int>(ctx.config.get_int("width", 0)) : 0),
        height_(resize ? static_cast<int>(ctx.config.get_int("height", 0)) : 0),
        format_(find_format(ctx.config.get_string("format", "same"))),
        flags_(algorithm(ctx.config.get_string("algorithm", "bicubic"))) {
    if (format_ == nullptr && ctx.config.get_string("format", "same") != "same")
      throw troupe::fatal_error(name_ + ": format must be same, rgb24, gray8 or yuv420p");
    if (width_ < 0 || height_ < 0 || width_ > 16384 || height_ > 16384)
      throw troupe::fatal_error(name_ + ": width and height must be from 0 (keep) to 16384");
  }

  void process(const troupe::frame_in& in) override {
    av_log_scope scope(host());
    const picture p = picture_of(in, name_);
    const pixel_format* to = format_ ? format_ : p.format;
    int w = width_, h = height_;
    if (w == 0 && h == 0) {
      w = p.width;
      h = p.height;
    } else if (w == 0) {  // keep the aspect ratio
      w = std::max(1, static_cast<int>(std::lround(static_cast<double>(p.width) * h / p.height)));
    } else if (h == 0) {
      h = std::max(1, static_cast<int>(std::lround(static_cast<double>(p.height) * w / p.width)));
    }
    if (to->av == AV_PIX_FMT_YUV420P && (w % 2 || h % 2)) {  // 4:2:0 chroma needs even sizes
      w += w % 2;
      h += h % 2;
    }
    const size_t size = image_size(to->av, w, h);
    uint8_t* out = alloc(size);
    const planes src(in.data(), p.format->av, p.width, p.height), dst(out, to->av, w, h);
    copy_picture(sws_, src.data, src.linesize, p.width, p.height, p.format->av, dst.data, dst.linesize, w, h, to->av,
                 flags_, name_);
    width_text_ = std::to_string(w);
    height_text_ = std::to_string(h);
    troupe::frame_out o;
    o.type = to->type.data();
    o.meta = picture_meta(in, width_text_, height_text_, to->name.data());
    o.data = out;
    o.size = size;
    emit(o);
  }

 private:
  static int algorithm(const std::string& name) {
    if (name == "point") return SWS_POINT;
    if (name == "bilinear") return SWS_BILINEAR;
    if (name == "area") return SWS_AREA;
    if (name == "lanczos") return SWS_LANCZOS;
    return SWS_BICUBIC;
  }

  const std::string name_;
  const int width_, height_;
  const pixel_format* format_;
  const int flags_;
  sws_ptr sws_;
  std::string width_text_, height_text_;
};

}  // namespace troupe::media
