#include "../test_util.hpp"

#include <troupe/catalog.hpp>
#include <troupe/pipeline.hpp>

using namespace troupe;
using ::testing::HasSubstr;
using troupe::test::temp_dir;

namespace {

// A catalog of fake manifests: planning needs manifests, not libraries.
struct fixture {
  temp_dir plugins;
  temp_dir files;
  catalog cat;
  fixture() {
    plugins.write("src/plugin.yaml",
                  "name: src\nversion: 1.0.0\nabi: 1\ncapabilities: [source]\n"
                  "config:\n  count: {type: int, default: 10, min: 1}\n");
    plugins.write("filt/plugin.yaml",
                  "name: filt\nversion: 1.0.0\nabi: 1\ncapabilities: [filter]\n"
                  "resources: {memory_mb: 256, cpu_cores: 2, processes: 64}\n");
    plugins.write("sink/plugin.yaml", "name: sink\nversion: 1.0.0\nabi: 1\ncapabilities: [sink]\n");
    plugins.write("needy/plugin.yaml",
                  "name: needy\nversion: 1.0.0\nabi: 1\n"
                  "dependencies: [{name: helper, version: \"^2.0\"}]\n");
    plugins.write("helper/plugin.yaml", "name: helper\nversion: 1.5.0\nabi: 1\n");
    plugins.write("strict/plugin.yaml",
                  "name: strict\nversion: 1.0.0\nabi: 1\ncapabilities: [filter]\nenforce: strict\n"
                  "resources: {memory_mb: 64}\n");
    cat = catalog::discover({plugins.path().string()});
  }
  expected<plan> make(const std::string& yaml, std::string* path_out = nullptr) {
    auto path = files.write("pipeline.yaml", yaml);
    if (path_out) *path_out = path;
    auto spec = load_pipeline(path);
    if (!spec) return spec.error();
    return plan_pipeline(*spec, cat);
  }
};

std::vector<std::string> order(const plan& p) {
  std::vector<std::string> names;
  for (auto i : p.start_order) names.push_back(p.stages[i].spec.name);
  return names;
}

}  // namespace

TEST(pipeline, starts_consumers_before_producers) {
  fixture f;
  auto p = f.make(R"(pipeline: t
window: 4
stages:
  - {name: a, plugin: src, config: {count: 3}}
  - {name: b, plugin: filt, replicas: 2, routing: by_stream}
  - {name: c, plugin: filt}
  - {name: d, plugin: sink}
edges:
  - a -> b -> d
  - a -> c -> d
)");
  ASSERT_OK(p);
  EXPECT_EQ(p->window, 4u);
  EXPECT_EQ(p->window_bytes, default_window_bytes);
  auto o = order(*p);
  auto pos = [&](const std::string& n) { return std::find(o.begin(), o.end(), n) - o.begin(); };
  EXPECT_LT(pos("d"), pos("b"));
  EXPECT_LT(pos("d"), pos("c"));
  EXPECT_LT(pos("b"), pos("a"));
  EXPECT_LT(pos("c"), pos("a"));
  EXPECT_EQ(p->stages[1].spec.replicas, 2u);
  EXPECT_EQ(p->stages[1].spec.routing, route_policy::by_stream);
  EXPECT_EQ(p->stages[0].config, (config_values{{"count", "3"}}));
}

TEST(pipeline, cycle_is_named) {
  fixture f;
  auto p = f.make(R"(stages:
  - {name: a, plugin: src}
  - {name: b, plugin: filt}
  - {name: c, plugin: filt}
edges: ["a -> b", "b -> c", "c -> b"]
)");
  ASSERT_FALSE(p);
  auto text = describe(p.error());
  EXPECT_THAT(text, HasSubstr("cycle"));
  EXPECT_THAT(text, HasSubstr("'b' (plugin filt)"));
  EXPECT_THAT(text, HasSubstr("'c' (plugin filt)"));
}

