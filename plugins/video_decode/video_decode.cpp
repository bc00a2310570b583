// video_decode: a source of decoded video frames from a file or stream URL FFmpeg opens.
// Each frame is converted to the requested pixel format (tightly packed) and carries its
// geometry and timing as metadata: width, height, format, pts, time_base, frame_rate.
// Damaged input costs frame errors (a packet the decoder refuses is dropped; a frame it
// conceals is emitted with corrupt=1), never the instance.
#include "../media/av.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace {

using namespace troupe::media;

class video_decode : public troupe::plugin {
 public:
  explicit video_decode(troupe::context& ctx)
      : plugin(ctx),
        path_(ctx.config.get_string("path")),
        format_(find_format(ctx.config.get_string("format", "rgb24"))),
        stream_index_(static_cast<int>(ctx.config.get_int("stream_index", -1))),
        threads_(static_cast<int>(ctx.config.get_int("threads", 0))),
        start_s_(ctx.config.get_double("start_s", 0)),
        end_s_(ctx.config.get_double("end_s", 0)),
        loops_(ctx.config.get_int("loop", 0)),
        stream_(static_cast<uint64_t>(ctx.config.get_int("stream", 0))) {
    if (path_.empty()) throw troupe::fatal_error("video_decode: config 'path' is required: a file or a URL to read");
    if (format_ == nullptr) throw troupe::fatal_error("video_decode: format must be rgb24, gray8 or yuv420p");
    if (!(start_s_ >= 0 && std::isfinite(start_s_)) || !(end_s_ >= 0 && std::isfinite(end_s_)))
      throw troupe::fatal_error("video_decode: start_s and end_s must be finite seconds from 0");
    if (end_s_ > 0 && end_s_ <= start_s_) throw troupe::fatal_error("video_decode: end_s must be after start_s");
  }

  void start() override {
    av_log_scope scope(host());
    auto d = open_decoding(path_, AVMEDIA_TYPE_VIDEO, stream_index_, threads_, "video_decode");
    input_ = std::move(d.input);
    decoder_ = std::move(d.decoder);
    index_ = d.index;
    AVStream* st = input_->streams[index_];
    const AVCodec* codec = decoder_->codec;
    time_base_ = st->time_base;
    frame_rate_ = av_guess_frame_rate(input_.get(), st, nullptr);
    if (frame_rate_.num <= 0 || frame_rate_.den <= 0) frame_rate_ = {25, 1};
    time_base_text_ = rational_text(time_base_);
    frame_rate_text_ = rational_text(frame_rate_);
    step_ = std::max<int64_t>(1, av_rescale_q(1, av_inv_q(frame_rate_), time_base_));
    first_pts_ = st->start_time == AV_NOPTS_VALUE ? 0 : st->start_time;
    if (start_s_ > 0) seek_to_start();
    packet_ = make_packet();
    frame_ = make_frame();
    log(TROUPE_LOG_INFO, "video_decode: '" + path_ + "' stream " + std::to_string(index_) + ": " + codec->name + " " +
                             std::to_string(decoder_->width) + "x" + std::to_string(decoder_->height) + " at " +
                             frame_rate_text_ + " fps, emitting " + std::string(format_->name));
  }

  bool produce() override {
    av_log_scope scope(host());
    std::string damaged;  // why this turn had a frame error, if it had one
    int emitted = 0;
    while (!finished_ && emitted < max_per_call) {
      int got = avcodec_receive_frame(decoder_.get(), frame_.get());
      if (got == 0) {
        emitted += take_frame(damaged);
        av_frame_unref(frame_.get());
        continue;
      }
      if (got == AVERROR_EOF) {
        end_of_pass();
        continue;
      }
      if (got != AVERROR(EAGAIN)) {
        add_reason(damaged, "the decoder failed: " + av_text(got));
        continue;
      }
      if (flushing_) {  // EAGAIN while draining cannot happen; treat as the end
        end_of_pass();
        continue;
      }
      int read = av_read_frame(input_.get(), packet_.get());
      if (read == AVERROR_EOF || (read == AVERROR(EIO) && input_->pb && avio_feof(input_->pb))) {
        flushing_ = true;
        avcodec_send_packet(decoder_.get(), nullptr);
        continue;
      }
      if (read < 0) {
        add_reason(damaged, "reading '" + path_ + "' failed: " + av_text(read));
        if (++read_errors_ > max_read_errors) {
          flushing_ = true;  // the input is beyond use: decode what is left and finish
          avcodec_send_packet(decoder_.get(), nullptr);
        }
        continue;
      }
      if (packet_->stream_index != index_) {
        av_packet_unref(packet_.get());
        continue;
      }
      int sent = avcodec_send_packet(decoder_.get(), packet_.get());
      const int64_t pts = packet_->pts;
      av_packet_unref(packet_.get());
      if (sent < 0 && sent != AVERROR(EAGAIN))
        add_reason(damaged, "packet at pts " + std::to_string(pts) + " dropped: " + av_text(sent));
    }
    if (!damaged.empty()) throw troupe::frame_error("video_decode: " + damaged);
    return !finished_;
  }

 private:
  static constexpr int max_per_call = 4;
  static constexpr int max_read_errors = 1000;

