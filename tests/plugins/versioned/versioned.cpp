// versioned: a test plugin built twice, as version 1 and version 2, that marks every byte
// with its version (XOR), so that a sink can tell which version processed each frame.
// It also takes its time (delay_ms) so that a reload can happen while frames flow, and
// refuses to start when told (fail_start).
#include <troupe/plugin.hpp>

#include <chrono>
#include <thread>

#ifndef VERSIONED_VERSION
#error "VERSIONED_VERSION must be defined"
#endif

namespace {

class versioned : public troupe::plugin {
 public:
  explicit versioned(troupe::context& ctx)
      : plugin(ctx), delay_ms_(ctx.config.get_int("delay_ms", 0)), fail_start_(ctx.config.get_bool("fail_start")) {}
  void start() override {
    if (fail_start_) throw troupe::fatal_error("versioned: configured to fail start");
  }
  void process(const troupe::frame_in& in) override {
    if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
    uint8_t* out = alloc(in.size());
    for (size_t i = 0; i < in.size(); ++i) out[i] = static_cast<uint8_t>(in.data()[i] ^ (0x10 * VERSIONED_VERSION));
    troupe::frame_out o;
    o.type = in.view().type;
    o.meta.assign(in.view().meta, in.view().meta + in.view().meta_count);
    o.data = out;
    o.size = in.size();
    emit(o);
  }

 private:
  const int64_t delay_ms_;
  const bool fail_start_;
};

}  // namespace

TROUPE_PLUGIN("versioned", versioned)
