// Header-only C++ helper over troupe/plugin.h: a plugin author writes one class and one
// TROUPE_PLUGIN(name, class) line.
//
//   class invert : public troupe::plugin {
//    public:
//     explicit invert(troupe::context& ctx) : plugin(ctx) {}
//     void process(const troupe::frame_in& in) override { ... emit(...); }
//   };
//   TROUPE_PLUGIN("invert", invert)
//
// Failures: throw troupe::frame_error to fail one frame (the instance goes on), throw
// troupe::fatal_error (or let any other exception escape) to have the instance declared
// lost. The helper catches every exception at the ABI boundary.
#pragma once

#include <troupe/plugin.h>

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace troupe {

/// Fails the current call; for process, only the current frame.
struct frame_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The instance cannot go on; the host restarts it with a new generation.
struct fatal_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Validated configuration: every field of the manifest's schema is present.
class config {
 public:
  config(const troupe_kv* kv, uint32_t n) {
    for (uint32_t i = 0; i < n; ++i) entries_.emplace_back(kv[i].key, kv[i].value);
  }
  bool has(std::string_view key) const { return find(key) != nullptr; }
  std::string get_string(std::string_view key, std::string fallback = {}) const {
    auto* v = find(key);
    return v ? *v : std::move(fallback);
  }
  int64_t get_int(std::string_view key, int64_t fallback = 0) const {
    auto* v = find(key);
    return v ? std::strtoll(v->c_str(), nullptr, 10) : fallback;
  }
  double get_double(std::string_view key, double fallback = 0) const {
    auto* v = find(key);
    return v ? std::strtod(v->c_str(), nullptr) : fallback;
  }
  bool get_bool(std::string_view key, bool fallback = false) const {
    auto* v = find(key);
    return v ? (*v == "true" || *v == "1") : fallback;
  }

 private:
  const std::string* find(std::string_view key) const {
    for (auto& [k, v] : entries_)
      if (k == key) return &v;
    return nullptr;
  }
  std::vector<std::pair<std::string, std::string>> entries_;
};

/// A read-only input frame; valid only during process.
class frame_in {
 public:
  explicit frame_in(const troupe_frame_view& v) : v_(v) {}
  uint64_t stream() const { return v_.stream; }
  uint64_t seq() const { return v_.seq; }
  uint32_t part() const { return v_.part; }
  uint64_t generation() const { return v_.generation; }
  int64_t timestamp_ns() const { return v_.timestamp_ns; }
  std::string_view type() const { return v_.type ? v_.type : ""; }
  const uint8_t* data() const { return v_.data; }
  size_t size() const { return v_.size; }
  /// The metadata value for key, or empty.
  std::string_view meta(std::string_view key) const {
    for (uint32_t i = 0; i < v_.meta_count; ++i)
      if (key == v_.meta[i].key) return v_.meta[i].value;
    return {};
  }
  /// A metadata value read as an integer, or fallback if absent or not a number.
  int64_t meta_int(std::string_view key, int64_t fallback = -1) const {
    auto v = meta(key);
    int64_t x = fallback;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    return ec == std::errc{} && p == v.data() + v.size() && !v.empty() ? x : fallback;
  }
  const troupe_frame_view& view() const { return v_; }

 private:
  const troupe_frame_view& v_;
};

/// An output under construction; meta strings must outlive the emit call.
struct frame_out {
  uint64_t stream = 0;
  uint64_t seq = 0;
  int64_t timestamp_ns = 0;
  const char* type = nullptr;
  std::vector<troupe_kv> meta;
  const uint8_t* data = nullptr;
  size_t size = 0;
};

/// What the host gives an instance at create.
struct context {
  const troupe_host* host;
  troupe::config config;
};

/// Base class of a C++ plugin. One instance is called by one thread at a time.
class plugin {
 public:
  explicit plugin(context& ctx) : host_(ctx.host) {}
  virtual ~plugin() = default;
  plugin(const plugin&) = delete;
  plugin& operator=(const plugin&) = delete;

  virtual void start() {}
  /// A filter or sink: called once per input frame.
  virtual void process(const frame_in&) {}
  /// A source: emit the next frames (possibly none yet); return false when finished.
  virtual bool produce() { return false; }
  virtual void stop() {}
  virtual bool healthy() { return true; }

 protected:
  /// A host-owned buffer to fill and emit without a copy.
  uint8_t* alloc(size_t size) {
    auto* p = host_->alloc(host_->ctx, size);
    if (p == nullptr) throw frame_error("out of memory for a " + std::to_string(size) + " byte payload");
    return p;
  }
  void emit(const frame_out& out) {
    troupe_output o{out.stream, out.seq,         out.timestamp_ns,
                    out.type,   out.meta.data(), static_cast<uint32_t>(out.meta.size()),
                    out.data,   out.size};
    if (host_->emit(host_->ctx, &o) != TROUPE_OK) throw frame_error("emit refused");
  }
  /// Passes the input on unchanged (same payload, no copy).
  void forward(const frame_in& in) {
    frame_out o;
    o.type = in.view().type;
    o.timestamp_ns = in.timestamp_ns();
    o.data = in.data();
    o.size = in.size();
    o.meta.assign(in.view().meta, in.view().meta + in.view().meta_count);
    emit(o);
  }
  void log(troupe_log_level level, const std::string& message) { host_->log(host_->ctx, level, message.c_str()); }
  const troupe_host* host() const { return host_; }

 private:
  const troupe_host* host_;
};

namespace detail {

template <class F>
troupe_status guarded(const troupe_host* host, F&& f) {
  try {
    return f();
  } catch (const frame_error& e) {
    host->set_error(host->ctx, e.what());
    return TROUPE_ERROR;
  } catch (const fatal_error& e) {
    host->set_error(host->ctx, e.what());
    return TROUPE_FATAL;
  } catch (const std::exception& e) {
    host->set_error(host->ctx, (std::string("uncaught exception: ") + e.what()).c_str());
    return TROUPE_FATAL;
  } catch (...) {
    host->set_error(host->ctx, "uncaught exception of unknown type");
    return TROUPE_FATAL;
  }
}

template <class T>
struct adapter {
  struct holder {
    const troupe_host* host;
    std::unique_ptr<T> impl;
  };
  static troupe_instance* create(const troupe_host* host, const troupe_kv* cfg, uint32_t n) {
    auto h = std::make_unique<holder>();
    h->host = host;
    auto st = guarded(host, [&] {
      context ctx{host, config(cfg, n)};
      h->impl = std::make_unique<T>(ctx);
      return TROUPE_OK;
    });
    return st == TROUPE_OK ? reinterpret_cast<troupe_instance*>(h.release()) : nullptr;
  }
  static holder& self(troupe_instance* p) { return *reinterpret_cast<holder*>(p); }
  static troupe_status start(troupe_instance* p) {
    auto& h = self(p);
    return guarded(h.host, [&] {
      h.impl->start();
      return TROUPE_OK;
    });
  }
  static troupe_status process(troupe_instance* p, const troupe_frame_view* in) {
    auto& h = self(p);
    return guarded(h.host, [&] {
      if (in == nullptr) return h.impl->produce() ? TROUPE_OK : TROUPE_END;
      h.impl->process(frame_in(*in));
      return TROUPE_OK;
    });
  }
  static troupe_status stop(troupe_instance* p) {
    auto& h = self(p);
    return guarded(h.host, [&] {
      h.impl->stop();
      return TROUPE_OK;
    });
  }
  static void destroy(troupe_instance* p) {
    std::unique_ptr<holder> h(reinterpret_cast<holder*>(p));
    try {
      h->impl.reset();
    } catch (...) {
    }
  }
  static troupe_status health(troupe_instance* p) {
    auto& h = self(p);
    return guarded(h.host, [&] { return h.impl->healthy() ? TROUPE_OK : TROUPE_ERROR; });
  }
};

}  // namespace detail
}  // namespace troupe

/// Exports plugin class CLS under NAME (must match the manifest's name).
#define TROUPE_PLUGIN(NAME, CLS)                                                            \
  extern "C" TROUPE_EXPORT const troupe_plugin_api* troupe_plugin_entry(void) {             \
    using troupe_adapter_ = ::troupe::detail::adapter<CLS>;                                 \
    static const troupe_plugin_api api = {TROUPE_ABI_MAJOR,                                 \
                                          static_cast<uint32_t>(sizeof(troupe_plugin_api)), \
                                          NAME,                                             \
                                          &troupe_adapter_::create,                         \
                                          &troupe_adapter_::start,                          \
                                          &troupe_adapter_::process,                        \
                                          &troupe_adapter_::stop,                           \
                                          &troupe_adapter_::destroy,                        \
                                          &troupe_adapter_::health,                         \
                                          TROUPE_ABI_MINOR,                                 \
                                          0,                                                \
                                          {}};                                              \
    return &api;                                                                            \
  }