TEST(pipeline, manifest_dependency_orders_and_missing_dependency_is_named) {
  fixture f;
  auto ok = f.make(R"(stages:
  - {name: s, plugin: src}
  - {name: n, plugin: needy}
  - {name: h, plugin: helper}
  - {name: k, plugin: sink}
edges: ["s -> n -> k", "s -> h -> k"]
)");
  // helper 1.5.0 is outside ^2.0: the dependency is missing.
  ASSERT_FALSE(ok);
  auto text = describe(ok.error());
  EXPECT_THAT(text, HasSubstr("plugin 'needy' depends on plugin 'helper' ^2.0"));
  EXPECT_THAT(text, HasSubstr("stage 'h' runs version 1.5.0"));

  fixture g;
  g.plugins.write("needy/plugin.yaml",
                  "name: needy\nversion: 1.0.0\nabi: 1\n"
                  "dependencies: [{name: helper, version: \">=1.0 <2.0\"}]\n");
  g.cat = catalog::discover({g.plugins.path().string()});
  auto p = g.make(R"(stages:
  - {name: s, plugin: src}
  - {name: n, plugin: needy}
  - {name: h, plugin: helper}
  - {name: k, plugin: sink}
edges: ["s -> n -> k", "s -> h -> k"]
)");
  ASSERT_OK(p);
  auto o = order(*p);
  EXPECT_LT(std::find(o.begin(), o.end(), "h"), std::find(o.begin(), o.end(), "n"));
}

// An operator may hold a stage to less than its plugin's manifest grants, never more.
TEST(pipeline, a_stage_may_tighten_its_plugin_s_resources_only) {
  fixture f;
  auto stages = [](const std::string& resources) {
    return "stages:\n  - {name: a, plugin: src}\n  - {name: b, plugin: filt, mode: isolated,\n     resources: " +
           resources + "}\nedges: [\"a -> b\"]\n";
  };
  auto p = f.make(stages("{memory_mb: 128, cpu_cores: 0.5, open_files: 32}"));
  ASSERT_OK(p);
  const auto& r = p->stages[1].manifest.resources;
  EXPECT_EQ(r.memory_mb, 128u);
  EXPECT_DOUBLE_EQ(r.cpu_cores, 0.5);
  EXPECT_EQ(r.open_files, 32u);  // the plugin set none: any limit is tighter
  EXPECT_EQ(r.processes, 64u);   // the plugin's, untouched
  EXPECT_EQ(p->stages[0].manifest.resources.memory_mb, 0u);
  // Where it may read and write is the deployment's to say: a stage's paths add to the plugin's
  // (relative ones are the working directory's).
  auto fs = f.make(stages("{filesystem: {read: [/srv/in], write: [out]}}"));
  ASSERT_OK(fs);
  EXPECT_EQ(fs->stages[1].manifest.resources.fs_read, std::vector<std::string>{"/srv/in"});
  EXPECT_EQ(fs->stages[1].manifest.resources.fs_write,
            std::vector<std::string>{(std::filesystem::current_path() / "out").string()});
  struct {
    std::string resources;
    const char* expect;
  } cases[] = {
      {"{memory_mb: 512}", "resources.memory_mb 512 is above the plugin's limit of 256"},
      {"{cpu_cores: 0}", "resources.cpu_cores 0 (no limit) would lift the plugin's limit of 2"},
      {"{network: true}", "resources.network true would grant what the plugin's manifest does not"},
      {"{cpu_cores: .nan}", "'resources.cpu_cores': expected a number of cores (a finite number)"},
      {"{deadline_ms: 5}", "unknown field 'deadline_ms'"},
      {"[1, 2]", "field 'resources': expected a map"},
  };
  for (auto& c : cases) {
    std::string path;
    auto bad = f.make(stages(c.resources), &path);
    ASSERT_FALSE(bad) << c.resources;
    EXPECT_THAT(describe(bad.error()), HasSubstr(c.expect)) << c.resources;
    EXPECT_THAT(describe(bad.error()), HasSubstr(path + ":")) << c.resources;
  }
  // In the node's own process nothing could hold a stage to them.
  auto embedded = f.make(
      "stages:\n  - {name: a, plugin: src}\n  - {name: b, plugin: filt, resources: {memory_mb: 64}}\n"
      "edges: [\"a -> b\"]\n");
  ASSERT_FALSE(embedded);
  EXPECT_THAT(describe(embedded.error()),
              HasSubstr(":3: stage 'b': runs embedded, in the node's process, where resources are not enforced"));
}

