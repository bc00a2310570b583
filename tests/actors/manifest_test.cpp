#include "../test_util.hpp"

#include <troupe/catalog.hpp>
#include <troupe/embedded_adapter.hpp>
#include <troupe/frame.hpp>
#include <troupe/manifest.hpp>
#include <troupe/plugin_library.hpp>

#include <cstring>

using namespace troupe;
using ::testing::HasSubstr;
using ::testing::Not;
using troupe::test::temp_dir;

namespace {

const char* good_manifest = R"(name: demo
version: 1.2.3
abi: 1
description: A demo.
capabilities: [filter]
dependencies:
  - {name: base, version: ">=1.0.0 <2.0.0"}
config:
  radius: {type: int, default: 2, min: 0, max: 32}
  gain: {type: float, default: 0.5, min: 0, max: 1}
  label: {type: string, default: hello, path: write}
  on: {type: bool, default: true}
  shape: {type: enum, values: [box, disc], default: box}
mode: isolated
resources: {memory_mb: 128, deadline_ms: 250, network: false, processes: 16, gpus: 1,
            filesystem: {read: [models, /srv/shared], write: [/var/cache/demo]}}
)";

}  // namespace

TEST(manifest, reads_every_field) {
  temp_dir d;
  auto m = load_manifest(d.write("demo/plugin.yaml", good_manifest));
  ASSERT_OK(m);
  EXPECT_EQ(m->name, "demo");
  EXPECT_EQ(m->version.to_string(), "1.2.3");
  EXPECT_EQ(m->mode, exec_mode::isolated);
  EXPECT_EQ(m->resources.memory_mb, 128u);
  EXPECT_EQ(m->resources.deadline_ms, 250u);
  EXPECT_EQ(m->resources.processes, 16u);
  EXPECT_EQ(m->resources.gpus, 1u);
  // Relative paths are the plugin folder's.
  EXPECT_EQ(m->resources.fs_read, (std::vector<std::string>{(d.path() / "demo" / "models").string(), "/srv/shared"}));
  EXPECT_EQ(m->resources.fs_write, std::vector<std::string>{"/var/cache/demo"});
  ASSERT_EQ(m->config.size(), 5u);
  EXPECT_EQ(m->config[2].path, config_field::path_access::write);
  EXPECT_EQ(m->config[0].path, config_field::path_access::none);
  EXPECT_EQ(m->config[4].values, (std::vector<std::string>{"box", "disc"}));
  ASSERT_EQ(m->dependencies.size(), 1u);
  EXPECT_TRUE(m->dependencies[0].range.contains(*version::parse("1.9.0")));
  EXPECT_FALSE(m->dependencies[0].range.contains(*version::parse("2.0.0")));
  EXPECT_EQ(m->library, (d.path() / "demo" / "libtroupe_demo.so").string());
}

TEST(manifest, unknown_field_type_names_file_line_and_field) {
  temp_dir d;
  auto path =
      d.write("p/plugin.yaml", "name: x\nversion: 1.0.0\nabi: 1\nconfig:\n  size: {type: integr, default: 1}\n");
  auto m = load_manifest(path);
  ASSERT_FALSE(m);
  auto text = describe(m.error());
  EXPECT_THAT(text, HasSubstr(path + ":5"));
  EXPECT_THAT(text, HasSubstr("config field 'size'"));
  EXPECT_THAT(text, HasSubstr("unknown type 'integr'"));
}

