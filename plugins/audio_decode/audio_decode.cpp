// audio_decode: a source of PCM blocks from the audio of a file or stream URL FFmpeg opens.
// Each block holds `block_ms` of interleaved samples (the last may be shorter) in s16 or f32,
// resampled if asked, with metadata: sample_rate, channels, samples, format, pts (in samples
// from the start) and time_base (1/sample_rate). Damaged input costs frame errors.
#include "../media/av.hpp"

extern "C" {
#include <libavutil/channel_layout.h>
}

#include <algorithm>
#include <string>
#include <vector>

namespace {

using namespace troupe::media;

class audio_decode : public troupe::plugin {
 public:
  explicit audio_decode(troupe::context& ctx)
      : plugin(ctx),
        path_(ctx.config.get_string("path")),
        format_name_(ctx.config.get_string("format", "s16")),
        block_ms_(ctx.config.get_int("block_ms", 20)),
        rate_(static_cast<int>(ctx.config.get_int("sample_rate", 0))),
        channels_(static_cast<int>(ctx.config.get_int("channels", 0))),
        stream_index_(static_cast<int>(ctx.config.get_int("stream_index", -1))),
        stream_(static_cast<uint64_t>(ctx.config.get_int("stream", 1))) {
    if (path_.empty()) throw troupe::fatal_error("audio_decode: config 'path' is required: a file or a URL to read");
    if (format_name_ != "s16" && format_name_ != "f32")
      throw troupe::fatal_error("audio_decode: format must be s16 or f32");
    if (block_ms_ < 1 || block_ms_ > 10000) throw troupe::fatal_error("audio_decode: block_ms must be from 1 to 10000");
    format_ = format_name_ == "s16" ? AV_SAMPLE_FMT_S16 : AV_SAMPLE_FMT_FLT;
    type_ = "audio/" + format_name_;
  }

  void start() override {
    av_log_scope scope(host());
    auto d = open_decoding(path_, AVMEDIA_TYPE_AUDIO, stream_index_, 0, "audio_decode");
    input_ = std::move(d.input);
    decoder_ = std::move(d.decoder);
    index_ = d.index;
    const AVCodec* codec = decoder_->codec;
    if (rate_ == 0) rate_ = decoder_->sample_rate;
    if (channels_ == 0) channels_ = decoder_->ch_layout.nb_channels;
    if (rate_ <= 0 || channels_ <= 0)
      throw troupe::fatal_error("audio_decode: '" + path_ + "': no sample rate or channels");
    AVChannelLayout out_layout;
    av_channel_layout_default(&out_layout, channels_);
    SwrContext* swr = nullptr;
    int err = swr_alloc_set_opts2(&swr, &out_layout, format_, rate_, &decoder_->ch_layout, decoder_->sample_fmt,
                                  decoder_->sample_rate, 0, nullptr);
    av_channel_layout_uninit(&out_layout);
    if (err < 0 || swr == nullptr || swr_init(swr) < 0) {
      swr_free(&swr);
      throw troupe::fatal_error("audio_decode: no conversion to " + std::to_string(channels_) + " channels of " +
                                format_name_ + " at " + std::to_string(rate_) + " Hz");
    }
    swr_.reset(swr);
    fifo_.reset(av_audio_fifo_alloc(format_, channels_, 4096));
    if (!fifo_) throw troupe::fatal_error("audio_decode: out of memory for a sample queue");
    block_samples_ = static_cast<int>(std::max<int64_t>(1, rate_ * block_ms_ / 1000));
    rate_text_ = std::to_string(rate_);
    channels_text_ = std::to_string(channels_);
    time_base_text_ = "1/" + rate_text_;
    packet_ = make_packet();
    frame_ = make_frame();
    log(TROUPE_LOG_INFO, "audio_decode: '" + path_ + "' stream " + std::to_string(index_) + ": " + codec->name +
                             ", emitting " + std::to_string(block_samples_) + "-sample blocks of " + channels_text_ +
                             " x " + format_name_ + " at " + rate_text_ + " Hz");
  }

