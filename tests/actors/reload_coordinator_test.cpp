// Reloading a stage without actors: what the next version is, and the order reloads take.
#include "../test_util.hpp"
#include "pipeline_runner.hpp"

#include <troupe/reload_coordinator.hpp>

#include <fstream>
#include <sstream>

using namespace troupe;
using ::testing::HasSubstr;
using troupe::test::plugin_dir;
using troupe::test::temp_dir;

namespace {

// testsrc -> mark (watermark, text "a") -> sink, from the built plugins.
std::shared_ptr<const plan> pipeline(const temp_dir& dir, const std::string& mark_resources = "") {
  auto p = test::plan_yaml(dir,
                           "pipeline: marks\n"
                           "stages:\n"
                           "  - {name: src, plugin: testsrc, config: {count: 1}}\n"
                           "  - {name: mark, plugin: watermark, config: {text: a}" +
                               mark_resources +
                               "}\n"
                               "  - {name: sink, plugin: checksum, config: {output: \"{dir}/sum.txt\"}}\n"
                               "edges: [\"src -> mark -> sink\"]\n");
  EXPECT_TRUE(p) << describe(p.error());
  return p ? *p : nullptr;
}

// The built watermark's manifest with its version, and its memory limit, changed.
std::string watermark_at(const temp_dir& dir, const std::string& version, const std::string& memory_mb = "512") {
  std::ifstream in(plugin_dir() + "/watermark/plugin.yaml");
  std::stringstream text;
  text << in.rdbuf();
  auto yaml = text.str();
  auto swap = [&](const std::string& from, const std::string& to) {
    auto at = yaml.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) yaml.replace(at, from.size(), to);
  };
  swap("version: 1.0.0", "version: " + version);
  swap("memory_mb: 512", "memory_mb: " + memory_mb);
  return dir.write("next/watermark/plugin.yaml", yaml);
}

size_t mark_stage(const plan& p) { return static_cast<size_t>(p.find("mark") - p.stages.data()); }

std::string config_value(const planned_stage& s, const std::string& key) {
  for (auto& [k, v] : s.config)
    if (k == key) return v;
  return "(none)";
}

}  // namespace

TEST(reload, next_version_lays_the_changes_over_the_stage_s_config_and_reads_the_new_manifest) {
  temp_dir dir;
  auto p = pipeline(dir);
  ASSERT_TRUE(p);
  const auto stage = mark_stage(*p);
  reload_request req{"mark", watermark_at(dir, "1.1.0"), {{"opacity", "0.9"}}};
  auto next = next_version(*p, stage, req);
  ASSERT_OK(next);
  auto& ns = (*next)->stages[stage];
  EXPECT_EQ(ns.manifest.version.to_string(), "1.1.0");
  EXPECT_EQ(ns.manifest.path, req.manifest);
  EXPECT_EQ(config_value(ns, "text"), "a");  // kept from the pipeline file
  EXPECT_EQ(config_value(ns, "opacity"), "0.9");
  EXPECT_EQ(config_value(ns, "x"), "16");  // the schema's default
  ASSERT_EQ(ns.spec.config.size(), 2u);    // what the next reload starts from
  // The running plan is untouched, and the other stages are as they were.
  EXPECT_EQ(p->stages[stage].manifest.version.to_string(), "1.0.0");
  EXPECT_EQ(config_value(p->stages[stage], "opacity"), "0.5");
  EXPECT_EQ((*next)->stages[0].spec.name, p->stages[0].spec.name);
  EXPECT_EQ((*next)->start_order, p->start_order);
}

TEST(reload, next_version_without_a_manifest_reads_the_stage_s_own_again) {
  temp_dir dir;
  auto p = pipeline(dir);
  ASSERT_TRUE(p);
  auto next = next_version(*p, mark_stage(*p), reload_request{"mark", "", {{"text", "b"}}});
  ASSERT_OK(next);
  auto& ns = (*next)->stages[mark_stage(*p)];
  EXPECT_EQ(ns.manifest.path, p->stages[mark_stage(*p)].manifest.path);
  EXPECT_EQ(config_value(ns, "text"), "b");
}