// `enforce: strict` (a stage's, or its manifest's) runs a stage isolated, where its resources
// are enforced; asking for embedded then is refused, and a stage cannot loosen its manifest's.
TEST(pipeline, enforce_strict_runs_a_stage_isolated_only) {
  fixture f;
  auto p = f.make(
      "stages:\n  - {name: a, plugin: src}\n  - {name: b, plugin: filt, enforce: strict}\n"
      "  - {name: c, plugin: strict}\n  - {name: d, plugin: filt}\n  - {name: e, plugin: sink}\n"
      "edges: [\"a -> b -> c -> d -> e\"]\n");
  ASSERT_OK(p);
  EXPECT_EQ(p->find("b")->mode, exec_mode::isolated);  // the stage's
  EXPECT_EQ(p->find("c")->mode, exec_mode::isolated);  // its manifest's
  EXPECT_EQ(p->find("d")->mode, exec_mode::embedded);  // the default
  std::string path;
  auto bad = f.make(
      "stages:\n  - {name: a, plugin: src}\n  - {name: b, plugin: filt, enforce: strict, mode: embedded}\n"
      "edges: [\"a -> b\"]\n",
      &path);
  ASSERT_FALSE(bad);
  EXPECT_THAT(describe(bad.error()),
              HasSubstr(path + ":3: stage 'b': mode embedded, but its resources must be enforced (enforce: strict): it "
                               "runs isolated only"));
  bad = f.make(
      "stages:\n  - {name: a, plugin: src}\n  - {name: c, plugin: strict, mode: embedded}\n"
      "edges: [\"a -> c\"]\n");
  ASSERT_FALSE(bad);
  EXPECT_THAT(describe(bad.error()),
              HasSubstr("stage 'c': mode embedded, but its resources must be enforced (enforce: "
                        "strict in " +
                        (f.plugins.path() / "strict" / "plugin.yaml").string() + "): it runs isolated only"));
  bad = f.make(
      "stages:\n  - {name: a, plugin: src}\n  - {name: c, plugin: strict, enforce: declared}\n"
      "edges: [\"a -> c\"]\n");
  ASSERT_FALSE(bad);
  EXPECT_THAT(describe(bad.error()), HasSubstr("stage 'c': enforce declared, but its plugin's manifest says enforce: "
                                               "strict"));
  bad = f.make(
      "stages:\n  - {name: a, plugin: src}\n  - {name: b, plugin: filt, enforce: always}\n"
      "edges: [\"a -> b\"]\n");
  ASSERT_FALSE(bad);
  EXPECT_THAT(describe(bad.error()),
              HasSubstr("stage 'b': field 'enforce': expected strict or declared, got 'always'"));
  // A manifest cannot both ask for strict and embedded.
  auto m = f.plugins.write("both/plugin.yaml", "name: both\nversion: 1.0.0\nabi: 1\nmode: embedded\nenforce: strict\n");
  auto loaded = load_manifest(m);
  ASSERT_FALSE(loaded);
  EXPECT_THAT(describe(loaded.error()),
              HasSubstr("plugin.yaml:5: field 'enforce': strict runs the plugin isolated only, but field 'mode' says "
                        "embedded"));
}

