// What the node takes of an isolated worker's results: payloads it names are checked against
// the input and the output region, and a Result is read in proportion to its own size.
#include <worker_protocol.hpp>

#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <vector>

using namespace troupe;
namespace wp = troupe::worker_protocol;

namespace {

TEST(worker_protocol, a_named_payload_must_lie_within_the_input_or_the_output_region) {
  wp::payload_place at;
  EXPECT_EQ(wp::locate_payload(wp::input_region, 128, 32, true, 64, 100, 4096, at), "");
  EXPECT_TRUE(at.in_input);
  EXPECT_EQ(at.at, 64u);
  EXPECT_EQ(wp::locate_payload(wp::output_region, 4000, 96, true, 0, 0, 4096, at), "");
  EXPECT_FALSE(at.in_input);
  EXPECT_EQ(at.at, 4000u);
  const std::string outside_input = "worker named bytes outside its input";
  EXPECT_EQ(wp::locate_payload(wp::input_region, 32, 8, true, 64, 100, 4096, at), outside_input);    // before it
  EXPECT_EQ(wp::locate_payload(wp::input_region, 150, 32, true, 64, 100, 4096, at), outside_input);  // past its end
  EXPECT_EQ(wp::locate_payload(wp::input_region, 64, ~uint64_t{0}, true, 64, 100, 4096, at), outside_input);
  EXPECT_EQ(wp::locate_payload(wp::input_region, 64, 8, false, 0, 0, 4096, at), outside_input);  // no input
  EXPECT_EQ(wp::locate_payload(wp::output_region, 4000, 97, true, 0, 0, 4096, at),
            "worker named bytes outside its output region");
  EXPECT_EQ(wp::locate_payload(wp::output_region, ~uint64_t{0}, 2, true, 0, 0, 4096, at),
            "worker named bytes outside its output region");
  EXPECT_EQ(wp::locate_payload(7, 0, 1, true, 0, 10, 4096, at), "worker named region 7");
}

TEST(worker_protocol, a_result_claiming_millions_of_empty_outputs_is_not_read) {
  // A Result (2 data words, 2 pointers) whose outputs are a composite list of 2^22 structs of
  // size zero: six words to write, one word walked per element to read.
  const uint64_t count = uint64_t{1} << 22;
  std::vector<uint64_t> flat = {
      uint64_t{6} << 32,                          // segment table: one segment of 6 words
      (uint64_t{2} << 32) | (uint64_t{2} << 48),  // root: a struct right after, 2 data words, 2 pointers
      0,
      0,                        // status, nanos
      0,                        // error: null
      1 | (uint64_t{7} << 32),  // outputs: a composite list right after, 0 words of elements
      count << 2,               // its tag: 2^22 elements of 0 data words, 0 pointers
  };
  kj::ArrayPtr<const capnp::word> area(reinterpret_cast<const capnp::word*>(flat.data()), flat.size());
  ASSERT_EQ(wp::message_words(area), flat.size());
  {
    // Read as a worker's result used to be: the whole list is walked.
    capnp::FlatArrayMessageReader loose(area, wp::reader_options());
    EXPECT_EQ(loose.getRoot<wire::Result>().getOutputs().size(), count);
  }
  capnp::FlatArrayMessageReader reader(area, wp::reader_options(wp::message_words(area)));
  EXPECT_THROW(reader.getRoot<wire::Result>().getOutputs(), kj::Exception);
}

}  // namespace
