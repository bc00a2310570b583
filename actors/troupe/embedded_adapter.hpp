// The embedded adapter: runs one plugin instance's code in this process.
//
// It implements the host table (alloc, emit, log, set_error) and turns plugin calls into
// call_results and output frames. An emitted payload that lies inside the input's buffer,
// or inside a buffer from alloc, is shared, never copied.
#pragma once

#include <troupe/adapter.hpp>
#include <troupe/plugin_library.hpp>

#include <troupe/plugin.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace troupe {

/// The metadata of an output of `in`: the input's, with the `count` pairs the plugin gave
/// laid over it (a key replaced or added; a key given with an empty value removed). Nothing
/// given, or the input's own pairs given back (`seen`, as the plugin was shown them): the
/// input's map itself, shared.
metadata_ptr inherit_meta(const frame& in, const std::vector<troupe_kv>& seen, const troupe_kv* given, uint32_t count);

class embedded_adapter : public plugin_adapter {
 public:
  /// Where host_alloc takes memory from; the default allocates a fresh buffer.
  using allocator = std::function<std::shared_ptr<buffer>(size_t)>;

  /// log_tag is prefixed to every line the plugin logs (node, stage, instance, generation).
  embedded_adapter(std::shared_ptr<plugin_library> library, uint64_t generation, std::string log_tag,
                   allocator alloc = {});
  /// Destroys the plugin instance if it was created and not released.
  ~embedded_adapter() override;
  embedded_adapter(const embedded_adapter&) = delete;
  embedded_adapter& operator=(const embedded_adapter&) = delete;

  call_result create(const config_values& config) override;
  call_result start() override;
  call_result process(const frame* in, std::vector<frame>& out) override;
  call_result stop() override;
  call_result health() override;
  void destroy() override;

  uint64_t generation() const { return generation_; }
  const std::string& log_tag() const { return log_tag_; }

 private:
  // The host's callbacks: none throws into the plugin; a failure is their result.
  static uint8_t* host_alloc(void* ctx, size_t size) noexcept;
  static troupe_status host_emit(void* ctx, const troupe_output* out) noexcept;
  static troupe_status emit(embedded_adapter& self, const troupe_output* out);  // host_emit's work; may throw
  static void host_log(void* ctx, troupe_log_level level, const char* message) noexcept;
  static void host_set_error(void* ctx, const char* message) noexcept;
  call_result finish(troupe_status st);

  std::shared_ptr<plugin_library> library_;
  uint64_t generation_;
  allocator alloc_;
  std::string log_tag_;
  troupe_host host_;
  troupe_instance* self_ = nullptr;
  // State of the call in progress.
  const frame* input_ = nullptr;
  std::vector<troupe_kv> input_meta_;  // the input's metadata as the plugin sees it
  std::vector<frame>* out_ = nullptr;
  uint32_t parts_ = 0;
  std::vector<std::shared_ptr<buffer>> allocs_;
  std::string error_;
};

}  // namespace troupe