TEST(pipeline, errors_name_file_line_and_field) {
  fixture f;
  struct {
    const char* yaml;
    int line;
    const char* expect;
  } cases[] = {
      {"stages:\n  - {name: a, plugin: src, replicas: 0}\n", 2, "'replicas': expected 1 to 1024"},
      {"stages:\n  - {name: a, plugin: src, colour: red}\n", 2, "unknown field 'colour'"},
      {"stages:\n  - {name: a, plugin: nope}\n", 2, "plugin 'nope' not found"},
      {"stages:\n  - {name: a, plugin: src}\n  - {name: a, plugin: sink}\n", 3, "used twice"},
      {"stages:\n  - {name: a, plugin: src}\nedges: [\"a -> zz\"]\n", 3, "no stage named 'zz'"},
      {"stages:\n  - {name: a, plugin: src}\n  - {name: blur, plugin: filt}\nedges: [\"a -> bulr\"]\n", 4,
       "no stage named 'bulr'; did you mean 'blur'?"},
      {"stages:\n  - {name: a, plugin: scr}\n", 2, "plugin 'scr' not found on the search paths ("},
      {"stages:\n  - {name: a, plugin: scr}\n", 2, "; did you mean 'src'?"},
      {"stages:\n  - {name: a, plugin: src,\n     config: {count: 0}}\n", 3,
       "config field 'count' (int) of plugin 'src': 0 is below the minimum 1"},
      {"stages:\n  - {name: a, plugin: filt}\n", 2, "is not a source"},
      {"stages:\n  - {name: a, plugin: src, routing: random}\n", 2, "expected round_robin, least_loaded or by_stream"},
      {"stages:\n  - {name: a, plugin: src}\nrestart: {max_restarts: -1}\n", 3, "restart.max_restarts"},
      {"stages:\n  - {name: a, plugin: src}\nedges: [\"a - b\"]\n", 3, "expected \"from -> to\""},
      {"stages:\n  - {name: a, plugin: src}\nwindow_bytes: 64MB\n", 3, "'window_bytes': expected a positive size"},
      {"stages:\n  - {name: a, plugin: src}\nwindow_bytes: 0\n", 3, "'window_bytes': expected a positive size"},
      {"stages:\n  - {name: a, plugin: src}\nwindow_bytes: 999999999999GiB\n", 3,
       "'window_bytes': expected a positive size"},
      {"stages:\n  - {name: a, plugin: src}\nrestart: {period_s: .nan}\n", 3,
       "'restart.period_s': expected a number of seconds (a finite number), got '.nan'"},
      {"stages:\n  - {name: a, plugin: src}\nrestart: {stable_after_s: .inf}\n", 3, "(a finite number), got '.inf'"},
      {"stages:\n  - {name: a, plugin: src}\nrestart: {max_restarts: 99999999999}\n", 3,
       "restart.max_restarts': expected a non-negative integer"},
      {"window: 4\nstages:\n  - {name: a, plugin: src}\nwindow: 8\n", 4,
       "field 'window' is given twice (first at line 1)"},
      {"stages:\n  - {name: a, plugin: src, name: b}\n", 2, "field 'name' is given twice"},
      {"priority: 5000\nstages:\n  - {name: a, plugin: src}\n", 1,
       "field 'priority': expected an integer from -1000 to 1000"},
      {"priority: high\nstages:\n  - {name: a, plugin: src}\n", 1, "field 'priority': expected an integer"},
  };
  for (auto& c : cases) {
    std::string path;
    auto p = f.make(c.yaml, &path);
    ASSERT_FALSE(p) << c.yaml;
    auto text = describe(p.error());
    EXPECT_THAT(text, HasSubstr(path + ":" + std::to_string(c.line))) << c.yaml;
    EXPECT_THAT(text, HasSubstr(c.expect)) << c.yaml;
  }
  auto sized = f.make("window_bytes: 512KiB\nstages:\n  - {name: a, plugin: src}\n");
  ASSERT_OK(sized);
  EXPECT_EQ(sized->window, default_window);
  EXPECT_EQ(sized->window_bytes, 512u << 10);
  auto missing = f.make("window: 3\n");
  ASSERT_FALSE(missing);
  EXPECT_THAT(describe(missing.error()), HasSubstr("field 'stages'"));
}

