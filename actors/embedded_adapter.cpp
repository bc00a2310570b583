#include <troupe/embedded_adapter.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <string_view>

namespace troupe {

embedded_adapter::embedded_adapter(std::shared_ptr<plugin_library> library, uint64_t generation, std::string log_tag,
                                   allocator alloc)
    : library_(std::move(library)), generation_(generation), alloc_(std::move(alloc)), log_tag_(std::move(log_tag)) {
  host_ = troupe_host{};
  host_.abi_major = TROUPE_ABI_MAJOR;
  host_.struct_size = sizeof(troupe_host);
  host_.abi_minor = TROUPE_ABI_MINOR;
  host_.ctx = this;
  host_.alloc = &host_alloc;
  host_.emit = &host_emit;
  host_.log = &host_log;
  host_.set_error = &host_set_error;
}

embedded_adapter::~embedded_adapter() { destroy(); }

call_result embedded_adapter::finish(troupe_status st) {
  call_result r{st, {}};
  if (st != TROUPE_OK && st != TROUPE_END)
    r.error = error_.empty() ? "plugin returned status " + std::to_string(st) : error_;
  error_.clear();
  return r;
}

call_result embedded_adapter::create(const config_values& config) {
  std::vector<troupe_kv> kv;
  kv.reserve(config.size());
  for (auto& [k, v] : config) kv.push_back({k.c_str(), v.c_str()});
  self_ = library_->api().create(&host_, kv.data(), static_cast<uint32_t>(kv.size()));
  if (self_ == nullptr) {
    auto r = finish(TROUPE_FATAL);
    r.error = "create failed: " + r.error;
    return r;
  }
  return finish(TROUPE_OK);
}

call_result embedded_adapter::start() { return finish(library_->api().start(self_)); }

call_result embedded_adapter::stop() { return finish(library_->api().stop(self_)); }

call_result embedded_adapter::health() {
  auto fn = library_->api().health;
  return fn ? finish(fn(self_)) : call_result{};
}

void embedded_adapter::destroy() {
  if (self_ != nullptr) library_->api().destroy(self_);
  self_ = nullptr;
}

call_result embedded_adapter::process(const frame* in, std::vector<frame>& out) {
  troupe_frame_view view{};
  input_meta_.clear();  // keeps its capacity: no allocation per frame
  if (in != nullptr) {
    if (in->meta)
      for (auto& [k, v] : *in->meta) input_meta_.push_back({k.c_str(), v.c_str()});
    view = troupe_frame_view{
        in->stream,         in->seq,           in->part,           in->generation,
        in->timestamp_ns,   in->type.c_str(),  input_meta_.data(), static_cast<uint32_t>(input_meta_.size()),
        in->payload.data(), in->payload.size()};
  }
  input_ = in;
  out_ = &out;
  parts_ = 0;
  auto st = library_->api().process(self_, in ? &view : nullptr);
  input_ = nullptr;
  out_ = nullptr;
  allocs_.clear();
  return finish(st);
}

uint8_t* embedded_adapter::host_alloc(void* ctx, size_t size) noexcept {
  auto& self = *static_cast<embedded_adapter*>(ctx);
  try {
    auto b = self.alloc_ ? self.alloc_(size) : buffer::allocate(size);
    if (!b) return nullptr;
    auto* p = b->data();
    self.allocs_.push_back(std::move(b));
    return p;
  } catch (...) {
    return nullptr;
  }
}

troupe_status embedded_adapter::host_emit(void* ctx, const troupe_output* o) noexcept {
  auto& self = *static_cast<embedded_adapter*>(ctx);
  try {
    return emit(self, o);
  } catch (const std::exception& e) {
    host_set_error(ctx, (std::string("emit failed in the host: ") + e.what()).c_str());
  } catch (...) {
    host_set_error(ctx, "emit failed in the host");
  }
  return TROUPE_ERROR;
}

metadata_ptr inherit_meta(const frame& in, const std::vector<troupe_kv>& seen, const troupe_kv* given, uint32_t count) {
  if (count == 0) return in.meta;
  // The input's own strings, passed back unchanged (as forward does): shared, not copied.
  bool same = count == seen.size();
  for (uint32_t i = 0; same && i < count; ++i) same = given[i].key == seen[i].key && given[i].value == seen[i].value;
  if (same) return in.meta;
  auto m = in.meta ? std::make_shared<metadata>(*in.meta) : std::make_shared<metadata>();
  for (uint32_t i = 0; i < count; ++i) {
    if (given[i].key == nullptr) continue;
    std::string_view key = given[i].key, value = given[i].value != nullptr ? given[i].value : "";
    auto it = std::find_if(m->begin(), m->end(), [&](auto& kv) { return kv.first == key; });
    if (value.empty()) {
      if (it != m->end()) m->erase(it);
    } else if (it != m->end()) {
      it->second = value;
    } else {
      m->emplace_back(key, value);
    }
  }
  return m;
}

troupe_status embedded_adapter::emit(embedded_adapter& self, const troupe_output* o) {
  if (self.out_ == nullptr || o == nullptr) {
    self.error_ = "emit called outside process";
    return TROUPE_ERROR;
  }
  const frame* in = self.input_;
  if (in == nullptr && o->type == nullptr) {
    self.error_ = "a source must set the type of what it emits";
    return TROUPE_ERROR;
  }
  frame f;
  if (in != nullptr) {
    f.stream = in->stream;
    f.seq = in->seq;
    f.part = self.parts_++;
    f.timestamp_ns = o->timestamp_ns != 0 ? o->timestamp_ns : in->timestamp_ns;
  } else {
    f.stream = o->stream;
    f.seq = o->seq;
    f.timestamp_ns = o->timestamp_ns;
  }
  f.generation = self.generation_;
  f.type = o->type != nullptr ? o->type : in->type;
  if (in != nullptr) {
    f.meta = inherit_meta(*in, self.input_meta_, o->meta, o->meta_count);
  } else if (o->meta_count > 0) {
    auto m = std::make_shared<metadata>();
    m->reserve(o->meta_count);
    for (uint32_t i = 0; i < o->meta_count; ++i)
      if (o->meta[i].value != nullptr && o->meta[i].value[0] != '\0') m->emplace_back(o->meta[i].key, o->meta[i].value);
    f.meta = std::move(m);
  }
  if (o->size > 0) {
    std::optional<payload_slice> view;
    if (in != nullptr) view = payload_slice::within(in->payload.buffer(), o->data, o->size);  // zero copy
    for (auto& b : self.allocs_)
      if (b->contains(o->data, o->size)) {  // a buffer the plugin asked for
        view = payload_slice::within(b, o->data, o->size);
        break;
      }
    if (view) {
      f.payload = std::move(*view);
    } else {
      auto b = buffer::allocate(o->size);
      std::memcpy(b->data(), o->data, o->size);
      f.payload = payload_slice(std::move(b));
    }
  }
  self.out_->push_back(std::move(f));
  return TROUPE_OK;
}

void embedded_adapter::host_log(void* ctx, troupe_log_level level, const char* message) noexcept {
  auto& self = *static_cast<embedded_adapter*>(ctx);
  static constexpr spdlog::level::level_enum levels[] = {spdlog::level::trace, spdlog::level::debug,
                                                         spdlog::level::info, spdlog::level::warn, spdlog::level::err};
  auto lvl = levels[level <= TROUPE_LOG_ERROR ? level : TROUPE_LOG_ERROR];
  try {
    spdlog::log(lvl, "[{}] {}", self.log_tag_, message ? message : "");
  } catch (...) {
    // A line that cannot be logged (out of memory) is lost, not thrown into the plugin.
  }
}

void embedded_adapter::host_set_error(void* ctx, const char* message) noexcept {
  try {
    static_cast<embedded_adapter*>(ctx)->error_ = message ? message : "";
  } catch (...) {
    static_cast<embedded_adapter*>(ctx)->error_.clear();  // the status still says it failed
  }
}

}  // namespace troupe
