// scale: resizes video frames (and converts their pixel format if asked) with libswscale.
#include "../media/sws_filter.hpp"

namespace {

class scale : public troupe::media::sws_filter {
 public:
  explicit scale(troupe::context& ctx) : sws_filter(ctx, "scale", true) {}
};

}  // namespace

TROUPE_PLUGIN("scale", scale)