TEST(pipeline, placement_fields_are_read_and_checked) {
  fixture f;
  auto path = f.files.write("placed.yaml",
                            "stages:\n"
                            "  - {name: a, plugin: src}\n"
                            "  - {name: b, plugin: filt, node: n2}\n"
                            "  - {name: c, plugin: filt, nodes: [n3, n2]}\n"
                            "  - {name: d, plugin: sink, node: any}\n"
                            "edges: [\"a -> b -> c -> d\"]\n");
  auto spec = load_pipeline(path);
  ASSERT_OK(spec);
  EXPECT_TRUE(spec->stages[0].nodes.empty());
  EXPECT_EQ(spec->stages[1].nodes, std::vector<std::string>{"n2"});
  EXPECT_EQ(spec->stages[2].nodes, (std::vector<std::string>{"n3", "n2"}));
  EXPECT_EQ(spec->stages[3].nodes, std::vector<std::string>{"*"});
  for (auto [yaml, want] :
       {std::pair{"stages:\n  - {plugin: src, node: n1, nodes: [n2]}\n", "give either 'node' or 'nodes', not both"},
        std::pair{"stages:\n  - {plugin: src, nodes: []}\n",
                  "field 'nodes': expected a list of node names, in order of preference"},
        std::pair{"stages:\n  - {plugin: src, nodes: [n1, any]}\n", "for any node, write node: any"}}) {
    auto bad = load_pipeline(f.files.write("bad.yaml", yaml));
    ASSERT_FALSE(bad) << yaml;
    EXPECT_THAT(describe(bad.error()), HasSubstr(want));
  }
}

TEST(pipeline, a_stage_placed_elsewhere_is_named_but_not_resolved_here) {
  fixture f;
  // 'ghost' is no plugin this node has: the node it is placed on checks it.
  auto path = f.files.write("placed.yaml",
                            "stages:\n"
                            "  - {name: a, plugin: src}\n"
                            "  - {name: b, plugin: ghost, config: {anything: 1}, node: n2}\n"
                            "  - {name: c, plugin: sink}\n"
                            "edges: [\"a -> b -> c\"]\n");
  auto spec = load_pipeline(path);
  ASSERT_OK(spec);
  placement where{"n1", {{"a", {"n1"}}, {"b", {"n2"}}, {"c", {"n1"}}}};
  auto p = plan_pipeline(*spec, f.cat, &where);
  ASSERT_OK(p);
  EXPECT_FALSE(p->stages[0].remote);
  EXPECT_TRUE(p->stages[1].remote);
  EXPECT_EQ(p->stages[1].nodes, std::vector<std::string>{"n2"});
  EXPECT_EQ(p->stages[1].elsewhere, std::vector<std::string>{"n2"});
  EXPECT_EQ(p->stages[1].manifest.name, "ghost");
  EXPECT_EQ(order(*p), (std::vector<std::string>{"c", "b", "a"}));
  // Seen from n2, the same stage is resolved there: not found.
  placement there{"n2", where.nodes_of};
  auto q = plan_pipeline(*spec, f.cat, &there);
  ASSERT_FALSE(q);
  EXPECT_THAT(describe(q.error()), HasSubstr("stage 'b'"));
  EXPECT_THAT(describe(q.error()), HasSubstr("ghost"));
  // A stage on two nodes runs here too, and is sent to the other.
  placement spread{"n1", {{"a", {"n1"}}, {"b", {"n1", "n3"}}, {"c", {"n1"}}}};
  auto spec2 = load_pipeline(f.files.write("spread.yaml",
                                           "stages:\n  - {name: a, plugin: src}\n"
                                           "  - {name: b, plugin: filt, nodes: [n1, n3]}\n"
                                           "  - {name: c, plugin: sink}\nedges: [\"a -> b -> c\"]\n"));
  ASSERT_OK(spec2);
  auto r = plan_pipeline(*spec2, f.cat, &spread);
  ASSERT_OK(r);
  EXPECT_FALSE(r->stages[1].remote);
  EXPECT_EQ(r->stages[1].elsewhere, std::vector<std::string>{"n3"});
  EXPECT_EQ(r->stages[1].manifest.name, "filt");
}