TEST(reload, next_version_refuses_another_plugin_a_bad_config_and_looser_resources) {
  temp_dir dir;
  auto p = pipeline(dir, ", mode: isolated, resources: {memory_mb: 256}");
  ASSERT_TRUE(p);
  const auto stage = mark_stage(*p);

  auto other = next_version(*p, stage, reload_request{"mark", plugin_dir() + "/passthrough/plugin.yaml", {}});
  ASSERT_FALSE(other);
  EXPECT_EQ(code_of(other.error()), errc::refused);
  EXPECT_THAT(describe(other.error()), HasSubstr("is plugin 'passthrough', the stage runs 'watermark'"));

  auto bad = next_version(*p, stage, reload_request{"mark", "", {{"opacity", "2"}}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(code_of(bad.error()), errc::invalid_config);
  EXPECT_THAT(describe(bad.error()), HasSubstr("reload of stage 'mark'"));
  EXPECT_THAT(describe(bad.error()), HasSubstr("'opacity'"));

  auto unknown = next_version(*p, stage, reload_request{"mark", "", {{"colour", "red"}}});
  ASSERT_FALSE(unknown);
  EXPECT_THAT(describe(unknown.error()), HasSubstr("config field 'colour' is not in the schema"));

  // The stage asks for 256 MiB; a version whose plugin allows only 128 is refused.
  auto tight = next_version(*p, stage, reload_request{"mark", watermark_at(dir, "1.2.0", "128"), {}});
  ASSERT_FALSE(tight);
  EXPECT_EQ(code_of(tight.error()), errc::invalid_config);
  EXPECT_THAT(describe(tight.error()), HasSubstr("resources.memory_mb 256 is above the plugin's limit of 128"));

  auto missing = next_version(*p, stage, reload_request{"mark", dir.path().string() + "/none/plugin.yaml", {}});
  ASSERT_FALSE(missing);
  EXPECT_THAT(describe(missing.error()), HasSubstr("none/plugin.yaml"));
}

TEST(reload, one_runs_at_a_time_and_the_waiting_start_in_the_order_they_came) {
  reload_coordinator c;
  EXPECT_FALSE(c.under_way());
  EXPECT_FALSE(c.next());  // nothing waits

  reload_coordinator::reload r;
  r.stage = 1;
  r.old = {1, 2};
  r.incoming = {5, 6};
  c.begin(r);
  ASSERT_TRUE(c.under_way());
  c.wait({"b", "", {}}, {});
  c.wait({"c", "", {}}, {});
  EXPECT_EQ(c.waiting_count(), 2u);
  EXPECT_FALSE(c.next());  // not while one is under way

  // It serves once every incoming slot runs.
  std::set<size_t> running = {5};
  auto runs = [&](size_t i) { return running.count(i) > 0; };
  EXPECT_FALSE(c.serves(runs));
  running.insert(6);
  EXPECT_TRUE(c.serves(runs));

  auto done = c.end();
  EXPECT_EQ(done.stage, 1u);
  EXPECT_EQ(done.old, (std::vector<size_t>{1, 2}));
  EXPECT_FALSE(c.under_way());
  EXPECT_FALSE(c.serves(runs));  // none under way

  auto first = c.next();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->request.stage, "b");
  auto second = c.next();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->request.stage, "c");
  EXPECT_FALSE(c.next());
}

TEST(reload, a_stopping_pipeline_takes_every_waiting_request) {
  reload_coordinator c;
  c.begin({});
  c.wait({"b", "", {}}, {});
  c.wait({"c", "", {}}, {});
  auto waiting = c.take_waiting();
  ASSERT_EQ(waiting.size(), 2u);
  EXPECT_EQ(waiting[0].request.stage, "b");
  EXPECT_EQ(waiting[1].request.stage, "c");
  EXPECT_EQ(c.waiting_count(), 0u);
  EXPECT_TRUE(c.under_way());  // ended on its own: the manager aborts it
}
