// video_encode: a sink that encodes frames (video/rgb24, gray8 or yuv420p) with FFV1 or
// H.264 (libx264) into a file whose container its name says (.mkv, .mp4, .mov, .nut, ...).
//
// Frames may arrive out of order (replicas of a stage before it, several streams): they are
// held in a window of `window` frames ordered by (pts, stream, seq) and encoded in that order;
// a frame that arrives after a later one was encoded is refused with a frame error. pts comes
// from the frame's pts/time_base metadata (as video_decode emits it), or from its timestamp.
// The file is written as OUTPUT.part and renamed to OUTPUT when the instance stops, so a file
// under the output's name is always complete.
#include "../media/av.hpp"

extern "C" {
#include <libavutil/opt.h>
}

#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace {

using namespace troupe::media;

class video_encode : public troupe::plugin {
 public:
  explicit video_encode(troupe::context& ctx)
      : plugin(ctx),
        output_(ctx.config.get_string("output", "out.mkv")),
        codec_name_(ctx.config.get_string("codec", "ffv1")),
        preset_(ctx.config.get_string("preset", "medium")),
        crf_(static_cast<int>(ctx.config.get_int("crf", 23))),
        threads_(static_cast<int>(ctx.config.get_int("threads", 0))),
        window_(static_cast<size_t>(ctx.config.get_int("window", 32))),
        frame_rate_(parse_rational(ctx.config.get_string("frame_rate"))) {
    if (output_.empty()) throw troupe::fatal_error("video_encode: config 'output' must name a file");
    if (codec_name_ != "ffv1" && codec_name_ != "h264")
      throw troupe::fatal_error("video_encode: codec must be ffv1 or h264, not '" + codec_name_ + "'");
    if (!ctx.config.get_string("frame_rate").empty() && frame_rate_.num == 0)
      throw troupe::fatal_error("video_encode: frame_rate must be NUM/DEN, e.g. 25/1 or 30000/1001");
  }

  void process(const troupe::frame_in& in) override {
    av_log_scope scope(host());
    const picture p = picture_of(in, "video_encode");
    if (!out_) open(p, in);
    if (p.width != width_ || p.height != height_)
      throw troupe::frame_error("video_encode: the file is " + std::to_string(width_) + "x" + std::to_string(height_) +
                                ", this frame " + std::to_string(p.width) + "x" + std::to_string(p.height));
    const key k{pts_of(in), in.stream(), in.seq()};
    if (encoded_ > 0 && !(last_key_ < k)) {
      ++late_;
      throw troupe::frame_error("video_encode: frame stream " + std::to_string(in.stream()) + " seq " +
                                std::to_string(in.seq()) + " (pts " + std::to_string(std::get<0>(k)) +
                                ") came after later frames were encoded; a window larger than " +
                                std::to_string(window_) + " frames would have held them");
    }
    frame_ptr f = take_frame();
    const uint8_t* planes[4];
    int strides[4];
    av_image_fill_arrays(const_cast<uint8_t**>(planes), strides, in.data(), p.format->av, width_, height_, 1);
    if (p.format->av == encoder_->pix_fmt) {
      av_image_copy(f->data, f->linesize, planes, strides, encoder_->pix_fmt, width_, height_);
    } else {
      sws_.reset(sws_getCachedContext(sws_.release(), width_, height_, p.format->av, width_, height_, encoder_->pix_fmt,
                                      SWS_BICUBIC, nullptr, nullptr, nullptr));
      if (!sws_) throw troupe::frame_error("video_encode: no conversion from " + std::string(p.format->name));
      sws_scale(sws_.get(), planes, strides, 0, height_, f->data, f->linesize);
    }
    if (!pending_.emplace(k, std::move(f)).second) {
      ++late_;
      throw troupe::frame_error("video_encode: frame stream " + std::to_string(in.stream()) + " seq " +
                                std::to_string(in.seq()) + " is already held (a duplicate)");
    }
    while (pending_.size() > window_) encode_next();
  }