TEST(pipeline, a_chain_of_50000_stages_is_ordered_without_recursion) {
  fixture f;
  constexpr int n = 50000;  // the recursive sort this replaced overflowed the stack at 30,000
  auto name = [](int i) {   // short names, so that the file stays under the 4 MiB limit
    std::string s;
    do s.insert(s.begin(), "0123456789abcdefghijklmnopqrstuvwxyz"[i % 36]);
    while ((i /= 36) > 0);
    return "s" + s;
  };
  std::string yaml = "stages:\n", edges = "edges: [\"" + name(0);
  for (int i = 0; i < n; ++i) {
    yaml += "- {name: " + name(i) + ", plugin: " + (i == 0 ? "src" : i + 1 == n ? "sink" : "filt") + "}\n";
    if (i > 0) edges += "->" + name(i);
  }
  auto p = f.make(yaml + edges + "\"]\n");
  ASSERT_OK(p);
  ASSERT_EQ(p->start_order.size(), size_t(n));
  EXPECT_EQ(p->stages[p->start_order.front()].spec.name, name(n - 1));  // the sink first
  EXPECT_EQ(p->stages[p->start_order.back()].spec.name, name(0));
}

TEST(pipeline, a_file_over_4_mib_is_refused_before_it_is_parsed) {
  fixture f;
  std::string yaml = "stages:\n  - {name: a, plugin: src}\n# " + std::string(5 << 20, 'x') + "\n";
  std::string path;
  auto p = f.make(yaml, &path);
  ASSERT_FALSE(p);
  EXPECT_THAT(describe(p.error()), HasSubstr(path + ": the file is over 4 MiB"));
}

