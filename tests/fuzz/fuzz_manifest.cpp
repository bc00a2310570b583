// Plugin manifests (plugin.yaml): any input gives a manifest or an error.
#include "fuzz_input.hpp"

#include <troupe/manifest.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)troupe::load_manifest(troupe::fuzz::input_file(data, size, "plugin.yaml"));
  return 0;
}
