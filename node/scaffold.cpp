// troupe new-plugin: a plugin folder to build outside Troupe's tree against the installed SDK
// (find_package(Troupe)), with its manifest and a conformance test that ctest runs.
#include "commands.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace troupe::cli {

namespace {

namespace fs = std::filesystem;

// Every "@NAME@" in text becomes name.
std::string fill(std::string text, const std::string& name) {
  for (size_t at = text.find("@NAME@"); at != std::string::npos; at = text.find("@NAME@", at + name.size()))
    text.replace(at, 6, name);
  return text;
}

const char* cmake_text = R"(cmake_minimum_required(VERSION 3.22)
project(@NAME@ LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)

# The installed SDK: Troupe::plugin, Troupe::troupe and troupe_add_plugin(). If Troupe is
# installed under a prefix of your own: cmake -DCMAKE_PREFIX_PATH=<prefix> ...
find_package(Troupe 0.1 REQUIRED)

# libtroupe_@NAME@.so beside a copy of plugin.yaml in <build>/plugins/@NAME@/; `cmake --install`
# puts both in Troupe's plugin directory, where every troupe command finds them.
troupe_add_plugin(@NAME@ @NAME@.cpp)

# `ctest` checks the plugin against the contract, embedded and isolated.
enable_testing()
add_test(NAME conformance COMMAND Troupe::troupe conformance @NAME@ --plugin-path ${CMAKE_BINARY_DIR}/plugins)
)";

const char* filter_source = R"(// @NAME@: a filter. Called once per input frame; emits what it makes of it.
#include <troupe/plugin.hpp>

#include <cstring>

namespace {

class @NAME@ : public troupe::plugin {
 public:
  explicit @NAME@(troupe::context& ctx) : plugin(ctx), gain_(ctx.config.get_int("gain", 0)) {}

  void process(const troupe::frame_in& in) override {
    // Throw troupe::frame_error to fail this frame only; troupe::fatal_error (or any other
    // exception) has the instance restarted.
    if (in.size() == 0) throw troupe::frame_error("@NAME@: expected a payload, got an empty frame");
    // Write into a buffer the host owns: the output then crosses to the next stage, or to an
    // isolated worker, without another copy.
    uint8_t* out = alloc(in.size());
    for (size_t i = 0; i < in.size(); ++i) out[i] = static_cast<uint8_t>(in.data()[i] + gain_);
    // Stream, seq, type, timestamp and metadata come from the input; set o.type or o.meta
    // ({key, value} pairs laid over the input's; an empty value removes a key) to change them.
    troupe::frame_out o;
    o.data = out;
    o.size = in.size();
    emit(o);
  }

 private:
  int64_t gain_;
};

}  // namespace

TROUPE_PLUGIN("@NAME@", @NAME@)
)";

const char* source_source = R"(// @NAME@: a source. The host calls produce() for more frames until it returns false.
#include <troupe/plugin.hpp>

#include <cstring>

namespace {

class @NAME@ : public troupe::plugin {
 public:
  explicit @NAME@(troupe::context& ctx)
      : plugin(ctx), count_(ctx.config.get_int("count", 10)), bytes_(ctx.config.get_int("bytes", 1024)) {}

  bool produce() override {
    if (seq_ >= count_) return false;  // finished: the pipeline drains and stops
    uint8_t* out = alloc(static_cast<size_t>(bytes_));
    std::memset(out, static_cast<int>(seq_ & 0xff), static_cast<size_t>(bytes_));
    troupe::frame_out o;
    o.stream = 0;
    o.seq = static_cast<uint64_t>(seq_);
    o.timestamp_ns = seq_ * 40'000'000;  // 25 frames a second
    o.type = "application/octet-stream";
    o.data = out;
    o.size = static_cast<size_t>(bytes_);
    emit(o);
    ++seq_;
    return true;
  }

 private:
  int64_t count_, bytes_;
  int64_t seq_ = 0;
};

}  // namespace

TROUPE_PLUGIN("@NAME@", @NAME@)
)";

const char* sink_source = R"(// @NAME@: a sink. Takes every frame and writes a summary file when it stops.
#include <troupe/plugin.hpp>

#include <fstream>

namespace {

class @NAME@ : public troupe::plugin {
 public:
  explicit @NAME@(troupe::context& ctx) : plugin(ctx), output_(ctx.config.get_string("output", "@NAME@.txt")) {}

  void process(const troupe::frame_in& in) override {
    ++frames_;
    bytes_ += in.size();
  }