  void seek_to_start() {
    const int64_t target = first_pts_ + av_rescale_q(static_cast<int64_t>(start_s_ * AV_TIME_BASE),
                                                     AVRational{1, AV_TIME_BASE}, time_base_);
    if (int err = avformat_seek_file(input_.get(), index_, INT64_MIN, target, target, 0); err < 0)
      log(TROUPE_LOG_WARN, "video_decode: cannot seek to " + std::to_string(start_s_) + " s (" + av_text(err) +
                               "); decoding from the start and skipping");
    avcodec_flush_buffers(decoder_.get());
  }

  // The decoder has given all it had: play again (loop) or finish.
  void end_of_pass() {
    if (pass_ < loops_) {
      ++pass_;
      pts_offset_ = next_pts_;  // the next pass continues the timeline
      if (int err = avformat_seek_file(input_.get(), index_, INT64_MIN, first_pts_, first_pts_, 0); err < 0)
        throw troupe::fatal_error("video_decode: cannot go back to the start of '" + path_ +
                                  "' to loop: " + av_text(err));
      avcodec_flush_buffers(decoder_.get());
      flushing_ = false;
      pass_first_pts_ = AV_NOPTS_VALUE;
      return;
    }
    finished_ = true;
  }

  // Converts and emits the decoded frame_; returns how many frames it emitted (0 or 1).
  int take_frame(std::string& damaged) {
    AVFrame& f = *frame_;
    int64_t pts = f.best_effort_timestamp;
    if (pts == AV_NOPTS_VALUE) pts = f.pts;
    if (pts == AV_NOPTS_VALUE) pts = last_source_pts_ == AV_NOPTS_VALUE ? first_pts_ : last_source_pts_ + step_;
    last_source_pts_ = pts;
    const double at_s = static_cast<double>(pts - first_pts_) * av_q2d(time_base_);
    if (at_s + 1e-9 < start_s_) return 0;  // before the start a seek could not reach exactly
    if (end_s_ > 0 && at_s >= end_s_) {    // what the decoder still holds lies past the end, too
      end_of_pass();
      return 0;
    }
    if (pass_first_pts_ == AV_NOPTS_VALUE) pass_first_pts_ = pts;
    // The timeline Troupe carries: from 0 at the start point, continued across loops.
    int64_t out_pts = pts_offset_ + (pts - pass_first_pts_);
    if (seq_ > 0 && out_pts <= last_out_pts_) out_pts = last_out_pts_ + 1;  // damaged timestamps: never backwards
    last_out_pts_ = out_pts;
    next_pts_ = out_pts + step_;
    if (f.width <= 0 || f.height <= 0 || f.width > 16384 || f.height > 16384) {
      add_reason(damaged, "a frame of " + std::to_string(f.width) + "x" + std::to_string(f.height) + " skipped");
      return 0;
    }
    const size_t size = image_size(format_->av, f.width, f.height);
    uint8_t* px = alloc(size);
    const planes dst(px, format_->av, f.width, f.height);
    copy_picture(sws_, f.data, f.linesize, f.width, f.height, static_cast<AVPixelFormat>(f.format), dst.data,
                 dst.linesize, f.width, f.height, format_->av, SWS_BICUBIC, "video_decode");
    const bool corrupt = (f.flags & AV_FRAME_FLAG_CORRUPT) || f.decode_error_flags != 0;
    if (corrupt) add_reason(damaged, "frame at pts " + std::to_string(pts) + " is damaged (concealed, emitted)");
    width_text_ = std::to_string(f.width);
    height_text_ = std::to_string(f.height);
    pts_text_ = std::to_string(out_pts);
    troupe::frame_out o;
    o.stream = stream_;
    o.seq = seq_++;
    o.timestamp_ns = av_rescale_q(out_pts, time_base_, AVRational{1, 1000000000});
    o.type = format_->type.data();
    o.meta = {{"width", width_text_.c_str()},         {"height", height_text_.c_str()},
              {"format", format_->name.data()},       {"pts", pts_text_.c_str()},
              {"time_base", time_base_text_.c_str()}, {"frame_rate", frame_rate_text_.c_str()}};
    if (corrupt) o.meta.push_back({"corrupt", "1"});
    o.data = px;
    o.size = size;
    emit(o);
    return 1;
  }

  const std::string path_;
  const pixel_format* format_;
  const int stream_index_, threads_;
  const double start_s_, end_s_;
  const int64_t loops_;
  const uint64_t stream_;

  input_ptr input_;
  codec_ptr decoder_;
  packet_ptr packet_;
  frame_ptr frame_;
  sws_ptr sws_;
  int index_ = -1;
  AVRational time_base_{1, 1}, frame_rate_{25, 1};
  std::string time_base_text_, frame_rate_text_, width_text_, height_text_, pts_text_;
  int64_t first_pts_ = 0, last_source_pts_ = AV_NOPTS_VALUE, pass_first_pts_ = AV_NOPTS_VALUE;
  int64_t step_ = 1;  // one frame's duration in time_base_
  int64_t pts_offset_ = 0, next_pts_ = 0, last_out_pts_ = 0, pass_ = 0, read_errors_ = 0;
  uint64_t seq_ = 0;
  bool flushing_ = false, finished_ = false;
};

}  // namespace

TROUPE_PLUGIN("video_decode", video_decode)