  void stop() override {
    av_log_scope scope(host());
    if (!out_) {
      log(TROUPE_LOG_WARN, "video_encode: no frame arrived; '" + output_ + "' not written");
      return;
    }
    while (!pending_.empty()) encode_next();
    send(nullptr);
    if (int err = av_write_trailer(out_.get()); err < 0)
      throw troupe::fatal_error("video_encode: finishing '" + part_ + "': " + av_text(err));
    if (int err = avio_closep(&out_->pb); err < 0)
      throw troupe::fatal_error("video_encode: closing '" + part_ + "': " + av_text(err));
    out_.reset();
    if (std::rename(part_.c_str(), output_.c_str()) != 0)
      throw troupe::fatal_error("video_encode: cannot rename '" + part_ + "' to '" + output_ + "'");
    log(TROUPE_LOG_INFO, "video_encode: wrote " + std::to_string(encoded_) + " frames to '" + output_ + "'" +
                             (late_ > 0 ? " (" + std::to_string(late_) + " refused as late or duplicate)" : ""));
  }

  ~video_encode() override {
    if (out_ && out_->pb) avio_closep(&out_->pb);  // a stop that never came: OUTPUT.part stays
  }

 private:
  using key = std::tuple<int64_t, uint64_t, uint64_t>;  // pts, stream, seq

  struct output_closer {
    void operator()(AVFormatContext* f) const { avformat_free_context(f); }
  };

  int64_t pts_of(const troupe::frame_in& in) const {
    const int64_t pts = in.meta_int("pts", INT64_MIN);
    const AVRational tb = parse_rational(in.meta("time_base"));
    if (pts != INT64_MIN && tb.num > 0) return av_rescale_q(pts, tb, encoder_->time_base);
    return av_rescale_q(in.timestamp_ns(), AVRational{1, 1000000000}, encoder_->time_base);
  }

  void open(const picture& p, const troupe::frame_in& in) {
    width_ = p.width;
    height_ = p.height;
    AVRational rate = frame_rate_.num > 0 ? frame_rate_ : parse_rational(in.meta("frame_rate"));
    if (rate.num == 0) rate = {30, 1};
    AVRational tb = parse_rational(in.meta("time_base"));
    if (tb.num == 0) tb = {1, 1000};  // timestamps in ms, from the frames' nanoseconds

    const AVCodec* codec =
        codec_name_ == "h264" ? avcodec_find_encoder_by_name("libx264") : avcodec_find_encoder(AV_CODEC_ID_FFV1);
    if (codec == nullptr)
      throw troupe::fatal_error("video_encode: this FFmpeg has no " +
                                std::string(codec_name_ == "h264" ? "libx264" : "ffv1") + " encoder");
    AVFormatContext* raw = nullptr;
    if (int err = avformat_alloc_output_context2(&raw, nullptr, nullptr, output_.c_str()); err < 0 || !raw)
      throw troupe::fatal_error("video_encode: no container for '" + output_ +
                                "' (name it .mkv, .mp4, .mov or .nut): " + av_text(err));
    out_.reset(raw);
    out_->flags |= AVFMT_FLAG_BITEXACT;  // the same frames give the same bytes

    encoder_.reset(avcodec_alloc_context3(codec));
    if (!encoder_) throw troupe::fatal_error("video_encode: out of memory for an encoder");
    encoder_->width = width_;
    encoder_->height = height_;
    encoder_->time_base = tb;
    encoder_->framerate = rate;
    encoder_->thread_count = threads_;
    encoder_->flags |= AV_CODEC_FLAG_BITEXACT;
    if (codec_name_ == "h264") {
      encoder_->pix_fmt = AV_PIX_FMT_YUV420P;
      if (width_ % 2 || height_ % 2)
        throw troupe::fatal_error("video_encode: h264 in yuv420p needs an even width and height, not " +
                                  std::to_string(width_) + "x" + std::to_string(height_));
      av_opt_set(encoder_->priv_data, "preset", preset_.c_str(), 0);
      av_opt_set_int(encoder_->priv_data, "crf", crf_, 0);
    } else {
      // Lossless in the frames' own colour model: RGB frames as bgr0.
      encoder_->pix_fmt = p.format->av == AV_PIX_FMT_RGB24 ? AV_PIX_FMT_BGR0 : p.format->av;
      encoder_->level = 3;
    }
    if (out_->oformat->flags & AVFMT_GLOBALHEADER) encoder_->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (int err = avcodec_open2(encoder_.get(), codec, nullptr); err < 0)
      throw troupe::fatal_error("video_encode: cannot open the " + std::string(codec->name) +
                                " encoder: " + av_text(err));

    AVStream* st = avformat_new_stream(out_.get(), nullptr);
    if (st == nullptr) throw troupe::fatal_error("video_encode: out of memory for a stream");
    st->time_base = encoder_->time_base;
    st->avg_frame_rate = rate;
    if (int err = avcodec_parameters_from_context(st->codecpar, encoder_.get()); err < 0)
      throw troupe::fatal_error("video_encode: " + av_text(err));
    part_ = output_ + ".part";
    if (int err = avio_open(&out_->pb, part_.c_str(), AVIO_FLAG_WRITE); err < 0)
      throw troupe::fatal_error("video_encode: cannot write '" + part_ + "': " + av_text(err));
    AVDictionary* opts = nullptr;
    if (int err = avformat_write_header(out_.get(), &opts); err < 0) {
      av_dict_free(&opts);
      throw troupe::fatal_error("video_encode: " + std::string(out_->oformat->name) + " cannot hold " + codec->name +
                                ": " + av_text(err));
    }
    av_dict_free(&opts);
    packet_ = make_packet();
    log(TROUPE_LOG_INFO, "video_encode: " + std::string(codec->name) + " " + std::to_string(width_) + "x" +
                             std::to_string(height_) + " " + av_get_pix_fmt_name(encoder_->pix_fmt) + " into '" +
                             output_ + "' (" + out_->oformat->name + ")");
  }

