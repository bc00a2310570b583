// What the node takes of an isolated worker's results: payloads it names are checked against
// the input and the output region, and a Result is read in proportion to its own size.
#include <troupe/worker_protocol.hpp>

#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <vector>

using namespace troupe;
namespace wp = troupe::worker_protocol;

namespace {

TEST(worker_protocol, a_named_payload_must_lie_within_the_input_or_the_output_region) {
  wp::payload_place at;
  EXPECT_EQ(wp::locate_payload(wp::input_region, 128, 32, true, 64, 100, 4096, at), std::nullopt);
  EXPECT_TRUE(at.in_input);
  EXPECT_EQ(at.at, 64u);
  EXPECT_EQ(wp::locate_payload(wp::output_region, 4000, 96, true, 0, 0, 4096, at), std::nullopt);
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

TEST(worker_protocol, a_list_of_bytes_read_as_outputs_is_refused) {
  // A Result whose outputs are a list of 512 bytes: read as structs, each byte is a Frame, so
  // 64 words of results area would become 512 frames for the node to make.
  const uint64_t count = 512;
  std::vector<uint64_t> flat = {
      uint64_t{5 + count / 8} << 32,              // segment table: one segment
      (uint64_t{2} << 32) | (uint64_t{2} << 48),  // root: a struct right after, 2 data words, 2 pointers
      0,
      0,                                        // status, nanos
      0,                                        // error: null
      1 | (uint64_t{2} << 32) | (count << 35),  // outputs: a list of bytes right after
  };
  flat.resize(flat.size() + count / 8, 0);
  kj::ArrayPtr<const capnp::word> area(reinterpret_cast<const capnp::word*>(flat.data()), flat.size());
  const size_t words = wp::message_words(area);
  ASSERT_EQ(words, flat.size());
  capnp::FlatArrayMessageReader reader(area, wp::reader_options(words));
  auto outputs = reader.getRoot<wire::Result>().getOutputs();
  ASSERT_EQ(outputs.size(), count);  // capnp reads a list of bytes as a list of structs
  EXPECT_EQ(wp::check_output_count(outputs.size(), words),
            "worker claimed 512 outputs in a result of " + std::to_string(words) + " words");
}

TEST(worker_protocol, the_outputs_a_worker_writes_pass_the_count_check) {
  capnp::MallocMessageBuilder msg;
  auto res = msg.initRoot<wire::Result>();
  auto outs = res.initOutputs(100);
  for (auto o : outs) o.setType("x");
  auto flat = capnp::messageToFlatArray(msg);
  kj::ArrayPtr<const capnp::word> area = flat;
  const size_t words = wp::message_words(area);
  capnp::FlatArrayMessageReader reader(area, wp::reader_options(words));
  EXPECT_EQ(wp::check_output_count(reader.getRoot<wire::Result>().getOutputs().size(), words), std::nullopt);
}

}  // namespace
