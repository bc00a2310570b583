// overlay_text: draws a line of text on video frames with FFmpeg's drawtext filter (FreeType)
// and a TrueType font (DejaVu Sans by default, from Debian's fonts-dejavu-core).
#include "../media/graph_filter.hpp"

#include <sys/stat.h>

namespace {

using namespace troupe::media;

class overlay_text : public graph_filter {
 public:
  explicit overlay_text(troupe::context& ctx)
      : graph_filter(ctx, "overlay_text"),
        text_(ctx.config.get_string("text", "Troupe")),
        font_(ctx.config.get_string("font", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")),
        x_(ctx.config.get_string("x", "24")),
        y_(ctx.config.get_string("y", "h-th-24")),
        color_(ctx.config.get_string("color", "white")),
        size_(ctx.config.get_int("size", 32)),
        box_(ctx.config.get_bool("box", true)),
        expand_(ctx.config.get_bool("expand", false)) {
    struct stat st {};
    if (::stat(font_.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      throw troupe::fatal_error("overlay_text: font '" + font_ +
                                "' is not a file (install fonts-dejavu-core, or set font)");
  }

 private:
  void link(AVFilterGraph* graph, AVFilterContext* source, AVFilterContext* sink) override {
    const AVFilter* drawtext = avfilter_get_by_name("drawtext");
    if (drawtext == nullptr) throw troupe::fatal_error("overlay_text: this FFmpeg has no drawtext filter");
    AVFilterContext* f = avfilter_graph_alloc_filter(graph, drawtext, "text");
    if (f == nullptr) throw troupe::fatal_error("overlay_text: out of memory for a filter");
    // Options set one by one: no escaping of the text is needed.
    const std::pair<const char*, std::string> options[] = {{"text", text_},
                                                           {"fontfile", font_},
                                                           {"x", x_},
                                                           {"y", y_},
                                                           {"fontcolor", color_},
                                                           {"fontsize", std::to_string(size_)},
                                                           {"box", box_ ? "1" : "0"},
                                                           {"boxcolor", "black@0.5"},
                                                           {"boxborderw", "8"},
                                                           {"expansion", expand_ ? "normal" : "none"}};
    for (auto& [key, value] : options)
      if (int err = av_opt_set(f, key, value.c_str(), AV_OPT_SEARCH_CHILDREN); err < 0)
        fail(std::string("cannot set ") + key + " to '" + value + "'", err);
    if (int err = avfilter_init_str(f, nullptr); err < 0) fail("drawtext does not start", err);
    if (int err = avfilter_link(source, 0, f, 0); err < 0) fail("cannot link the filter", err);
    if (int err = avfilter_link(f, 0, sink, 0); err < 0) fail("cannot link the filter", err);
  }

  const std::string text_, font_, x_, y_, color_;
  const int64_t size_;
  const bool box_, expand_;
};

}  // namespace

TROUPE_PLUGIN("overlay_text", overlay_text)