  // A frame to copy an input into: one the encoder has let go of, or a new one. Reusing them
  // spares a page fault per 4 KiB of every frame.
  frame_ptr take_frame() {
    if (!spare_.empty()) {
      frame_ptr f = std::move(spare_.back());
      spare_.pop_back();
      return f;
    }
    frame_ptr f = make_frame();
    f->format = encoder_->pix_fmt;
    f->width = width_;
    f->height = height_;
    if (int err = av_frame_get_buffer(f.get(), 0); err < 0)
      throw troupe::frame_error("video_encode: no buffer for a frame: " + av_text(err));
    return f;
  }

  // Encodes the held frame with the smallest key.
  void encode_next() {
    auto it = pending_.begin();
    int64_t pts = std::get<0>(it->first);
    if (encoded_ > 0 && pts <= last_pts_) pts = last_pts_ + 1;  // frames of several streams at one time
    it->second->pts = pts;
    last_key_ = it->first;
    last_pts_ = pts;
    frame_ptr f = std::move(it->second);
    pending_.erase(it);
    send(f.get());
    ++encoded_;
    // The encoder may keep a reference (frame threads); only a buffer no one else holds is reused.
    if (spare_.size() < 8 && av_frame_is_writable(f.get())) spare_.push_back(std::move(f));
  }

  // Feeds one frame (null: the end) to the encoder and writes what it gives back.
  void send(AVFrame* f) {
    if (int err = avcodec_send_frame(encoder_.get(), f); err < 0)
      throw troupe::fatal_error("video_encode: the encoder refused a frame: " + av_text(err));
    for (;;) {
      int got = avcodec_receive_packet(encoder_.get(), packet_.get());
      if (got == AVERROR(EAGAIN) || got == AVERROR_EOF) return;
      if (got < 0) throw troupe::fatal_error("video_encode: encoding failed: " + av_text(got));
      av_packet_rescale_ts(packet_.get(), encoder_->time_base, out_->streams[0]->time_base);
      packet_->stream_index = 0;
      if (int err = av_interleaved_write_frame(out_.get(), packet_.get()); err < 0)
        throw troupe::fatal_error("video_encode: writing '" + part_ + "': " + av_text(err));
    }
  }

  const std::string output_, codec_name_, preset_;
  const int crf_, threads_;
  const size_t window_;
  const AVRational frame_rate_;

  std::unique_ptr<AVFormatContext, output_closer> out_;
  codec_ptr encoder_;
  packet_ptr packet_;
  sws_ptr sws_;
  std::string part_;
  int width_ = 0, height_ = 0;
  std::map<key, frame_ptr> pending_;
  std::vector<frame_ptr> spare_;
  key last_key_{};
  int64_t last_pts_ = 0;
  uint64_t encoded_ = 0, late_ = 0;
};

}  // namespace

TROUPE_PLUGIN("video_encode", video_encode)