TEST(manifest, unknown_key_and_bad_values_are_refused) {
  temp_dir d;
  struct {
    const char* yaml;
    const char* expect;
  } cases[] = {
      {"name: x\nversion: 1.0.0\nabi: 1\ncolour: red\n", "unknown field 'colour'"},
      {"name: x\nversion: one\nabi: 1\n", "field 'version'"},
      {"name: x\nversion: 1.0.0\nabi: 7\n", "declares ABI 7"},
      {"version: 1.0.0\nabi: 1\n", "missing required field 'name'"},
      {"name: x\nversion: 1.0.0\nabi: 1\nconfig:\n  n: {type: int, default: 50, max: 10}\n", "above the maximum 10"},
      {"name: x\nversion: 1.0.0\nabi: 1\nconfig:\n  e: {type: enum, default: a}\n", "needs 'values'"},
      {"name: x\nversion: 1.0.0\nabi: 1\nmode: remote\n", "expected embedded or isolated"},
      {"name: x\nversion: 1.0.0\nabi: 1\nresources: {deadline_ms: soon}\n", "resources.deadline_ms"},
      {"name: x\nversion: 1.0.0\nabi: 1\nresources: {processes: -4}\n", "resources.processes"},
      {"name: x\nversion: 1.0.0\nabi: 1\nresources: {gpus: 65}\n", "field 'resources.gpus': expected 0 to 64 GPUs"},
      {"name: x\nversion: 1.0.0\nabi: 1\nresources: {filesystem: {read: /etc}}\n",
       "field 'resources.filesystem.read': expected a list of paths"},
      {"name: x\nversion: 1.0.0\nabi: 1\nresources: {filesystem: {exec: [/bin]}}\n", "unknown field 'exec'"},
      {"name: x\nversion: 1.0.0\nabi: 1\nconfig:\n  n: {type: int, default: 1, path: read}\n",
       "'path' is for string fields"},
      {"name: x\nversion: 1.0.0\nabi: 1\nconfig:\n  f: {type: string, default: a, path: yes}\n",
       "'path' expected read or write"},
      {"name: x\nversion: 1.0.0\nabi: 1\ndependencies: [{name: y, version: \"about 2\"}]\n", "not understood"},
      {"name: [x\n", "not valid YAML"},
  };
  for (auto& c : cases) {
    auto path = d.write("bad.yaml", c.yaml);
    auto m = load_manifest(path);
    ASSERT_FALSE(m) << c.yaml;
    EXPECT_THAT(describe(m.error()), HasSubstr(path)) << c.yaml;
    EXPECT_THAT(describe(m.error()), HasSubstr(c.expect)) << c.yaml;
  }
}

TEST(config, defaults_filled_and_values_checked) {
  temp_dir d;
  auto m = load_manifest(d.write("demo/plugin.yaml", good_manifest));
  ASSERT_OK(m);
  auto ok = validate_config(*m, {{"radius", "7", 3}, {"shape", "disc", 4}}, "p.yaml");
  ASSERT_OK(ok);
  EXPECT_EQ(*ok,
            (config_values{{"radius", "7"}, {"gain", "0.5"}, {"label", "hello"}, {"on", "true"}, {"shape", "disc"}}));

  auto out_of_range = validate_config(*m, {{"radius", "40", 9}}, "p.yaml");
  ASSERT_FALSE(out_of_range);
  auto text = describe(out_of_range.error());
  EXPECT_THAT(text, HasSubstr("p.yaml:9"));
  EXPECT_THAT(text, HasSubstr("config field 'radius'"));
  EXPECT_THAT(text, HasSubstr("above the maximum 32"));

  auto bad_enum = validate_config(*m, {{"shape", "star", 2}}, "p.yaml");
  ASSERT_FALSE(bad_enum);
  EXPECT_THAT(describe(bad_enum.error()), HasSubstr("not one of: box, disc"));
  auto unknown = validate_config(*m, {{"radiu", "1", 5}}, "p.yaml");
  ASSERT_FALSE(unknown);
  EXPECT_THAT(describe(unknown.error()), HasSubstr("'radiu' is not in the schema of plugin 'demo'"));
  auto not_int = validate_config(*m, {{"radius", "2.5", 5}}, "p.yaml");
  ASSERT_FALSE(not_int);
  EXPECT_THAT(describe(not_int.error()), HasSubstr("not an integer"));
}

TEST(catalog, local_plugin_shadows_global_and_broken_manifest_is_reported) {
  temp_dir local, global;
  local.write("demo/plugin.yaml", "name: demo\nversion: 2.0.0\nabi: 1\n");
  global.write("demo/plugin.yaml", "name: demo\nversion: 1.0.0\nabi: 1\n");
  global.write("other/plugin.yaml", "name: other\nversion: 1.0.0\nabi: 1\n");
  global.write("broken/plugin.yaml", "name: broken\nversion: 1.0.0\nabi: 1\nbogus: 1\n");
  auto c = catalog::discover({local.path().string(), global.path().string()});
  auto demo = c.lookup("demo");
  ASSERT_OK(demo);
  EXPECT_EQ((*demo)->version.to_string(), "2.0.0");
  ASSERT_EQ(c.entries().size(), 2u);
  EXPECT_EQ(c.entries()[0].shadowed.size(), 1u);
  ASSERT_EQ(c.problems().size(), 1u);
  EXPECT_THAT(c.problems()[0].message, HasSubstr("unknown field 'bogus'"));
  auto missing = c.lookup("nope");
  ASSERT_FALSE(missing);
  EXPECT_THAT(describe(missing.error()), HasSubstr("plugin 'nope' not found"));
  EXPECT_THAT(describe(missing.error()), Not(HasSubstr("did you mean")));  // nothing near it
  auto typo = c.lookup("ohter");
  ASSERT_FALSE(typo);
  EXPECT_THAT(describe(typo.error()), HasSubstr("plugin 'ohter' not found on the search paths ("));
  EXPECT_THAT(describe(typo.error()), HasSubstr("); did you mean 'other'?"));
}

