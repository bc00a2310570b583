// The manager's slot phases: what can follow what.
#include <troupe/slot_phase.hpp>

#include <gtest/gtest.h>

#include <array>
#include <set>
#include <string>

using namespace troupe;
using sp = slot_phase;

namespace {

constexpr std::array<sp, 7> all = {sp::idle,     sp::spawning,    sp::running, sp::restarting,
                                   sp::stopping, sp::quarantined, sp::done};

// The phases reachable from p in any number of changes.
std::set<sp> reachable(sp p) {
  std::set<sp> seen, todo{p};
  while (!todo.empty()) {
    auto at = *todo.begin();
    todo.erase(todo.begin());
    for (auto next : all)
      if (can_enter(at, next) && seen.insert(next).second) todo.insert(next);
  }
  return seen;
}

}  // namespace

TEST(slot_phase, every_change_the_manager_makes_is_allowed) {
  // The changes the manager's handlers make, one per line of slot_phase.hpp's table.
  std::set<std::pair<sp, sp>> made = {
      {sp::idle, sp::spawning},       {sp::idle, sp::done},  // started; stopped before its turn
      {sp::spawning, sp::running},    {sp::spawning, sp::restarting}, {sp::spawning, sp::quarantined},
      {sp::spawning, sp::stopping},   {sp::spawning, sp::done},       {sp::running, sp::restarting},
      {sp::running, sp::quarantined}, {sp::running, sp::stopping},    {sp::running, sp::done},
      {sp::restarting, sp::spawning}, {sp::restarting, sp::stopping}, {sp::restarting, sp::done},
      {sp::stopping, sp::done},       {sp::stopping, sp::restarting}, {sp::stopping, sp::quarantined},
      {sp::quarantined, sp::done},
  };
  for (auto from : all)
    for (auto to : all)
      EXPECT_EQ(can_enter(from, to), made.count({from, to}) == 1) << to_string(from) << " -> " << to_string(to);
}

TEST(slot_phase, done_is_for_good_and_reachable_from_everywhere) {
  for (auto p : all) {
    if (p == sp::done) {
      EXPECT_TRUE(reachable(p).empty());
      continue;
    }
    EXPECT_TRUE(reachable(p).count(sp::done)) << to_string(p);
    EXPECT_TRUE(can_enter(p, sp::done)) << to_string(p) << " must be able to stop at once";
  }
}

TEST(slot_phase, nothing_goes_back_to_idle_and_quarantine_only_ends) {
  for (auto p : all) EXPECT_FALSE(can_enter(p, sp::idle)) << to_string(p);
  EXPECT_EQ(reachable(sp::quarantined), std::set<sp>{sp::done});
  // A running instance never becomes a fresh spawn without a failure in between.
  EXPECT_FALSE(can_enter(sp::running, sp::spawning));
  EXPECT_TRUE(reachable(sp::running).count(sp::spawning));  // through restarting
}

TEST(slot_phase, names) {
  std::set<std::string> names;
  for (auto p : all) names.insert(to_string(p));
  EXPECT_EQ(names.size(), all.size());
  EXPECT_EQ(std::string(to_string(sp::restarting)), "restarting");
}
