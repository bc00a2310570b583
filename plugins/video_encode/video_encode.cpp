// video_encode: a sink that encodes video frames (video/rgb24, gray8 or yuv420p) with FFV1 or
// H.264 (libx264), and audio blocks (audio/s16 or audio/f32, as audio_decode emits them) with
// AAC, into a file whose container its name says (.mkv, .mp4, .mov, .nut, ...).
//
// Frames may arrive out of order (replicas of a stage before it, several streams, audio beside
// video): they are held in a window of `window` frames ordered by (time, stream, seq) and
// encoded in that order; a frame that arrives after a later one was encoded is refused with a
// frame error. Time comes from the frame's pts/time_base metadata, or from its timestamp. The
// file starts when the window first fills (or at stop): it has a video stream if a video frame
// is among those held then, and an audio stream if an audio block is. It is written as
// OUTPUT.part and renamed to OUTPUT when the instance stops, so a file under the output's name
// is always complete.
#include "../media/av.hpp"

extern "C" {
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
}

#include <algorithm>
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
        audio_bitrate_(ctx.config.get_int("audio_bitrate", 128000)),
        want_video_(ctx.config.get_bool("video", true)),
        want_audio_(ctx.config.get_bool("audio", false)),
        frame_rate_(parse_rational(ctx.config.get_string("frame_rate"))) {
    if (output_.empty()) throw troupe::fatal_error("video_encode: config 'output' must name a file");
    if (codec_name_ != "ffv1" && codec_name_ != "h264")
      throw troupe::fatal_error("video_encode: codec must be ffv1 or h264, not '" + codec_name_ + "'");
    if (!ctx.config.get_string("frame_rate").empty() && frame_rate_.num == 0)
      throw troupe::fatal_error("video_encode: frame_rate must be NUM/DEN, e.g. 25/1 or 30000/1001");
    if (!want_video_ && !want_audio_) throw troupe::fatal_error("video_encode: video and audio are both false");
  }

  void process(const troupe::frame_in& in) override {
    av_log_scope scope(host());
    const bool audio = in.type().substr(0, 6) == "audio/";
    if (audio && !want_audio_)
      throw troupe::frame_error("video_encode: an audio block arrived, but audio is false (set audio: true to mux it)");
    if (!audio && !want_video_) throw troupe::frame_error("video_encode: a video frame arrived, but video is false");
    held h;
    h.when = timing_of(in);
    if (audio)
      h.audio = audio_of(in);
    else
      h.video = video_of(in);
    const key k{h.when.ns(), in.stream(), in.seq()};
    if (encoded_ > 0 && !(last_key_ < k)) {
      ++late_;
      throw troupe::frame_error("video_encode: frame stream " + std::to_string(in.stream()) + " seq " +
                                std::to_string(in.seq()) + " (at " + std::to_string(std::get<0>(k)) +
                                " ns) came after later frames were encoded; a window larger than " +
                                std::to_string(window_) + " frames would have held them");
    }
    if (pending_.count(k)) {
      ++late_;
      throw troupe::frame_error("video_encode: frame stream " + std::to_string(in.stream()) + " seq " +
                                std::to_string(in.seq()) + " is already held (a duplicate)");
    }
    ++(audio ? held_audio_ : held_video_);
    pending_.emplace(k, std::move(h));
    pump();
  }

  void stop() override {
    av_log_scope scope(host());
    if (!out_ && pending_.empty()) {
      log(TROUPE_LOG_WARN, "video_encode: no frame arrived; '" + output_ + "' not written");
      return;
    }
    while (!pending_.empty()) encode_next();
    if (video_) send(video_.get(), nullptr);
    if (audio_) {
      drain_audio(true);
      send(audio_.get(), nullptr);
    }
    if (int err = av_write_trailer(out_.get()); err < 0)
      throw troupe::fatal_error("video_encode: finishing '" + part_ + "': " + av_text(err));
    if (int err = avio_closep(&out_->pb); err < 0)
      throw troupe::fatal_error("video_encode: closing '" + part_ + "': " + av_text(err));
    out_.reset();
    if (std::rename(part_.c_str(), output_.c_str()) != 0)
      throw troupe::fatal_error("video_encode: cannot rename '" + part_ + "' to '" + output_ + "'");
    log(TROUPE_LOG_INFO, "video_encode: wrote " + std::to_string(video_frames_) + " video frames and " +
                             std::to_string(audio_blocks_) + " audio blocks to '" + output_ + "'" +
                             (late_ > 0 ? " (" + std::to_string(late_) + " refused as late or duplicate)" : ""));
  }

  ~video_encode() override {
    if (out_ && out_->pb) avio_closep(&out_->pb);  // a stop that never came: OUTPUT.part stays
  }

 private:
  using key = std::tuple<int64_t, uint64_t, uint64_t>;  // time in ns, stream, seq

  struct output_closer {
    void operator()(AVFormatContext* f) const { avformat_free_context(f); }
  };
  // One encoder and its stream in the file.
  struct track {
    codec_ptr codec;
    AVStream* stream = nullptr;
  };
  struct audio_block {
    std::vector<uint8_t> samples;  // interleaved
    int count = 0, rate = 0, channels = 0;
    AVSampleFormat format = AV_SAMPLE_FMT_NONE;
  };
  struct held {
    frame_ptr video;  // in the encoder's pixel format
    timing when{0, {1, 1}};
    std::unique_ptr<audio_block> audio;
  };

  // The video frame, copied into a frame of the encoder's pixel format.
  frame_ptr video_of(const troupe::frame_in& in) {
    const picture p = picture_of(in, "video_encode");
    if (width_ == 0) {  // the first video frame sets the file's geometry and rate
      width_ = p.width;
      height_ = p.height;
      if (codec_name_ == "h264") {
        if (width_ % 2 || height_ % 2)
          throw troupe::fatal_error("video_encode: h264 in yuv420p needs an even width and height, not " +
                                    std::to_string(width_) + "x" + std::to_string(height_));
        pix_fmt_ = AV_PIX_FMT_YUV420P;
      } else {
        pix_fmt_ = p.format->av == AV_PIX_FMT_RGB24 ? AV_PIX_FMT_BGR0 : p.format->av;  // lossless
      }
      rate_ = frame_rate_.num > 0 ? frame_rate_ : parse_rational(in.meta("frame_rate"));
      if (rate_.num == 0) rate_ = {30, 1};
      video_tb_ = parse_rational(in.meta("time_base"));
      if (video_tb_.num == 0) video_tb_ = {1, 1000};  // from the frames' nanoseconds, in ms
    }
    if (p.width != width_ || p.height != height_)
      throw troupe::frame_error("video_encode: the file is " + std::to_string(width_) + "x" + std::to_string(height_) +
                                ", this frame " + std::to_string(p.width) + "x" + std::to_string(p.height));
    if (out_ && !video_)
      throw troupe::frame_error("video_encode: a video frame came after the file was started without video");
    frame_ptr f = take_frame();
    const planes src(in.data(), p.format->av, width_, height_);
    copy_picture(sws_, src.data, src.linesize, width_, height_, p.format->av, f->data, f->linesize, width_, height_,
                 pix_fmt_, SWS_BICUBIC, "video_encode");
    return f;
  }

  std::unique_ptr<audio_block> audio_of(const troupe::frame_in& in) {
    auto b = std::make_unique<audio_block>();
    b->format = in.type() == "audio/s16"   ? AV_SAMPLE_FMT_S16
                : in.type() == "audio/f32" ? AV_SAMPLE_FMT_FLT
                                           : AV_SAMPLE_FMT_NONE;
    if (b->format == AV_SAMPLE_FMT_NONE)
      throw troupe::frame_error("video_encode: expected audio/s16 or audio/f32, got '" + std::string(in.type()) + "'");
    b->rate = static_cast<int>(in.meta_int("sample_rate"));
    b->channels = static_cast<int>(in.meta_int("channels"));
    if (b->rate <= 0 || b->rate > 768000 || b->channels <= 0 || b->channels > 64)
      throw troupe::frame_error("video_encode: an audio block needs sample_rate and channels metadata");
    const size_t frame_bytes = static_cast<size_t>(b->channels) * av_get_bytes_per_sample(b->format);
    if (in.size() == 0 || in.size() % frame_bytes != 0)
      throw troupe::frame_error("video_encode: an audio block of " + std::to_string(in.size()) +
                                " bytes is not whole samples of " + std::to_string(b->channels) + " channels");
    if (audio_rate_ == 0) {
      audio_rate_ = b->rate;
      audio_channels_ = b->channels;
    } else if (b->rate != audio_rate_ || b->channels != audio_channels_) {
      throw troupe::frame_error("video_encode: the file's audio is " + std::to_string(audio_channels_) +
                                " channels at " + std::to_string(audio_rate_) + " Hz, this block " +
                                std::to_string(b->channels) + " at " + std::to_string(b->rate));
    }
    if (out_ && !audio_)
      throw troupe::frame_error("video_encode: audio came after the file was started without an audio stream");
    b->count = static_cast<int>(in.size() / frame_bytes);
    b->samples.assign(in.data(), in.data() + in.size());
    return b;
  }

  // A frame to copy a video input into: one the encoder has let go of, or a new one. Reusing
  // them spares a page fault per 4 KiB of every frame.
  frame_ptr take_frame() {
    if (!spare_.empty()) {
      frame_ptr f = std::move(spare_.back());
      spare_.pop_back();
      return f;
    }
    frame_ptr f = make_frame();
    f->format = pix_fmt_;
    f->width = width_;
    f->height = height_;
    if (int err = av_frame_get_buffer(f.get(), 0); err < 0)
      throw troupe::frame_error("video_encode: no buffer for a frame: " + av_text(err));
    return f;
  }

  // Starts the file with a video stream and/or an audio stream, as the frames held say.
  void open() {
    AVFormatContext* raw = nullptr;
    if (int err = avformat_alloc_output_context2(&raw, nullptr, nullptr, output_.c_str()); err < 0 || !raw)
      throw troupe::fatal_error("video_encode: no container for '" + output_ +
                                "' (name it .mkv, .mp4, .mov or .nut): " + av_text(err));
    out_.reset(raw);
    out_->flags |= AVFMT_FLAG_BITEXACT;  // the same frames give the same bytes
    bool has_video = false, has_audio = false;
    for (auto& [k, h] : pending_) (h.audio ? has_audio : has_video) = true;
    std::string what;
    if (has_video) {
      open_video();
      what = std::string(video_->codec->codec->name) + " " + std::to_string(width_) + "x" + std::to_string(height_) +
             " " + av_get_pix_fmt_name(pix_fmt_);
    }
    if (has_audio) {
      open_audio();
      what += std::string(what.empty() ? "" : " and ") + "aac " + std::to_string(audio_channels_) + " ch " +
              std::to_string(audio_rate_) + " Hz";
    }
    part_ = output_ + ".part";
    if (int err = avio_open(&out_->pb, part_.c_str(), AVIO_FLAG_WRITE); err < 0)
      throw troupe::fatal_error("video_encode: cannot write '" + part_ + "': " + av_text(err));
    if (int err = avformat_write_header(out_.get(), nullptr); err < 0)
      throw troupe::fatal_error("video_encode: " + std::string(out_->oformat->name) + " cannot hold " + what + ": " +
                                av_text(err));
    packet_ = make_packet();
    log(TROUPE_LOG_INFO, "video_encode: " + what + " into '" + output_ + "' (" + out_->oformat->name + ")");
  }

  // The encoder's flags, the stream in the file, and the stream's parameters.
  std::unique_ptr<track> add_track(codec_ptr codec, const AVCodec* c) {
    if (out_->oformat->flags & AVFMT_GLOBALHEADER) codec->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    codec->flags |= AV_CODEC_FLAG_BITEXACT;
    if (int err = avcodec_open2(codec.get(), c, nullptr); err < 0)
      throw troupe::fatal_error("video_encode: cannot open the " + std::string(c->name) + " encoder: " + av_text(err));
    auto t = std::make_unique<track>();
    t->stream = avformat_new_stream(out_.get(), nullptr);
    if (t->stream == nullptr) throw troupe::fatal_error("video_encode: out of memory for a stream");
    t->stream->time_base = codec->time_base;
    if (int err = avcodec_parameters_from_context(t->stream->codecpar, codec.get()); err < 0)
      throw troupe::fatal_error("video_encode: " + av_text(err));
    t->codec = std::move(codec);
    return t;
  }

  void open_video() {
    const AVCodec* c =
        codec_name_ == "h264" ? avcodec_find_encoder_by_name("libx264") : avcodec_find_encoder(AV_CODEC_ID_FFV1);
    if (c == nullptr)
      throw troupe::fatal_error("video_encode: this FFmpeg has no " +
                                std::string(codec_name_ == "h264" ? "libx264" : "ffv1") + " encoder");
    codec_ptr codec(avcodec_alloc_context3(c));
    if (!codec) throw troupe::fatal_error("video_encode: out of memory for an encoder");
    codec->width = width_;
    codec->height = height_;
    codec->pix_fmt = pix_fmt_;
    codec->time_base = video_tb_;
    codec->framerate = rate_;
    codec->thread_count = threads_;
    if (codec_name_ == "h264") {
      av_opt_set(codec->priv_data, "preset", preset_.c_str(), 0);
      av_opt_set_int(codec->priv_data, "crf", crf_, 0);
    } else {
      codec->level = 3;
    }
    video_ = add_track(std::move(codec), c);
    video_->stream->avg_frame_rate = rate_;
  }

  void open_audio() {
    const AVCodec* c = avcodec_find_encoder(AV_CODEC_ID_AAC);
    if (c == nullptr) throw troupe::fatal_error("video_encode: this FFmpeg has no aac encoder");
    codec_ptr codec(avcodec_alloc_context3(c));
    if (!codec) throw troupe::fatal_error("video_encode: out of memory for an encoder");
    codec->sample_fmt = AV_SAMPLE_FMT_FLTP;
    codec->sample_rate = audio_rate_;
    av_channel_layout_default(&codec->ch_layout, audio_channels_);
    codec->bit_rate = audio_bitrate_;
    codec->time_base = {1, audio_rate_};
    audio_ = add_track(std::move(codec), c);
    audio_fifo_.reset(av_audio_fifo_alloc(AV_SAMPLE_FMT_FLTP, audio_channels_, 4096));
    if (!audio_fifo_) throw troupe::fatal_error("video_encode: out of memory for a sample queue");
  }

  // Encodes the earliest held frame once more than `window` frames of its kind (video or
  // audio) are held, so that a frame overtaken within its kind is still in time, and, if the
  // other kind is wanted, more than `window` of that kind too: its next frame could be
  // earlier. (Audio decodes far faster than video; without that, audio would be written
  // ahead of the video it goes with.) Frames go anyway once twice the window of video frames
  // are held (the other kind has ended, or never comes), or hold_max frames in all.
  void pump() {
    const size_t hold_max = std::max<size_t>(window_ * 16, 1024);
    while (!pending_.empty()) {
      const bool audio = pending_.begin()->second.audio != nullptr;
      const size_t mine = audio ? held_audio_ : held_video_;
      const bool other_wanted = audio ? want_video_ : want_audio_;
      const size_t other = audio ? held_video_ : held_audio_;
      const bool forced = pending_.size() > hold_max || held_video_ > 2 * window_;
      if (!forced && (mine <= window_ || (other_wanted && other <= window_))) return;
      encode_next();
    }
  }

  // Encodes the held frame with the earliest key.
  void encode_next() {
    if (!out_) open();
    auto it = pending_.begin();
    last_key_ = it->first;
    held h = std::move(it->second);
    pending_.erase(it);
    --(h.audio ? held_audio_ : held_video_);
    ++encoded_;
    if (h.audio) return encode_audio(*h.audio, std::get<0>(last_key_));
    int64_t pts = av_rescale_q(h.when.pts, h.when.time_base, video_->codec->time_base);
    if (video_frames_ > 0 && pts <= last_pts_) pts = last_pts_ + 1;  // frames of several streams at one time
    h.video->pts = last_pts_ = pts;
    send(video_.get(), h.video.get());
    ++video_frames_;
    // The encoder may keep a reference (frame threads); only a buffer no one else holds is reused.
    if (spare_.size() < 8 && av_frame_is_writable(h.video.get())) spare_.push_back(std::move(h.video));
  }

  void encode_audio(const audio_block& b, int64_t at_ns) {
    if (audio_blocks_ == 0) audio_pts_ = av_rescale(at_ns, audio_rate_, 1000000000);
    if (!audio_swr_ || b.format != audio_in_format_) {
      SwrContext* swr = nullptr;
      AVChannelLayout* layout = &audio_->codec->ch_layout;  // not changed; 5.1 takes it as non-const
      if (swr_alloc_set_opts2(&swr, layout, AV_SAMPLE_FMT_FLTP, audio_rate_, layout, b.format, audio_rate_, 0,
                              nullptr) < 0 ||
          swr_init(swr) < 0) {
        swr_free(&swr);
        throw troupe::fatal_error("video_encode: no conversion of audio to fltp");
      }
      audio_swr_.reset(swr);
      audio_in_format_ = b.format;
    }
    if (av_audio_fifo_realloc(audio_fifo_.get(), av_audio_fifo_size(audio_fifo_.get()) + b.count) < 0)
      throw troupe::fatal_error("video_encode: out of memory for samples");
    frame_ptr planar = make_frame();
    planar->format = AV_SAMPLE_FMT_FLTP;
    planar->nb_samples = b.count;
    av_channel_layout_copy(&planar->ch_layout, &audio_->codec->ch_layout);
    if (av_frame_get_buffer(planar.get(), 0) < 0) throw troupe::fatal_error("video_encode: out of memory for samples");
    const uint8_t* in[1] = {b.samples.data()};
    int n = swr_convert(audio_swr_.get(), planar->extended_data, b.count, in, b.count);
    if (n < 0) throw troupe::frame_error("video_encode: audio conversion failed: " + av_text(n));
    av_audio_fifo_write(audio_fifo_.get(), reinterpret_cast<void**>(planar->extended_data), n);
    ++audio_blocks_;
    drain_audio(false);
  }

  // Encodes the queued samples in the encoder's frame size (all of them when `all`).
  void drain_audio(bool all) {
    const int size = audio_->codec->frame_size > 0 ? audio_->codec->frame_size : 1024;
    while (av_audio_fifo_size(audio_fifo_.get()) >= size || (all && av_audio_fifo_size(audio_fifo_.get()) > 0)) {
      const int n = std::min(size, av_audio_fifo_size(audio_fifo_.get()));
      frame_ptr f = make_frame();
      f->format = AV_SAMPLE_FMT_FLTP;
      f->nb_samples = n;
      f->sample_rate = audio_rate_;
      av_channel_layout_copy(&f->ch_layout, &audio_->codec->ch_layout);
      if (av_frame_get_buffer(f.get(), 0) < 0) throw troupe::fatal_error("video_encode: out of memory for samples");
      av_audio_fifo_read(audio_fifo_.get(), reinterpret_cast<void**>(f->extended_data), n);
      f->pts = audio_pts_;
      audio_pts_ += n;
      send(audio_.get(), f.get());
    }
  }

  // Feeds one frame (null: the end) to a track's encoder and writes what it gives back.
  void send(track* t, AVFrame* f) {
    if (int err = avcodec_send_frame(t->codec.get(), f); err < 0)
      throw troupe::fatal_error("video_encode: the encoder refused a frame: " + av_text(err));
    for (;;) {
      int got = avcodec_receive_packet(t->codec.get(), packet_.get());
      if (got == AVERROR(EAGAIN) || got == AVERROR_EOF) return;
      if (got < 0) throw troupe::fatal_error("video_encode: encoding failed: " + av_text(got));
      av_packet_rescale_ts(packet_.get(), t->codec->time_base, t->stream->time_base);
      packet_->stream_index = t->stream->index;
      if (int err = av_interleaved_write_frame(out_.get(), packet_.get()); err < 0)
        throw troupe::fatal_error("video_encode: writing '" + part_ + "': " + av_text(err));
    }
  }

  const std::string output_, codec_name_, preset_;
  const int crf_, threads_;
  const size_t window_;
  const int64_t audio_bitrate_;
  const bool want_video_, want_audio_;
  const AVRational frame_rate_;

  std::unique_ptr<AVFormatContext, output_closer> out_;
  std::unique_ptr<track> video_, audio_;
  packet_ptr packet_;
  sws_ptr sws_;
  swr_ptr audio_swr_;
  fifo_ptr audio_fifo_;
  AVSampleFormat audio_in_format_ = AV_SAMPLE_FMT_NONE;
  std::string part_;
  int width_ = 0, height_ = 0, audio_rate_ = 0, audio_channels_ = 0;
  AVPixelFormat pix_fmt_ = AV_PIX_FMT_NONE;
  AVRational rate_{30, 1}, video_tb_{1, 1000};
  std::map<key, held> pending_;
  std::vector<frame_ptr> spare_;
  key last_key_{};
  int64_t last_pts_ = 0, audio_pts_ = 0;
  uint64_t encoded_ = 0, video_frames_ = 0, audio_blocks_ = 0, late_ = 0;
  size_t held_video_ = 0, held_audio_ = 0;
};

}  // namespace

TROUPE_PLUGIN("video_encode", video_encode)