// A source tree's plugins/ holds manifests whose libraries were built elsewhere: such a
// manifest gives way to a complete one found later, and the catalog says so, naming both. Two
// complete ones (or two incomplete ones) keep the first, as before.
TEST(catalog, a_manifest_without_its_library_does_not_hide_a_complete_one) {
  temp_dir source, built, other;
  source.write("demo/plugin.yaml", "name: demo\nversion: 1.0.0\nabi: 1\n");
  source.write("lone/plugin.yaml", "name: lone\nversion: 1.0.0\nabi: 1\n");
  built.write("demo/plugin.yaml", "name: demo\nversion: 1.0.0\nabi: 1\n");
  built.write("demo/libtroupe_demo.so", "a library");
  other.write("demo/plugin.yaml", "name: demo\nversion: 0.9.0\nabi: 1\n");
  other.write("demo/libtroupe_demo.so", "a library");
  auto c = catalog::discover({source.path().string(), built.path().string(), other.path().string()});
  auto demo = c.lookup("demo");
  ASSERT_OK(demo);
  EXPECT_EQ((*demo)->path, (built.path() / "demo/plugin.yaml").string());
  ASSERT_EQ(c.entries().size(), 2u);
  ASSERT_EQ(c.entries()[0].passed_over.size(), 1u);
  EXPECT_EQ(c.entries()[0].passed_over[0], (source.path() / "demo/plugin.yaml").string());
  ASSERT_EQ(c.entries()[0].shadowed.size(), 1u);  // the complete one found after it
  EXPECT_EQ(c.entries()[0].shadowed[0], (other.path() / "demo/plugin.yaml").string());
  ASSERT_EQ(c.passed_over().size(), 1u);
  EXPECT_THAT(c.passed_over()[0], HasSubstr((source.path() / "demo/plugin.yaml").string() + " was passed over for " +
                                            (built.path() / "demo/plugin.yaml").string()));
  EXPECT_THAT(c.passed_over()[0], HasSubstr((source.path() / "demo/libtroupe_demo.so").string() + ") is missing"));
  // Without a complete one, the incomplete manifest stays: loading it names the missing file.
  auto lone = c.lookup("lone");
  ASSERT_OK(lone);
  EXPECT_EQ((*lone)->path, (source.path() / "lone/plugin.yaml").string());
}

TEST(plugin_library, wrong_library_or_name_is_refused_with_the_file) {
  temp_dir d;
  // A file that is not a shared library.
  d.write("fake/libtroupe_fake.so", "not an ELF file");
  auto m = load_manifest(d.write("fake/plugin.yaml", "name: fake\nversion: 1.0.0\nabi: 1\n"));
  ASSERT_OK(m);
  auto lib = plugin_library::open(*m);
  ASSERT_FALSE(lib);
  EXPECT_THAT(describe(lib.error()), HasSubstr("libtroupe_fake.so: cannot load"));

  // A real plugin library under a manifest that claims another name.
  auto m2 = load_manifest(
      d.write("liar/plugin.yaml", "name: liar\nversion: 1.0.0\nabi: 1\nlibrary: " + troupe::test::plugin_dir() +
                                      "/passthrough/libtroupe_passthrough.so\n"));
  ASSERT_OK(m2);
  auto lib2 = plugin_library::open(*m2);
  ASSERT_FALSE(lib2);
  EXPECT_THAT(describe(lib2.error()), HasSubstr("calls itself 'passthrough', the manifest says 'liar'"));

  // A real shared library without the entry symbol.
  auto m3 = load_manifest(d.write("nosym/plugin.yaml", "name: nosym\nversion: 1.0.0\nabi: 1\nlibrary: " +
                                                           std::string(TROUPE_NO_ENTRY_LIBRARY) + "\n"));
  ASSERT_OK(m3);
  auto lib3 = plugin_library::open(*m3);
  ASSERT_FALSE(lib3);
  EXPECT_THAT(describe(lib3.error()), HasSubstr("missing symbol 'troupe_plugin_entry'"));
}

TEST(plugin_library, wrong_abi_version_is_refused) {
  temp_dir d;
  auto m = load_manifest(d.write("w/plugin.yaml", "name: wrongabi\nversion: 1.0.0\nabi: 1\nlibrary: " +
                                                      std::string(TROUPE_WRONG_ABI_LIBRARY) + "\n"));
  ASSERT_OK(m);
  auto lib = plugin_library::open(*m);
  ASSERT_FALSE(lib);
  EXPECT_THAT(describe(lib.error()),
              HasSubstr("library speaks ABI 99.x, this host speaks ABI 1.1 (the major must be equal"));
  EXPECT_THAT(describe(lib.error()), HasSubstr(m->path));
}

