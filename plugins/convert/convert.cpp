// convert: converts video frames to another pixel format with libswscale, same size.
#include "../media/sws_filter.hpp"

namespace {

class convert : public troupe::media::sws_filter {
 public:
  explicit convert(troupe::context& ctx) : sws_filter(ctx, "convert", false) {}
};

}  // namespace

TROUPE_PLUGIN("convert", convert)
