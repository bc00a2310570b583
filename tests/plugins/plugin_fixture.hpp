// Drives one example plugin through the real embedded adapter, without actors: load its
// manifest and library from the build tree, validate a config, and call it.
#pragma once

#include "../test_util.hpp"

#include <troupe/embedded_adapter.hpp>
#include <troupe/manifest.hpp>
#include <troupe/plugin_library.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace troupe::test {

class plugin_fixture {
 public:
  /// Loads plugins/<name> and creates an instance with config entries (key, value).
  plugin_fixture(const std::string& name, std::vector<std::pair<std::string, std::string>> config = {}) {
    auto m = load_manifest(std::string(TROUPE_PLUGIN_OUTPUT_DIR) + "/" + name + "/plugin.yaml");
    if (!m) throw std::runtime_error(describe(m.error()));
    manifest_ = *m;
    auto lib = plugin_library::open(manifest_);
    if (!lib) throw std::runtime_error(describe(lib.error()));
    std::vector<config_entry> entries;
    for (auto& [k, v] : config) entries.push_back({k, v, 1});
    auto cfg = validate_config(manifest_, entries, "test");
    if (!cfg) throw std::runtime_error(describe(cfg.error()));
    adapter_ = std::make_unique<embedded_adapter>(*lib, 1, "test " + name);
    create_result = adapter_->create(*cfg);
  }

  call_result create_result;
  call_result start() { return adapter_->start(); }
  call_result stop() { return adapter_->stop(); }
  /// Processes one input; outputs replace `outputs`.
  call_result process(const frame& in) {
    outputs.clear();
    return adapter_->process(&in, outputs);
  }
  /// One source turn (process with no input).
  call_result produce() {
    outputs.clear();
    return adapter_->process(nullptr, outputs);
  }
  std::vector<frame> outputs;
  const manifest& info() const { return manifest_; }

 private:
  manifest manifest_;
  std::unique_ptr<embedded_adapter> adapter_;
};

/// An RGB24 frame of w x h filled by fn(x, y, channel).
template <class F>
frame rgb_frame(int w, int h, F fn, uint64_t stream = 0, uint64_t seq = 0) {
  auto b = buffer::allocate(static_cast<size_t>(w * h * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) b->data()[(y * w + x) * 3 + c] = fn(x, y, c);
  frame f;
  f.stream = stream;
  f.seq = seq;
  f.type = "video/rgb24";
  f.meta = std::make_shared<metadata>(metadata{{"width", std::to_string(w)}, {"height", std::to_string(h)}});
  f.payload = payload_slice(b);
  return f;
}

inline uint8_t px(const frame& f, int w, int x, int y, int c) { return f.payload.data()[(y * w + x) * 3 + c]; }

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace troupe::test
