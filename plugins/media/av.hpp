// What the media plugins (video_decode, audio_decode, video_encode, scale, convert, avfilter,
// overlay_text) share on top of FFmpeg's libraries: owning handles, error texts and FFmpeg's
// log, opening an input, the pixel formats Troupe names in frame types ("video/rgb24",
// "video/gray8", "video/yuv420p"), a frame's picture and timing.
#pragma once

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/audio_fifo.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>
}

#include <troupe/plugin.hpp>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::media {

namespace detail {
// The host of the plugin call this thread is in, if any: FFmpeg's log lines made during a
// call go to that instance's log (tagged with node, stage, instance and generation).
inline thread_local const troupe_host* log_host = nullptr;
// The last error FFmpeg logged on this thread during the current call, which an error code
// alone does not say ("No such filter: 'nosuch'").
inline thread_local std::string last_error;
}  // namespace detail

/// FFmpeg's text for an error code, e.g. "Invalid data found when processing input", and what
/// FFmpeg logged as an error in the current call, if anything.
inline std::string av_text(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(err, buf, sizeof buf);
  std::string text = buf;
  if (!detail::last_error.empty()) text += " (" + detail::last_error + ")";
  return text;
}

namespace detail {
inline void log_to_host(void* avcl, int level, const char* fmt, va_list args) {
  if (level > av_log_get_level()) return;
  char line[1024];
  int prefix = 1;
  av_log_format_line2(avcl, level, fmt, args, line, sizeof line, &prefix);
  size_t n = std::strlen(line);
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
  if (n == 0) return;
  if (level <= AV_LOG_ERROR && log_host != nullptr) {  // without the "[h264 @ 0x55d0...] " prefix
    const char* text = line;
    if (const char* end = line[0] == '[' ? std::strstr(line, "] ") : nullptr) text = end + 2;
    last_error.assign(text);
  }
  if (const troupe_host* h = log_host) {
    // FFmpeg's errors are the frame errors the plugins count already: warnings here.
    const troupe_log_level to = level <= AV_LOG_ERROR     ? TROUPE_LOG_WARN
                                : level <= AV_LOG_WARNING ? TROUPE_LOG_INFO
                                : level <= AV_LOG_INFO    ? TROUPE_LOG_DEBUG
                                                          : TROUPE_LOG_TRACE;
    h->log(h->ctx, to, line);
  } else if (level <= AV_LOG_ERROR) {  // FFmpeg's own threads, outside any call
    std::fprintf(stderr, "%s\n", line);
  }
}
}  // namespace detail

/// Routes FFmpeg's log lines to the instance's log for as long as it lives; one at the top
/// of every plugin call that uses FFmpeg.
class av_log_scope {
 public:
  explicit av_log_scope(const troupe_host* host) : previous_(detail::log_host) {
    static std::once_flag once;
    std::call_once(once, [] { av_log_set_callback(&detail::log_to_host); });
    detail::log_host = host;
    detail::last_error.clear();
  }
  ~av_log_scope() { detail::log_host = previous_; }
  av_log_scope(const av_log_scope&) = delete;
  av_log_scope& operator=(const av_log_scope&) = delete;

 private:
  const troupe_host* previous_;
};