  bool produce() override {
    av_log_scope scope(host());
    std::string damaged;
    int emitted = 0;
    while (emitted < max_per_call) {
      if (av_audio_fifo_size(fifo_.get()) >= block_samples_) {
        emit_block(block_samples_);
        ++emitted;
        continue;
      }
      if (drained_) {
        if (int left = av_audio_fifo_size(fifo_.get()); left > 0) {
          emit_block(left);
          ++emitted;
        }
        finished_ = true;
        break;
      }
      int got = avcodec_receive_frame(decoder_.get(), frame_.get());
      if (got == 0) {
        convert(frame_.get());
        av_frame_unref(frame_.get());
        continue;
      }
      if (got == AVERROR_EOF) {
        convert(nullptr);  // what the resampler still holds
        drained_ = true;
        continue;
      }
      if (got != AVERROR(EAGAIN)) {
        add_reason(damaged, "the decoder failed: " + av_text(got));
        continue;
      }
      if (flushing_) {
        drained_ = true;
        continue;
      }
      int read = av_read_frame(input_.get(), packet_.get());
      if (read < 0) {
        if (read != AVERROR_EOF) add_reason(damaged, "reading '" + path_ + "' ended: " + av_text(read));
        flushing_ = true;
        avcodec_send_packet(decoder_.get(), nullptr);
        continue;
      }
      if (packet_->stream_index == index_) {
        int sent = avcodec_send_packet(decoder_.get(), packet_.get());
        if (sent < 0 && sent != AVERROR(EAGAIN)) add_reason(damaged, "a packet was dropped: " + av_text(sent));
      }
      av_packet_unref(packet_.get());
    }
    if (!damaged.empty()) throw troupe::frame_error("audio_decode: " + damaged);
    return !finished_;
  }

 private:
  static constexpr int max_per_call = 8;

  // Resamples a decoded frame (null: flush) into the queue of samples to cut blocks from.
  void convert(const AVFrame* in) {
    const int in_samples = in ? in->nb_samples : 0;
    const int room = swr_get_out_samples(swr_.get(), in_samples);
    if (room <= 0) return;
    if (av_audio_fifo_realloc(fifo_.get(), av_audio_fifo_size(fifo_.get()) + room) < 0)
      throw troupe::fatal_error("audio_decode: out of memory for samples");
    scratch_.resize(static_cast<size_t>(room) * channels_ * av_get_bytes_per_sample(format_));
    uint8_t* out[1] = {scratch_.data()};
    int n =
        swr_convert(swr_.get(), out, room, in ? const_cast<const uint8_t**>(in->extended_data) : nullptr, in_samples);
    if (n < 0) throw troupe::frame_error("audio_decode: resampling failed: " + av_text(n));
    if (n > 0) av_audio_fifo_write(fifo_.get(), reinterpret_cast<void**>(out), n);
  }

  void emit_block(int samples) {
    const size_t size = static_cast<size_t>(samples) * channels_ * av_get_bytes_per_sample(format_);
    uint8_t* data = alloc(size);
    void* out[1] = {data};
    av_audio_fifo_read(fifo_.get(), out, samples);
    samples_text_ = std::to_string(samples);
    pts_text_ = std::to_string(next_sample_);
    troupe::frame_out o;
    o.stream = stream_;
    o.seq = seq_++;
    o.timestamp_ns = av_rescale(next_sample_, 1000000000, rate_);
    o.type = type_.c_str();
    o.meta = {{"sample_rate", rate_text_.c_str()}, {"channels", channels_text_.c_str()},
              {"samples", samples_text_.c_str()},  {"format", format_name_.c_str()},
              {"pts", pts_text_.c_str()},          {"time_base", time_base_text_.c_str()}};
    o.data = data;
    o.size = size;
    emit(o);
    next_sample_ += samples;
  }

  const std::string path_, format_name_;
  const int64_t block_ms_;
  int rate_, channels_;
  const int stream_index_;
  const uint64_t stream_;
  AVSampleFormat format_;
  std::string type_;

  input_ptr input_;
  codec_ptr decoder_;
  packet_ptr packet_;
  frame_ptr frame_;
  swr_ptr swr_;
  fifo_ptr fifo_;
  std::vector<uint8_t> scratch_;
  int index_ = -1, block_samples_ = 0;
  std::string rate_text_, channels_text_, time_base_text_, samples_text_, pts_text_;
  int64_t next_sample_ = 0;
  uint64_t seq_ = 0;
  bool flushing_ = false, drained_ = false, finished_ = false;
};

}  // namespace

TROUPE_PLUGIN("audio_decode", audio_decode)