  void stop() override {
    std::ofstream out(output_);
    out << "frames " << frames_ << " bytes " << bytes_ << "\n";
    if (!out) throw troupe::fatal_error("@NAME@: cannot write " + output_);
  }

 private:
  std::string output_;
  uint64_t frames_ = 0, bytes_ = 0;
};

}  // namespace

TROUPE_PLUGIN("@NAME@", @NAME@)
)";

const char* manifest_head = R"(name: @NAME@
version: 0.1.0
abi: 1
library: libtroupe_@NAME@.so
)";

const char* manifest_tail = R"(dependencies: []
mode: embedded               # or isolated: a worker process under the limits below
resources:
  memory_mb: 256
  cpu_seconds: 0
  cpu_cores: 0
  open_files: 64
  processes: 16
  network: false
  deadline_ms: 2000
)";

std::string manifest_text(const std::string& kind) {
  std::string body;
  if (kind == "filter")
    body =
        "description: Adds 'gain' to every byte of each frame.\n"
        "capabilities: [filter]\n"
        "inputs: {types: [any]}                 # the media types it takes, and the metadata it needs\n"
        "outputs: {types: [same], gives: []}    # same: the input's type; metadata is inherited\n"
        "config:\n"
        "  gain: {type: int, default: 0, min: -255, max: 255, description: Added to every byte.}\n";
  else if (kind == "source")
    body =
        "description: Makes 'count' frames of 'bytes' bytes each.\n"
        "capabilities: [source]\n"
        "outputs: {types: [application/octet-stream], gives: []}\n"
        "config:\n"
        "  count: {type: int, default: 10, min: 0, max: 1000000, description: Frames to make.}\n"
        "  bytes: {type: int, default: 1024, min: 1, max: 16777216, description: Payload bytes per frame.}\n";
  else
    body =
        "description: Counts frames and bytes and writes them to 'output' on stop.\n"
        "capabilities: [sink]\n"
        "inputs: {types: [any]}\n"
        "config:\n"
        "  output: {type: string, default: \"@NAME@.txt\", path: write, description: Summary file written on stop.}\n"
        "  # path write: an isolated worker may write the file this field names (and only where granted)\n";
  return std::string(manifest_head) + body + manifest_tail;
}

const char* readme_text = R"(# @NAME@: a Troupe plugin

    cmake -S . -B build            # -DCMAKE_PREFIX_PATH=<prefix> if Troupe is installed there
    cmake --build build
    ctest --test-dir build         # troupe conformance @NAME@, embedded and isolated

Try it in a pipeline with `troupe --plugin-path build/plugins run pipeline.yaml`, and install
it into Troupe's plugin directory with `cmake --install build`.
)";

}  // namespace

int new_plugin(const new_plugin_options& o) {
  auto fail = [](const std::string& why) {
    std::fprintf(stderr, "troupe new-plugin: %s\n", why.c_str());
    return 1;
  };
  const auto& n = o.name;
  bool valid = !n.empty() && n.size() <= 64 && n[0] >= 'a' && n[0] <= 'z';
  for (char c : n) valid = valid && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
  if (!valid)
    return fail("'" + n + "' is not a plugin name: expected lower-case letters, digits and _, starting with a letter");
  fs::path dir = o.dir.empty() ? fs::path(n) : fs::path(o.dir);
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec))
    return fail(dir.string() + ": exists and is not empty; give a new folder with --dir");
  fs::create_directories(dir, ec);
  if (ec) return fail(dir.string() + ": cannot create it: " + ec.message());
  const char* source = o.kind == "source" ? source_source : o.kind == "sink" ? sink_source : filter_source;
  const std::pair<std::string, std::string> files[] = {{"CMakeLists.txt", fill(cmake_text, n)},
                                                       {n + ".cpp", fill(source, n)},
                                                       {"plugin.yaml", fill(manifest_text(o.kind), n)},
                                                       {"README.md", fill(readme_text, n)}};
  for (auto& [file, text] : files) {
    std::ofstream out(dir / file);
    out << text;
    out.close();
    if (!out) return fail((dir / file).string() + ": cannot write it: " + std::strerror(errno));
  }
  std::printf("made %s: a %s plugin '%s' (CMakeLists.txt, %s.cpp, plugin.yaml, README.md)\n", dir.string().c_str(),
              o.kind.c_str(), n.c_str(), n.c_str());
  std::printf("next:\n  cmake -S %s -B %s/build && cmake --build %s/build && ctest --test-dir %s/build\n",
              dir.string().c_str(), dir.string().c_str(), dir.string().c_str(), dir.string().c_str());
  return 0;
}

}  // namespace troupe::cli