struct format_closer {
  void operator()(AVFormatContext* f) const { avformat_close_input(&f); }
};
struct codec_closer {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct frame_closer {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct packet_closer {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct sws_closer {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};
struct swr_closer {
  void operator()(SwrContext* s) const { swr_free(&s); }
};
struct fifo_closer {
  void operator()(AVAudioFifo* f) const { av_audio_fifo_free(f); }
};
using input_ptr = std::unique_ptr<AVFormatContext, format_closer>;
using codec_ptr = std::unique_ptr<AVCodecContext, codec_closer>;
using frame_ptr = std::unique_ptr<AVFrame, frame_closer>;
using packet_ptr = std::unique_ptr<AVPacket, packet_closer>;
using sws_ptr = std::unique_ptr<SwsContext, sws_closer>;
using swr_ptr = std::unique_ptr<SwrContext, swr_closer>;
using fifo_ptr = std::unique_ptr<AVAudioFifo, fifo_closer>;

inline frame_ptr make_frame() {
  frame_ptr f(av_frame_alloc());
  if (!f) throw troupe::fatal_error("out of memory for an AVFrame");
  return f;
}
inline packet_ptr make_packet() {
  packet_ptr p(av_packet_alloc());
  if (!p) throw troupe::fatal_error("out of memory for an AVPacket");
  return p;
}

/// A file or URL opened for decoding, with the decoder of one of its streams.
struct decoding {
  input_ptr input;
  codec_ptr decoder;
  int index = -1;  // of the stream in the input
};

/// Opens `path` and the decoder of its best stream of `type`, or of the stream at `index` if
/// that is not negative, with `threads` decoder threads (0: FFmpeg chooses). Throws
/// fatal_error naming the plugin, the file and what is wrong.
inline decoding open_decoding(const std::string& path, AVMediaType type, int index, int threads,
                              const std::string& plugin) {
  const std::string kind = type == AVMEDIA_TYPE_AUDIO ? "audio" : "video";
  decoding d;
  AVFormatContext* raw = nullptr;
  if (int err = avformat_open_input(&raw, path.c_str(), nullptr, nullptr); err < 0)
    throw troupe::fatal_error(plugin + ": cannot open '" + path + "': " + av_text(err));
  d.input.reset(raw);
  if (int err = avformat_find_stream_info(d.input.get(), nullptr); err < 0)
    throw troupe::fatal_error(plugin + ": '" + path + "': no stream information: " + av_text(err));
  const AVCodec* codec = nullptr;
  d.index = av_find_best_stream(d.input.get(), type, index, -1, &codec, 0);
  if (d.index < 0)
    throw troupe::fatal_error(plugin + ": '" + path + "' has no " + kind + " stream" +
                              (index >= 0 ? " at index " + std::to_string(index) : std::string()) +
                              " that can be decoded: " + av_text(d.index));
  AVStream* st = d.input->streams[d.index];
  d.decoder.reset(avcodec_alloc_context3(codec));
  if (!d.decoder) throw troupe::fatal_error(plugin + ": out of memory for a decoder");
  if (int err = avcodec_parameters_to_context(d.decoder.get(), st->codecpar); err < 0)
    throw troupe::fatal_error(plugin + ": " + av_text(err));
  d.decoder->thread_count = threads;
  d.decoder->pkt_timebase = st->time_base;
  if (int err = avcodec_open2(d.decoder.get(), codec, nullptr); err < 0)
    throw troupe::fatal_error(plugin + ": cannot open the " + std::string(codec->name) + " decoder: " + av_text(err));
  return d;
}

/// A pixel format Troupe carries in frames, by the name in its frame type.
struct pixel_format {
  std::string_view name;  // "rgb24"
  std::string_view type;  // "video/rgb24"
  AVPixelFormat av;
};
inline constexpr pixel_format pixel_formats[] = {
    {"rgb24", "video/rgb24", AV_PIX_FMT_RGB24},
    {"gray8", "video/gray8", AV_PIX_FMT_GRAY8},
    {"yuv420p", "video/yuv420p", AV_PIX_FMT_YUV420P},
};

/// The format named `name` ("rgb24") or typed `name` ("video/rgb24"); null if neither.
inline const pixel_format* find_format(std::string_view name) {
  for (auto& f : pixel_formats)
    if (f.name == name || f.type == name) return &f;
  return nullptr;
}

/// Bytes of a tightly packed image (alignment 1), as Troupe frames carry them.
inline size_t image_size(AVPixelFormat fmt, int width, int height) {
  int n = av_image_get_buffer_size(fmt, width, height, 1);
  if (n < 0) throw troupe::frame_error("no image of " + std::to_string(width) + "x" + std::to_string(height));
  return static_cast<size_t>(n);
}

/// The geometry and format of an input frame: from its type and its width/height metadata,
/// checked against its size. Throws frame_error naming what is wrong.
struct picture {
  const pixel_format* format;
  int width, height;
};
inline picture picture_of(const troupe::frame_in& in, std::string_view plugin) {
  auto* f = find_format(in.type());
  if (f == nullptr)
    throw troupe::frame_error(std::string(plugin) +
                              ": expected a frame of type video/rgb24, video/gray8 or video/yuv420p, got '" +
                              std::string(in.type()) + "'");
  const int64_t w = in.meta_int("width"), h = in.meta_int("height");
  if (w <= 0 || h <= 0 || w > 16384 || h > 16384)
    throw troupe::frame_error(std::string(plugin) + ": expected width and height metadata from 1 to 16384");
  const size_t want = image_size(f->av, static_cast<int>(w), static_cast<int>(h));
  if (in.size() != want)
    throw troupe::frame_error(std::string(plugin) + ": a " + std::to_string(w) + "x" + std::to_string(h) + " " +
                              std::string(f->name) + " frame has " + std::to_string(want) + " bytes, this one " +
                              std::to_string(in.size()));
  return {f, static_cast<int>(w), static_cast<int>(h)};
}

/// Reads "num/den" (as in time_base and frame_rate metadata); {0, 1} if it is not one.
inline AVRational parse_rational(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos) return {0, 1};
  int64_t num = 0, den = 0;
  auto a = std::from_chars(text.data(), text.data() + slash, num);
  auto b = std::from_chars(text.data() + slash + 1, text.data() + text.size(), den);
  if (a.ec != std::errc{} || b.ec != std::errc{} || a.ptr != text.data() + slash ||
      b.ptr != text.data() + text.size() || num <= 0 || den <= 0 || num > INT32_MAX || den > INT32_MAX)
    return {0, 1};
  return {static_cast<int>(num), static_cast<int>(den)};
}
inline std::string rational_text(AVRational r) { return std::to_string(r.num) + "/" + std::to_string(r.den); }

/// Adds why to a call's reasons for a frame error, "; "-separated, up to about 512 characters.
inline void add_reason(std::string& reasons, const std::string& why) {
  if (reasons.empty())
    reasons = why;
  else if (reasons.size() < 512)
    reasons += "; " + why;
}

/// When a frame is shown: its pts and time_base metadata (as the decoders emit them), or its
/// timestamp in nanoseconds.
struct timing {
  int64_t pts;
  AVRational time_base;
  int64_t ns() const { return av_rescale_q(pts, time_base, AVRational{1, 1000000000}); }
};
inline timing timing_of(const troupe::frame_in& in) {
  const int64_t pts = in.meta_int("pts", INT64_MIN);
  const AVRational tb = parse_rational(in.meta("time_base"));
  if (pts == INT64_MIN || tb.num == 0) return {in.timestamp_ns(), {1, 1000000000}};
  return {pts, tb};
}

/// The planes of a tightly packed picture in `data`.
struct planes {
  uint8_t* data[4];
  int linesize[4];
  planes(const uint8_t* p, AVPixelFormat fmt, int width, int height) {
    av_image_fill_arrays(data, linesize, p, fmt, width, height, 1);
  }
};

/// Copies a picture into dst, or converts it (size and/or format) with sws, made or reused
/// for the pair. Throws frame_error naming the plugin if libswscale has no such conversion.
inline void copy_picture(sws_ptr& sws, const uint8_t* const src[4], const int src_linesize[4], int src_w, int src_h,
                         AVPixelFormat src_fmt, uint8_t* const dst[4], const int dst_linesize[4], int dst_w, int dst_h,
                         AVPixelFormat dst_fmt, int flags, std::string_view plugin) {
  if (src_w == dst_w && src_h == dst_h && src_fmt == dst_fmt) {
    av_image_copy(const_cast<uint8_t**>(dst), const_cast<int*>(dst_linesize), const_cast<const uint8_t**>(src),
                  src_linesize, src_fmt, src_w, src_h);
    return;
  }
  sws.reset(sws_getCachedContext(sws.release(), src_w, src_h, src_fmt, dst_w, dst_h, dst_fmt, flags, nullptr, nullptr,
                                 nullptr));
  if (!sws)
    throw troupe::frame_error(std::string(plugin) + ": no conversion from " + std::to_string(src_w) + "x" +
                              std::to_string(src_h) + " " + av_get_pix_fmt_name(src_fmt) + " to " +
                              std::to_string(dst_w) + "x" + std::to_string(dst_h) + " " + av_get_pix_fmt_name(dst_fmt));
  sws_scale(sws.get(), src, src_linesize, 0, src_h, dst, dst_linesize);
}

/// The input's metadata with its picture entries replaced: width and height (texts that must
/// outlive the emit), and format if not null.
inline std::vector<troupe_kv> picture_meta(const troupe::frame_in& in, const std::string& width,
                                           const std::string& height, const char* format = nullptr) {
  std::vector<troupe_kv> meta;
  for (uint32_t i = 0; i < in.view().meta_count; ++i) {
    std::string_view key = in.view().meta[i].key;
    if (key != "width" && key != "height" && (format == nullptr || key != "format")) meta.push_back(in.view().meta[i]);
  }
  meta.push_back({"width", width.c_str()});
  meta.push_back({"height", height.c_str()});
  if (format != nullptr) meta.push_back({"format", format});
  return meta;
}

}  // namespace troupe::media
