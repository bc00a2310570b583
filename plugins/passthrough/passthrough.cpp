// passthrough: forwards every frame unchanged; the payload is shared, never copied.
#include <troupe/plugin.hpp>

namespace {

class passthrough : public troupe::plugin {
 public:
  explicit passthrough(troupe::context& ctx) : plugin(ctx) {}
  void process(const troupe::frame_in& in) override { forward(in); }
};

}  // namespace

TROUPE_PLUGIN("passthrough", passthrough)