// Edges are typed by what manifests declare: a type that cannot meet, or metadata a stage
// needs and its producer does not give, is refused before anything starts, naming the edge,
// both stages and both sides. What a manifest does not declare is not checked.
TEST(pipeline, an_edge_whose_types_or_metadata_do_not_meet_is_refused) {
  temp_dir plugins, files;
  auto head = [](const std::string& name) { return "name: " + name + "\nversion: 1.0.0\nabi: 1\n"; };
  plugins.write("rgbsrc/plugin.yaml",
                head("rgbsrc") + "capabilities: [source]\noutputs: {types: [video/rgb24], gives: [width, height]}\n");
  plugins.write("bare/plugin.yaml",
                head("bare") + "capabilities: [source]\noutputs: {types: [video/rgb24], gives: []}\n");
  plugins.write("plain/plugin.yaml", head("plain") + "capabilities: [source]\noutputs: {types: [video/rgb24]}\n");
  plugins.write("raw/plugin.yaml",
                head("raw") + "capabilities: [source]\noutputs: {types: [application/octet-stream], gives: []}\n");
  plugins.write("conv/plugin.yaml", head("conv") +
                                        "capabilities: [filter]\n"
                                        "config:\n  format: {type: enum, values: [rgb24, gray8], default: rgb24}\n"
                                        "inputs: {types: [video/rgb24, video/gray8], needs: [width, height]}\n"
                                        "outputs: {types: [\"video/{format}\"], gives: [format]}\n");
  plugins.write("blur/plugin.yaml", head("blur") +
                                        "capabilities: [filter]\n"
                                        "inputs: {types: [video/rgb24], needs: [width, height]}\n"
                                        "outputs: {types: [same], gives: []}\n");
  plugins.write("anyf/plugin.yaml", head("anyf") + "capabilities: [filter]\n");
  plugins.write("sink/plugin.yaml", head("sink") + "capabilities: [sink]\n");
  auto cat = catalog::discover({plugins.path().string()});
  auto make = [&](const std::string& source, const std::string& middle) {
    auto path = files.write("p.yaml", "pipeline: t\nstages:\n  - {name: a, plugin: " + source +
                                          "}\n  - {name: m, plugin: " + middle +
                                          "}\n  - {name: b, plugin: blur}\n  - {name: z, plugin: sink}\n"
                                          "edges:\n  - a -> m\n  - m -> b\n  - b -> z\n");
    auto spec = load_pipeline(path);
    if (!spec) return expected<plan>(spec.error());
    return plan_pipeline(*spec, cat);
  };
  auto error_of = [&](const std::string& source, const std::string& middle) {
    auto p = make(source, middle);
    return p ? std::string("accepted") : describe(p.error());
  };
  auto gray = error_of("rgbsrc", "conv, config: {format: gray8}");
  EXPECT_THAT(gray, HasSubstr("p.yaml:9: edge 'm -> b': stage 'm' (plugin conv) gives video/gray8, but stage 'b' "
                              "(plugin blur) takes video/rgb24 ("));
  auto p = make("rgbsrc", "conv, config: {format: rgb24}");
  ASSERT_OK(p);
  EXPECT_EQ(p->find("b")->gives, std::vector<std::string>{"video/rgb24"});  // same: what came in
  EXPECT_EQ(p->find("z")->gives, std::nullopt);                             // not declared: any
  EXPECT_THAT(error_of("raw", "blur"),
              HasSubstr("edge 'a -> m': stage 'a' (plugin raw) gives "
                        "application/octet-stream, but stage 'm' (plugin blur) takes video/rgb24"));
  EXPECT_THAT(error_of("bare", "blur"), HasSubstr("edge 'a -> m': stage 'm' (plugin blur) needs metadata 'width', "
                                                  "which stage 'a' (plugin bare) does not give"));
  // Keys pass through: blur gives none of its own, but its input's width and height go on.
  EXPECT_EQ(error_of("rgbsrc", "blur"), "accepted");
  EXPECT_EQ(error_of("plain", "blur"), "accepted");  // keys not declared: not checked
  EXPECT_EQ(error_of("raw", "anyf"), "accepted");    // a stage that declares nothing may give anything
  auto spec = load_pipeline(files.write("q.yaml", R"(pipeline: q
stages:
  - {name: a, plugin: rgbsrc}
  - {name: g, plugin: conv, config: {format: gray8}}
  - {name: b, plugin: blur}
  - {name: z, plugin: sink}
edges:
  - a -> b
  - a -> g
  - g -> z
  - b -> z
)"));
  ASSERT_OK(spec);
  auto q = plan_pipeline(*spec, cat);
  ASSERT_OK(q);
  EXPECT_EQ(q->find("g")->gives, std::vector<std::string>{"video/gray8"});
}

// Across nodes each node knows only its own stages; the node deployed to checks the edges
// between them from what each node found.
TEST(pipeline, edges_between_stages_on_different_nodes_are_checked_from_their_nodes_parts) {
  temp_dir files;
  auto spec = load_pipeline(files.write("p.yaml", R"(pipeline: p
stages:
  - {name: a, plugin: conv}
  - {name: b, plugin: blur}
  - {name: c, plugin: sink}
edges: ["a -> b -> c"]
)"));
  ASSERT_OK(spec);
  media_side rgb_in{true, {"video/rgb24"}, {"width"}, false};
  media_side conv_out{true, {"video/{format}"}, {}, true};
  std::map<std::string, stage_types> types = {
      {"a", {"n2", "conv", "/p/conv/plugin.yaml", {}, conv_out, {{"format", "gray8"}}}},
      {"b", {"n3", "blur", "/p/blur/plugin.yaml", rgb_in, {true, {"same"}, {}, true}, {}}}};
  auto err = check_placed_edges(*spec, types);
  EXPECT_THAT(describe(err),
              HasSubstr("p.yaml:6: edge 'a -> b': stage 'a' (plugin conv on node n2) gives video/gray8, "
                        "but stage 'b' (plugin blur on node n3) takes video/rgb24 (/p/blur/plugin.yaml)"));
  types["a"].config = {{"format", "rgb24"}};
  // Types meet now; conv gives no width, and a source passes nothing on: refused again.
  EXPECT_THAT(describe(check_placed_edges(*spec, types)), HasSubstr("needs metadata 'width'"));
  types["a"].outputs.keys = {"width"};
  EXPECT_FALSE(check_placed_edges(*spec, types));
  types.erase("a");  // a stage no node reported: not checked
  EXPECT_FALSE(check_placed_edges(*spec, types));
}
