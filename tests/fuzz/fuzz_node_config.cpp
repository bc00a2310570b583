// Node configs (node.yaml): any input gives a config or an error.
#include "fuzz_input.hpp"

#include <cluster/node_config.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)troupe::cluster::load_node_config(troupe::fuzz::input_file(data, size, "node.yaml"));
  return 0;
}