// A manifest for one of the test libraries of other ABI versions (tests/actors/abi_variants.c).
expected<manifest> variant(const temp_dir& d, const std::string& name, const std::string& library) {
  return load_manifest(
      d.write(name + "/plugin.yaml", "name: " + name + "\nversion: 1.0.0\nabi: 1\nlibrary: " + library + "\n"));
}

// A plugin built against ABI 1.0 (no struct_size, no minor, the host table as it was) loads
// in a 1.1 host and runs: its frames pass through it.
TEST(plugin_library, a_plugin_of_an_older_minor_loads_and_runs) {
  temp_dir d;
  auto m = variant(d, "abi_old", TROUPE_ABI_1_0_LIBRARY);
  ASSERT_OK(m);
  auto lib = plugin_library::open(*m);
  ASSERT_OK(lib);
  EXPECT_EQ((*lib)->abi(), "1.0");
  embedded_adapter a(*lib, 3, "abi_old");
  ASSERT_TRUE(a.create({}).ok());
  ASSERT_TRUE(a.start().ok());
  auto payload = buffer::allocate(5);
  std::memcpy(payload->data(), "hello", 5);
  frame in;
  in.stream = 7;
  in.seq = 9;
  in.type = "text/plain";
  in.payload = payload_slice(payload, 0, 5);
  std::vector<frame> out;
  auto r = a.process(&in, out);
  ASSERT_TRUE(r.ok()) << r.error;
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].seq, 9u);
  EXPECT_EQ(out[0].generation, 3u);
  EXPECT_EQ(out[0].type, "text/plain");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(out[0].payload.data()), out[0].payload.size()), "hello");
  EXPECT_EQ(out[0].payload.buffer(), payload);  // its own input, passed on without a copy
  EXPECT_TRUE(a.stop().ok());
  // The example plugins are built against this host's ABI.
  auto examples = catalog::discover({TROUPE_PLUGIN_OUTPUT_DIR});
  auto p = examples.lookup("passthrough");
  ASSERT_OK(p);
  auto current = plugin_library::open(**p);
  ASSERT_TRUE(current) << describe(current.error());
  EXPECT_EQ((*current)->abi(), "1.1");
}

// A newer minor, a table smaller than its version's, and reserved slots in use are refused,
// each with what was wrong and the file.
TEST(plugin_library, a_newer_minor_a_short_table_and_used_reserved_slots_are_refused) {
  temp_dir d;
  struct {
    const char* name;
    const char* library;
    const char* says;
  } cases[] = {
      {"abi_newer", TROUPE_ABI_NEWER_LIBRARY,
       "library needs ABI 1.99, this host speaks ABI 1.1 (a newer troupe loads it)"},
      {"abi_short", TROUPE_ABI_SHORT_LIBRARY, "plugin table says it is 12 bytes, less than the"},
      {"abi_reserved", TROUPE_ABI_RESERVED_LIBRARY, "the plugin table's reserved slots are not NULL"},
  };
  for (auto& c : cases) {
    auto m = variant(d, c.name, c.library);
    ASSERT_OK(m);
    auto lib = plugin_library::open(*m);
    ASSERT_FALSE(lib) << c.name;
    EXPECT_THAT(describe(lib.error()), HasSubstr(c.says));
    EXPECT_THAT(describe(lib.error()), HasSubstr(c.library));
  }
}

