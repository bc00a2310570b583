// Pipeline files: load_pipeline, then plan_pipeline against a catalog of a source, a filter, a
// sink and a plugin with a dependency. Any input must give a plan or an error, never a crash,
// a leak or a hang.
#include "fuzz_input.hpp"

#include <troupe/catalog.hpp>
#include <troupe/pipeline.hpp>

#include <filesystem>
#include <fstream>

namespace {

const troupe::catalog& plugins() {
  static const troupe::catalog c = [] {
    namespace fs = std::filesystem;
    auto dir = fs::temp_directory_path() / ("troupe-fuzz-plugins-" + std::to_string(::getpid()));
    auto put = [&](const std::string& name, const std::string& text) {
      fs::create_directories(dir / name);
      std::ofstream(dir / name / "plugin.yaml") << text;
    };
    put("src",
        "name: src\nversion: 1.0.0\nabi: 1\ncapabilities: [source]\n"
        "config:\n  count: {type: int, default: 10, min: 1}\n  rate: {type: float, default: 0}\n");
    put("filt",
        "name: filt\nversion: 1.0.0\nabi: 1\ncapabilities: [filter]\n"
        "resources: {memory_mb: 256, cpu_cores: 2, processes: 64, network: true}\n");
    put("sink", "name: sink\nversion: 1.0.0\nabi: 1\ncapabilities: [sink]\n");
    put("needy", "name: needy\nversion: 1.0.0\nabi: 1\ndependencies: [{name: filt, version: \"^1.0\"}]\n");
    return troupe::catalog::discover({dir.string()});
  }();
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto path = troupe::fuzz::input_file(data, size, "pipeline.yaml");
  auto spec = troupe::load_pipeline(path);
  if (spec) (void)troupe::plan_pipeline(*spec, plugins());
  return 0;
}
