// avfilter: runs each video frame through an FFmpeg filter graph given as text, as the ffmpeg
// tool's -vf takes it (e.g. "hue=s=0", "boxblur=4", "drawbox=x=10:y=10:w=100:h=50:color=red").
// Frames come out in their own pixel format.
#include "../media/graph_filter.hpp"

namespace {

using namespace troupe::media;

class avfilter : public graph_filter {
 public:
  explicit avfilter(troupe::context& ctx) : graph_filter(ctx, "avfilter"), graph_(ctx.config.get_string("graph")) {
    if (graph_.empty()) throw troupe::fatal_error("avfilter: config 'graph' is required, e.g. \"hue=s=0\"");
    av_log_scope scope(host());
    // Parsed once here, so that an unknown filter or option fails create, not the first frame.
    std::unique_ptr<AVFilterGraph, void (*)(AVFilterGraph*)> probe(avfilter_graph_alloc(),
                                                                   [](AVFilterGraph* g) { avfilter_graph_free(&g); });
    AVFilterInOut *in = nullptr, *out = nullptr;
    int err = probe ? avfilter_graph_parse2(probe.get(), graph_.c_str(), &in, &out) : AVERROR(ENOMEM);
    const bool one_each = err >= 0 && in && !in->next && out && !out->next;
    avfilter_inout_free(&in);
    avfilter_inout_free(&out);
    if (err < 0) fail("the graph \"" + graph_ + "\" cannot be read", err);
    if (!one_each)
      throw troupe::fatal_error("avfilter: the graph \"" + graph_ + "\" must have one input and one output");
  }

 private:
  struct inout_closer {
    void operator()(AVFilterInOut* io) const { avfilter_inout_free(&io); }
  };

  void link(AVFilterGraph* graph, AVFilterContext* source, AVFilterContext* sink) override {
    // The text's unlabelled input is fed by the source, its output feeds the sink.
    std::unique_ptr<AVFilterInOut, inout_closer> outputs(avfilter_inout_alloc()), inputs(avfilter_inout_alloc());
    if (!outputs || !inputs) throw troupe::fatal_error("avfilter: out of memory for a filter graph");
    outputs->name = av_strdup("in");
    outputs->filter_ctx = source;
    inputs->name = av_strdup("out");
    inputs->filter_ctx = sink;
    AVFilterInOut* in = inputs.release();
    AVFilterInOut* out = outputs.release();
    int err = avfilter_graph_parse_ptr(graph, graph_.c_str(), &in, &out, nullptr);
    avfilter_inout_free(&in);
    avfilter_inout_free(&out);
    if (err < 0) fail("the graph \"" + graph_ + "\" cannot be built (one video input, one video output)", err);
  }

  const std::string graph_;
};

}  // namespace

TROUPE_PLUGIN("avfilter", avfilter)