// inputs and outputs: media types (known, namespaced, same, a {field} of an enum) and keys.
TEST(manifest, reads_inputs_and_outputs) {
  temp_dir d;
  auto m = load_manifest(d.write("conv/plugin.yaml", R"(name: conv
version: 1.0.0
abi: 1
capabilities: [filter, x-acme-colour]
config:
  format: {type: enum, values: [rgb24, gray8, same], default: rgb24}
inputs: {types: [video/rgb24, video/x-acme], needs: [width, height]}
outputs: {types: ["video/{format}"], gives: [format]}
)"));
  ASSERT_OK(m);
  EXPECT_EQ(m->inputs.types, (std::vector<std::string>{"video/rgb24", "video/x-acme"}));
  EXPECT_EQ(m->inputs.keys, (std::vector<std::string>{"width", "height"}));
  EXPECT_TRUE(m->outputs.keys_declared);
  EXPECT_TRUE(m->offers("x-acme-colour"));
  EXPECT_TRUE(m->offers("video/x-acme"));
  EXPECT_FALSE(m->offers("source"));
  using types = std::vector<std::string>;
  EXPECT_EQ(m->output_types({{"format", "gray8"}}, types{"video/rgb24"}), types{"video/gray8"});
  // `same` as the field's value: the input's type, or any if the input's is not known.
  EXPECT_EQ(m->output_types({{"format", "same"}}, types{"video/x-acme"}), types{"video/x-acme"});
  EXPECT_EQ(m->output_types({{"format", "same"}}, std::nullopt), std::nullopt);
}

TEST(manifest, capabilities_and_media_types_come_from_a_list) {
  temp_dir d;
  auto head = std::string("name: x\nversion: 1.0.0\nabi: 1\n");
  auto error_of = [&](const std::string& rest) {
    auto m = load_manifest(d.write("x/plugin.yaml", head + rest));
    return m ? std::string("accepted") : describe(m.error());
  };
  EXPECT_THAT(error_of("capabilities: [filtre]\n"),
              HasSubstr("plugin.yaml:4: field 'capabilities': 'filtre' is not a capability (source, sink, filter"));
  EXPECT_THAT(error_of("capabilities: [filtre]\n"), HasSubstr("did you mean 'filter'?"));
  EXPECT_THAT(error_of("capabilities: [filter, video/rgb24]\n"),
              HasSubstr("'video/rgb24' is a media type: declare it under 'inputs: {types: [...]}'"));
  EXPECT_THAT(error_of("inputs: {types: [video/rgb42]}\n"),
              HasSubstr("field 'inputs.types': 'video/rgb42' is not a media type"));
  EXPECT_THAT(error_of("inputs: {types: [video/rgb42]}\n"), HasSubstr("did you mean 'video/rgb24'?"));
  EXPECT_THAT(error_of("inputs: {types: [same]}\n"), HasSubstr("'same' is not a media type"));
  EXPECT_THAT(error_of("inputs: {types: [any, video/rgb24]}\n"), HasSubstr("'any' stands alone"));
  EXPECT_THAT(error_of("inputs: {typs: [any]}\n"), HasSubstr("typs"));
  EXPECT_THAT(error_of("capabilities: [source]\noutputs: {types: [same]}\n"), HasSubstr("a source has no input"));
  EXPECT_THAT(error_of("capabilities: [source]\ninputs: {types: [any]}\n"), HasSubstr("a source takes no input"));
  EXPECT_THAT(error_of("outputs: {types: [\"video/{fmt}\"]}\n"),
              HasSubstr("names '{fmt}', which is not an enum field of the config schema"));
  EXPECT_THAT(error_of("config:\n  f: {type: enum, values: [rgb24, bogus], default: rgb24}\n"
                       "outputs: {types: [\"video/{f}\"]}\n"),
              HasSubstr("with f 'bogus' gives 'video/bogus', which is not a media type"));
  EXPECT_THAT(error_of("outputs: {types: [video/rgb24], gives: [\"\"]}\n"), HasSubstr("expected a metadata key"));
  EXPECT_EQ(error_of("capabilities: [x-mine]\noutputs: {types: [application/x-mine], gives: []}\n"), "accepted");
}

// An output inherits its input's metadata; what the plugin gives is laid over it.
TEST(embedded_adapter, an_output_inherits_the_input_s_metadata_with_the_plugin_s_pairs_laid_over) {
  frame in;
  in.meta = std::make_shared<metadata>(metadata{{"width", "4"}, {"height", "2"}, {"pts", "7"}});
  std::vector<troupe_kv> seen;
  for (auto& [k, v] : *in.meta) seen.push_back({k.c_str(), v.c_str()});
  EXPECT_EQ(inherit_meta(in, seen, nullptr, 0), in.meta);              // nothing given: the same map
  EXPECT_EQ(inherit_meta(in, seen, seen.data(), 3), in.meta);          // given back unchanged: likewise
  troupe_kv given[] = {{"height", "1"}, {"pts", ""}, {"label", "x"}};  // replaced, removed, added
  auto out = inherit_meta(in, seen, given, 3);
  ASSERT_TRUE(out);
  EXPECT_EQ(*out, (metadata{{"width", "4"}, {"height", "1"}, {"label", "x"}}));
  EXPECT_EQ(*in.meta, (metadata{{"width", "4"}, {"height", "2"}, {"pts", "7"}}));  // the input's is untouched
  frame bare;
  EXPECT_EQ(*inherit_meta(bare, {}, given, 3), (metadata{{"height", "1"}, {"label", "x"}}));
}
