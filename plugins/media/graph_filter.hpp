// The filter behind `avfilter` and `overlay_text` (libavfilter): each video frame goes through
// an FFmpeg filter graph and comes out in the frame's own pixel format, with its metadata kept
// and width/height updated. The graph is built on the first frame, and again when a frame's
// geometry or format changes. A filter that makes more frames of one (or none) emits them all
// (or nothing).
#pragma once

#include "av.hpp"

extern "C" {
#include <libavfilter/avfilter.h>
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavutil/opt.h>
}

#include <string>
#include <vector>

namespace troupe::media {

class graph_filter : public troupe::plugin {
 public:
  graph_filter(troupe::context& ctx, std::string name) : plugin(ctx), name_(std::move(name)) {}

  void process(const troupe::frame_in& in) override {
    av_log_scope scope(host());
    const picture p = picture_of(in, name_);
    const timing t = timing_of(in);
    if (!graph_ || p.width != width_ || p.height != height_ || p.format != format_) build(p, t.time_base);
    frame_ptr f = make_frame();
    f->format = p.format->av;
    f->width = p.width;
    f->height = p.height;
    f->pts = av_rescale_q(t.pts, t.time_base, time_base_);
    f->sample_aspect_ratio = {1, 1};
    av_image_fill_arrays(f->data, f->linesize, in.data(), p.format->av, p.width, p.height, 1);
    // Not reference-counted: the source copies it, as the input is only valid during this call.
    if (int err = av_buffersrc_write_frame(source_, f.get()); err < 0)
      throw troupe::frame_error(name_ + ": the filter graph refused the frame: " + av_text(err));
    frame_ptr out = make_frame();
    for (;;) {
      int got = av_buffersink_get_frame(sink_, out.get());
      if (got == AVERROR(EAGAIN) || got == AVERROR_EOF) break;
      if (got < 0) throw troupe::frame_error(name_ + ": filtering failed: " + av_text(got));
      emit_frame(in, *out);
      av_frame_unref(out.get());
    }
  }

 protected:
  /// Links source -> (the plugin's filters) -> sink in graph; throws fatal_error naming what
  /// is wrong.
  virtual void link(AVFilterGraph* graph, AVFilterContext* source, AVFilterContext* sink) = 0;

  [[noreturn]] void fail(const std::string& what, int err) const {
    throw troupe::fatal_error(name_ + ": " + what + ": " + av_text(err));
  }

  const std::string name_;

 private:
  struct graph_closer {
    void operator()(AVFilterGraph* g) const { avfilter_graph_free(&g); }
  };

  void build(const picture& p, AVRational tb) {
    graph_.reset(avfilter_graph_alloc());
    if (!graph_) throw troupe::fatal_error(name_ + ": out of memory for a filter graph");
    graph_->nb_threads = 1;  // the runtime runs replicas for parallelism
    const std::string args = "video_size=" + std::to_string(p.width) + "x" + std::to_string(p.height) +
                             ":pix_fmt=" + std::to_string(p.format->av) + ":time_base=" + rational_text(tb) +
                             ":pixel_aspect=1/1";
    if (int err = avfilter_graph_create_filter(&source_, avfilter_get_by_name("buffer"), "in", args.c_str(), nullptr,
                                               graph_.get());
        err < 0)
      fail("cannot make the graph's source", err);
    if (int err = avfilter_graph_create_filter(&sink_, avfilter_get_by_name("buffersink"), "out", nullptr, nullptr,
                                               graph_.get());
        err < 0)
      fail("cannot make the graph's sink", err);
    const AVPixelFormat formats[] = {p.format->av, AV_PIX_FMT_NONE};  // out in the frame's own format
    if (int err = av_opt_set_int_list(sink_, "pix_fmts", formats, AV_PIX_FMT_NONE, AV_OPT_SEARCH_CHILDREN); err < 0)
      fail("cannot set the graph's output format", err);
    link(graph_.get(), source_, sink_);
    if (int err = avfilter_graph_config(graph_.get(), nullptr); err < 0) fail("the filter graph does not work", err);
    width_ = p.width;
    height_ = p.height;
    format_ = p.format;
    time_base_ = tb;
  }

  void emit_frame(const troupe::frame_in& in, const AVFrame& out) {
    const auto fmt = static_cast<AVPixelFormat>(out.format);
    const size_t size = image_size(fmt, out.width, out.height);
    uint8_t* data = alloc(size);
    if (int err = av_image_copy_to_buffer(data, static_cast<int>(size), out.data, out.linesize, fmt, out.width,
                                          out.height, 1);
        err < 0)
      throw troupe::frame_error(name_ + ": " + av_text(err));
    width_text_ = std::to_string(out.width);
    height_text_ = std::to_string(out.height);
    troupe::frame_out o;
    o.meta = picture_meta(in, width_text_, height_text_);
    o.data = data;
    o.size = size;
    emit(o);
  }

  std::unique_ptr<AVFilterGraph, graph_closer> graph_;
  AVFilterContext *source_ = nullptr, *sink_ = nullptr;
  int width_ = 0, height_ = 0;
  const pixel_format* format_ = nullptr;
  AVRational time_base_{1, 1};
  std::string width_text_, height_text_;
};

}  // namespace troupe::media
