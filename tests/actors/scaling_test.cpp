// Scaling a stage and other nodes' shares, without actors: what a change of replicas or of
// placement means for a node.
#include <troupe/scaling.hpp>
#include <troupe/shares.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

using namespace troupe;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace {

replica_view here(size_t slot) { return {slot, true, false, false}; }

}  // namespace

TEST(scaling, more_replicas_are_added_and_fewer_retire_the_newest_first) {
  std::vector<replica_view> rs{here(3), here(5), here(9)};
  auto up = scale_step("blur", rs, 5);
  ASSERT_TRUE(up) << describe(up.error());
  EXPECT_EQ(up->from, 3u);
  EXPECT_EQ(up->add, 2u);
  EXPECT_TRUE(up->retire.empty());

  auto down = scale_step("blur", rs, 1);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->add, 0u);
  EXPECT_THAT(down->retire, ElementsAre(9, 5));

  auto same = scale_step("blur", rs, 3);
  ASSERT_TRUE(same);
  EXPECT_EQ(same->add, 0u);
  EXPECT_TRUE(same->retire.empty());
}

TEST(scaling, other_nodes_shares_and_quarantined_replicas_are_not_counted) {
  std::vector<replica_view> rs{here(0), {1, false, false, false}, {2, true, false, true}, here(4)};
  auto s = scale_step("blur", rs, 1);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->from, 2u);
  EXPECT_THAT(s->retire, ElementsAre(4));
  // Another node's share draining is that node's business.
  rs[1].retiring = true;
  EXPECT_TRUE(scale_step("blur", rs, 3));
}

TEST(scaling, a_replica_still_draining_or_a_count_out_of_range_is_refused_by_name) {
  std::vector<replica_view> rs{here(0), {1, true, true, false}};
  auto busy = scale_step("blur", rs, 3);
  ASSERT_FALSE(busy);
  EXPECT_EQ(code_of(busy.error()), errc::busy);
  EXPECT_THAT(describe(busy.error()), HasSubstr("stage 'blur' is still draining a replica scaled away"));
  for (uint32_t n : {0u, max_replicas + 1}) {
    auto bad = scale_step("blur", {here(0)}, n);
    ASSERT_FALSE(bad);
    EXPECT_EQ(code_of(bad.error()), errc::refused);
    EXPECT_THAT(describe(bad.error()), HasSubstr("replicas must be between 1 and 1024"));
  }
  EXPECT_TRUE(scale_step("blur", {here(0)}, max_replicas));
}

namespace {

planned_stage stage(const std::string& name, std::vector<std::string> elsewhere, bool remote) {
  planned_stage s;
  s.spec.name = name;
  s.elsewhere = std::move(elsewhere);
  s.remote = remote;
  return s;
}

}  // namespace

TEST(shares, a_new_placement_says_per_stage_which_shares_go_and_come_and_what_moves_here) {
  plan old, next;
  old.stages = {stage("src", {}, false), stage("blur", {"n2", "n3"}, true), stage("enc", {}, false),
                stage("sink", {"n2"}, true)};
  next.stages = {stage("src", {}, false), stage("blur", {"n3", "n4"}, true), stage("enc", {"n2"}, true),
                 stage("sink", {}, false)};
  auto changes = share_changes(old, next, {{"sink", 7}});
  ASSERT_EQ(changes.size(), 3u);  // src is where it was

  EXPECT_EQ(changes[0].stage, 1u);
  EXPECT_THAT(changes[0].gone, ElementsAre("n2"));
  EXPECT_THAT(changes[0].added, ElementsAre("n4"));
  EXPECT_FALSE(changes[0].arrives || changes[0].leaves);

  EXPECT_EQ(changes[1].stage, 2u);  // enc leaves for n2
  EXPECT_TRUE(changes[1].leaves);
  EXPECT_THAT(changes[1].added, ElementsAre("n2"));
  EXPECT_EQ(changes[1].generation, 0u);

  EXPECT_EQ(changes[2].stage, 3u);  // sink moves here, at the update's generation
  EXPECT_TRUE(changes[2].arrives);
  EXPECT_THAT(changes[2].gone, ElementsAre("n2"));
  EXPECT_EQ(changes[2].generation, 7u);

  EXPECT_TRUE(share_changes(next, next, {}).empty());
  EXPECT_THAT(participants(next), ElementsAre("n2", "n3", "n4"));
}

TEST(shares, a_stage_placed_on_no_node_for_now_leaves_and_comes_back) {
  plan running, nowhere;
  running.stages = {stage("blur", {}, false)};
  nowhere.stages = {stage("blur", {}, true)};  // this node cannot keep its lease
  auto away = share_changes(running, nowhere, {});
  ASSERT_EQ(away.size(), 1u);
  EXPECT_TRUE(away[0].leaves);
  EXPECT_TRUE(away[0].gone.empty() && away[0].added.empty());
  auto back = share_changes(nowhere, running, {{"blur", 3}});
  ASSERT_EQ(back.size(), 1u);
  EXPECT_TRUE(back[0].arrives);
  EXPECT_EQ(back[0].generation, 3u);
  EXPECT_TRUE(participants(nowhere).empty());
}
