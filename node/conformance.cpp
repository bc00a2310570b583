// `troupe conformance PLUGIN`: checks one plugin against the plugin contract, under both
// adapters, and that both give the same results.
//
// The checks: the library loads; the manifest's config schema is enforced (defaults valid,
// bad values refused naming the field) and every boundary value it accepts is taken (or
// refused) alike in both modes; the lifecycle (create, start, health, stop) succeeds;
// known inputs (frames from a source plugin, testsrc by default) and bad inputs (truncated,
// empty, of a foreign type) are processed, bad ones with at most a frame error; every
// output carries the instance's generation; and embedded and isolated runs agree on every
// status, error, output and file written. A source is asked for frames instead; a sink's
// files are compared.
//
// The isolated run goes first: a plugin that crashes or hangs there is reported, and the
// embedded run (in this process) skips what would take the process down.
#include "commands.hpp"
#include "loading.hpp"

#include <troupe/catalog.hpp>
#include <troupe/embedded_adapter.hpp>
#include <troupe/isolated_adapter.hpp>
#include <troupe/plugin_library.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace troupe::cli {

namespace {

namespace fs = std::filesystem;
constexpr uint64_t conformance_generation = 7;

uint64_t fnv1a64(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

std::string describe_frame(const frame& f) {
  std::ostringstream o;
  o << "stream " << f.stream << " seq " << f.seq << " part " << f.part << " gen " << f.generation << " type '" << f.type
    << "' size " << f.payload.size() << " hash " << std::hex << fnv1a64(f.payload.data(), f.payload.size()) << std::dec;
  if (f.meta)
    for (auto& [k, v] : *f.meta) o << " " << k << "=" << v;
  return o.str();
}

// What one call did, in a form both modes can be compared by.
struct outcome {
  std::string label;  // which call or input
  call_result result;
  std::vector<std::string> outputs;  // describe_frame of each
  bool gone = false;                 // the call ended the plugin instance (fatal, crash, hang)
  bool crashed = false;              // ... by taking its process down or hanging
  bool operator==(const outcome& o) const {
    return result.status == o.result.status && result.error == o.result.error && outputs == o.outputs;
  }
};

std::string status_text(const call_result& r) {
  switch (r.status) {
    case TROUPE_OK: return "ok";
    case TROUPE_END: return "end";
    case TROUPE_ERROR: return "frame error: " + r.error;
    case TROUPE_FATAL: return "fatal: " + r.error;
  }
  return "status " + std::to_string(r.status) + ": " + r.error;
}

// Runs call() with a deadline; past it, the adapter is terminated (an isolated worker is
// killed, which ends the call). An embedded call cannot be ended: it is only run when the
// isolated run showed it returns.
template <class F>
call_result timed(plugin_adapter& a, std::chrono::milliseconds deadline, bool& overran, F call) {
  std::mutex m;
  std::condition_variable cv;
  bool finished = false;
  overran = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(m);
    if (!cv.wait_for(lock, deadline, [&] { return finished; })) {
      overran = true;
      a.terminate();
    }
  });
  call_result r;
  try {
    r = call();
  } catch (const std::exception& e) {
    r = {TROUPE_FATAL, std::string("exception crossed the plugin ABI: ") + e.what()};
  }
  {
    std::lock_guard<std::mutex> lock(m);
    finished = true;
  }
  cv.notify_one();
  watchdog.join();
  if (overran) r = {TROUPE_FATAL, "no answer within the deadline of " + std::to_string(deadline.count()) + " ms"};
  return r;
}

struct checker {
  int passed = 0, failed = 0;
  void check(bool ok, const std::string& what, const std::string& why = {}) {
    ++(ok ? passed : failed);
    std::printf("  %s  %s%s%s\n", ok ? "PASS" : "FAIL", what.c_str(), ok || why.empty() ? "" : ": ",
                ok ? "" : why.c_str());
    std::fflush(stdout);
  }
};

// Inputs for a filter or sink: frames of the source plugin, then bad ones made from them.
struct input_set {
  std::vector<frame> known;
  std::vector<std::pair<std::string, frame>> bad;  // (what is wrong, frame)
};

expected<input_set> make_inputs(const catalog& cat, const std::string& source, const config_values& source_config,
                                uint32_t count) {
  auto m = cat.lookup(source);
  if (!m) return m.error();
  auto lib = plugin_library::open(**m);
  if (!lib) return lib.error();
  embedded_adapter src(*lib, 1, "conformance source " + source);
  std::vector<config_entry> entries;
  for (auto& [k, v] : source_config) entries.push_back({k, v, 0});
  auto config = validate_config(**m, entries, "the source config");
  if (!config) return config.error();
  auto r = src.create(*config);
  if (r.ok()) r = src.start();
  if (!r.ok()) return make_error(errc::start_failed, "source " + source + " did not start: " + r.error);
  input_set in;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (in.known.size() < count && std::chrono::steady_clock::now() < until) {
    std::vector<frame> out;
    r = src.process(nullptr, out);
    for (auto& f : out)
      if (in.known.size() < count) in.known.push_back(std::move(f));
    if (r.status == TROUPE_END) break;
    if (!r.ok()) return make_error(errc::start_failed, "source " + source + " failed: " + r.error);
  }
  src.stop();
  src.destroy();
  if (in.known.empty()) return make_error(errc::start_failed, "source " + source + " produced no frames");
  uint64_t seq = 1000000;
  auto first = in.known.front();
  frame truncated = first;
  truncated.payload = first.payload.sub(0, first.payload.size() / 2);
  truncated.seq = seq++;
  in.bad.emplace_back("truncated payload", truncated);
  frame empty = first;
  empty.payload = {};
  empty.seq = seq++;
  in.bad.emplace_back("empty payload", empty);
  auto junk = buffer::allocate(61);
  for (size_t i = 0; i < junk->size(); ++i) junk->data()[i] = static_cast<uint8_t>(i * 37 + 11);
  frame foreign;
  foreign.stream = first.stream;
  foreign.seq = seq++;
  foreign.type = "application/x-troupe-conformance";
  foreign.payload = payload_slice(std::move(junk));
  in.bad.emplace_back("foreign type, no metadata", foreign);
  return in;
}

// One mode's run of the lifecycle and the inputs. `skip` holds labels of calls not to make
// (they took the isolated worker down).
struct mode_run {
  std::vector<outcome> calls;
  std::string off_contract;                  // the first output not of the declared types or without a declared key
  std::map<std::string, std::string> files;  // written by the plugin: relative path -> content
};

// What is wrong with output f of input `in` (null: a source's turn) against the outputs the
// manifest declares: its type, and the metadata keys it gives. Empty if nothing.
std::string off_contract(const manifest& m, const config_values& config, const frame* in, const frame& f) {
  std::optional<std::vector<std::string>> from;
  if (in != nullptr) from = std::vector<std::string>{in->type};
  if (auto allowed = m.output_types(config, from);
      allowed && std::find(allowed->begin(), allowed->end(), f.type) == allowed->end()) {
    return "type '" + f.type + "', where the manifest declares " + joined(*allowed);
  }
  for (auto& k : m.outputs.keys)
    if (f.find_meta(k) == nullptr) return "no metadata '" + k + "' (the manifest's outputs.gives)";
  return {};
}

class runner {
 public:
  runner(const manifest& m, std::shared_ptr<plugin_library> lib, config_values config, fs::path dir)
      : m_(m), lib_(std::move(lib)), config_(std::move(config)), dir_(std::move(dir)) {}

  const media_side& declared_outputs() const { return m_.outputs; }

  std::unique_ptr<plugin_adapter> make(exec_mode mode) const {
    auto tag = std::string("conformance ") + to_string(mode) + " " + m_.name;
    if (mode == exec_mode::isolated)
      return std::make_unique<isolated_adapter>(m_, conformance_generation, tag, launcher_);
    return std::make_unique<embedded_adapter>(lib_, conformance_generation, tag);
  }

  std::chrono::milliseconds deadline(exec_mode mode, bool starting) const {
    auto d = std::chrono::milliseconds(m_.resources.deadline_ms);
    return mode == exec_mode::isolated && starting ? d + std::chrono::seconds(5) : d;
  }

  // create with one config, then destroy.
  outcome create_only(exec_mode mode, const config_values& config, const std::string& label) const {
    outcome o{label, {}, {}, false, false};
    auto a = make(mode);
    bool overran = false;
    o.result = timed(*a, deadline(mode, true), overran, [&] { return a->create(config); });
    o.crashed = overran || (mode == exec_mode::isolated && a->worker_pid() < 0);
    o.gone = o.crashed || o.result.status == TROUPE_FATAL;
    return o;  // the adapter destroys the instance (and ends its worker)
  }

  // The lifecycle with the inputs (or a source's turns), in a directory of its own. Calls
  // labelled in `skip` are not made; after a call that ends the instance, the next call
  // gets a fresh one.
  mode_run run(exec_mode mode, const input_set& inputs, uint32_t source_turns, const std::set<std::string>& skip) {
    mode_run out;
    auto here = dir_ / to_string(mode);
    fs::create_directories(here);
    auto previous = fs::current_path();
    fs::current_path(here);  // relative paths in the config land here, per mode
    auto a = make(mode);
    bool replace = false;
    auto call = [&](const std::string& label, bool starting, auto fn, const frame* input = nullptr,
                    bool known = false) {
      outcome o{label, {}, {}, false, false};
      if (skip.count(label)) {
        out.calls.push_back(o);
        return;
      }
      if (replace) {
        a = make(mode);
        bool overran = false;
        auto r = timed(*a, deadline(mode, true), overran, [&] {
          auto c = a->create(config_);
          return c.ok() ? a->start() : c;
        });
        if (!r.ok()) {
          o.result = r;
          o.gone = true;
          o.label += " (a fresh instance did not start)";
          out.calls.push_back(o);
          return;
        }
        replace = false;
      }
      bool overran = false;
      std::vector<frame> outs;
      o.result = timed(*a, deadline(mode, starting), overran, [&] { return fn(*a, outs); });
      for (auto& f : outs) {
        o.outputs.push_back(describe_frame(f));
        if (known && out.off_contract.empty())
          if (auto why = off_contract(m_, config_, input, f); !why.empty())
            out.off_contract = label + ": output part " + std::to_string(f.part) + " has " + why;
      }
      o.crashed = overran || (mode == exec_mode::isolated && a->worker_pid() < 0);
      o.gone = o.crashed || o.result.status == TROUPE_FATAL;
      replace = o.gone;
      out.calls.push_back(std::move(o));
    };
    call("create", true, [&](plugin_adapter& p, std::vector<frame>&) { return p.create(config_); });
    bool ok = out.calls.back().result.ok();
    if (ok) {
      call("start", false, [](plugin_adapter& p, std::vector<frame>&) { return p.start(); });
      ok = out.calls.back().result.ok();
    }
    if (ok) {
      call("health", false, [](plugin_adapter& p, std::vector<frame>&) { return p.health(); });
      if (m_.has_capability("source")) {
        for (uint32_t i = 0; i < source_turns; ++i) {
          call(
              "turn " + std::to_string(i), false,
              [](plugin_adapter& p, std::vector<frame>& o) { return p.process(nullptr, o); }, nullptr, true);
          if (out.calls.back().result.status == TROUPE_END) break;
        }
      } else {
        for (auto& f : inputs.known)
          call(
              "input stream " + std::to_string(f.stream) + " seq " + std::to_string(f.seq), false,
              [&f](plugin_adapter& p, std::vector<frame>& o) { return p.process(&f, o); }, &f, true);
        for (auto& [what, f] : inputs.bad)
          call("bad input (" + what + ")", false,
               [&f](plugin_adapter& p, std::vector<frame>& o) { return p.process(&f, o); });
      }
      call("stop", false, [](plugin_adapter& p, std::vector<frame>&) { return p.stop(); });
    }
    if (!replace) a->destroy();
    a.reset();
    fs::current_path(previous);
    for (auto& e : fs::recursive_directory_iterator(here)) {
      if (!e.is_regular_file()) continue;
      std::ifstream f(e.path(), std::ios::binary);
      std::stringstream text;
      text << f.rdbuf();
      out.files[fs::relative(e.path(), here).string()] = text.str();
    }
    return out;
  }

 private:
  const manifest& m_;
  std::shared_ptr<plugin_library> lib_;
  config_values config_;
  fs::path dir_;
  std::shared_ptr<worker_launcher> launcher_ = std::make_shared<worker_launcher>();  // for isolated runs
};

// Values a field's schema accepts at its edges, and values it must refuse (with why).
void edge_values(const config_field& f, std::vector<std::string>& accepted,
                 std::vector<std::pair<std::string, std::string>>& refused) {
  auto num = [](double x, bool integer) {
    std::ostringstream o;
    if (integer)
      o << static_cast<long long>(x);
    else
      o << x;
    return o.str();
  };
  switch (f.type) {
    case field_type::integer:
    case field_type::real: {
      bool integer = f.type == field_type::integer;
      if (f.min) accepted.push_back(num(*f.min, integer));
      if (f.max) accepted.push_back(num(*f.max, integer));
      refused.emplace_back("not-a-number", "not a number");
      if (integer) refused.emplace_back("1.5", "not an integer");
      if (f.min) refused.emplace_back(num(*f.min - 1, integer), "below the minimum");
      if (f.max) refused.emplace_back(num(*f.max + 1, integer), "above the maximum");
      break;
    }
    case field_type::boolean:
      accepted = {"true", "false"};
      refused.emplace_back("maybe", "not a boolean");
      break;
    case field_type::enumeration:
      accepted = f.values;
      refused.emplace_back("no-such-value-of-" + f.name, "not one of the values");
      break;
    case field_type::string: break;
  }
}

std::string first_difference(const mode_run& iso, const mode_run& emb, const std::set<std::string>& skipped) {
  for (size_t i = 0; i < std::min(iso.calls.size(), emb.calls.size()); ++i) {
    auto& x = iso.calls[i];
    auto& y = emb.calls[i];
    if (x == y || skipped.count(x.label)) continue;
    std::string d = x.label + ": isolated " + status_text(x.result) + " with " + std::to_string(x.outputs.size()) +
                    " outputs, embedded " + status_text(y.result) + " with " + std::to_string(y.outputs.size()) +
                    " outputs";
    for (size_t k = 0; k < std::min(x.outputs.size(), y.outputs.size()); ++k)
      if (x.outputs[k] != y.outputs[k])
        return d + "; output " + std::to_string(k) + ": isolated [" + x.outputs[k] + "], embedded [" + y.outputs[k] +
               "]";
    return d;
  }
  if (iso.calls.size() != emb.calls.size())
    return std::to_string(iso.calls.size()) + " calls isolated, " + std::to_string(emb.calls.size()) + " embedded";
  if (iso.files != emb.files) {
    for (auto& [path, content] : iso.files) {
      auto it = emb.files.find(path);
      if (it == emb.files.end()) return "file " + path + " written isolated only";
      if (it->second != content) return "file " + path + " differs";
    }
    return "a file was written embedded only";
  }
  return {};
}

}  // namespace

int conformance(const common_options& common, const conformance_options& o) {
  auto cat = discover(common);
  auto found = cat.lookup(o.plugin);
  if (!found) {
    std::fprintf(stderr, "troupe conformance: %s\n", describe(found.error()).c_str());
    return 2;
  }
  const manifest& m = **found;
  std::vector<config_entry> entries;
  for (auto& kv : o.config) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "troupe conformance: --config '%s': expected KEY=VALUE\n", kv.c_str());
      return 2;
    }
    entries.push_back({kv.substr(0, eq), kv.substr(eq + 1), 0});
  }
  auto config = validate_config(m, entries, "--config");
  if (!config) {
    std::fprintf(stderr, "troupe conformance: %s\n", describe(config.error()).c_str());
    return 2;
  }
  std::string kind = m.has_capability("source") ? "source" : m.has_capability("sink") ? "sink" : "filter";
  std::printf("conformance of %s %s (%s), a %s, embedded and isolated\n", m.name.c_str(), m.version.to_string().c_str(),
              m.path.c_str(), kind.c_str());
  checker c;

  auto lib = plugin_library::open(m);
  c.check(static_cast<bool>(lib),
          "the library loads and speaks ABI " + (lib ? (*lib)->abi() : std::to_string(TROUPE_ABI_MAJOR) + ".x") +
              " (this host: " + std::to_string(TROUPE_ABI_MAJOR) + "." + std::to_string(TROUPE_ABI_MINOR) + ")",
          lib ? "" : describe(lib.error()));
  if (!lib) {
    std::printf("%d passed, %d failed\n", c.passed, c.failed);
    return 1;
  }

  // The config schema.
  auto defaults = validate_config(m, {}, "conformance");
  c.check(static_cast<bool>(defaults), "config: the defaults are valid", defaults ? "" : describe(defaults.error()));
  {
    auto unknown = validate_config(m, {{"conformance_no_such_field", "1", 0}}, "conformance");
    c.check(!unknown && describe(unknown.error()).find("conformance_no_such_field") != std::string::npos,
            "config: an unknown field is refused by name");
  }
  std::vector<std::pair<std::string, config_values>> edge_configs;  // (label, config)
  for (auto& f : m.config) {
    std::vector<std::string> accepted;
    std::vector<std::pair<std::string, std::string>> refused;
    edge_values(f, accepted, refused);
    // The user's config, with this field set to the value tried.
    auto with = [&](const std::string& value) {
      std::vector<config_entry> e;
      for (auto& x : entries)
        if (x.key != f.name) e.push_back(x);
      e.push_back({f.name, value, 0});
      return e;
    };
    for (auto& [value, why] : refused) {
      auto e = with(value);
      auto r = validate_config(m, e, "conformance");
      c.check(!r && describe(r.error()).find(f.name) != std::string::npos,
              "config: " + f.name + " = '" + value + "' (" + why + ") is refused by name",
              r ? "accepted" : describe(r.error()));
    }
    for (auto& value : accepted) {
      auto e = with(value);
      auto r = validate_config(m, e, "conformance");
      if (r)
        edge_configs.emplace_back(f.name + " = " + value, *r);
      else
        c.check(false, "config: " + f.name + " = '" + value + "' is accepted", describe(r.error()));
    }
  }

  auto dir = fs::temp_directory_path() / ("troupe-conformance-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  runner run(m, *lib, *config, dir);

  // Every accepted edge value creates (or is refused at create) alike in both modes.
  if (!edge_configs.empty()) {
    std::string diff, crash;
    for (auto& [label, cfg] : edge_configs) {
      auto iso = run.create_only(exec_mode::isolated, cfg, label);
      if (iso.crashed) {  // not tried in this process
        crash += (crash.empty() ? "" : "; ") + label + ": " + iso.result.error;
        continue;
      }
      auto emb = run.create_only(exec_mode::embedded, cfg, label);
      if (!(iso == emb) && diff.empty())
        diff = label + ": isolated " + status_text(iso.result) + ", embedded " + status_text(emb.result);
    }
    c.check(crash.empty(),
            "config: create with each edge value (" + std::to_string(edge_configs.size()) + ") does not crash", crash);
    c.check(diff.empty(), "config: create with each edge value gives the same result in both modes", diff);
  }

  // The lifecycle and the inputs, isolated first.
  input_set inputs;
  if (kind != "source") {
    config_values source_config = {
        {"width", "64"}, {"height", "36"}, {"count", std::to_string(o.frames / 2 + 1)}, {"streams", "2"}};
    if (o.source != "testsrc") source_config.clear();
    auto made = make_inputs(cat, o.source, source_config, o.frames);
    if (!made) {
      std::fprintf(stderr, "troupe conformance: inputs from %s: %s\n", o.source.c_str(),
                   describe(made.error()).c_str());
      fs::remove_all(dir);
      return 2;
    }
    inputs = std::move(*made);
  }
  auto iso = run.run(exec_mode::isolated, inputs, o.frames, {});
  std::set<std::string> skip;  // what took the worker down is not tried in this process
  for (auto& call : iso.calls)
    if (call.crashed) skip.insert(call.label);
  auto emb = run.run(exec_mode::embedded, inputs, o.frames, skip);

  for (auto* r : {&iso, &emb}) {
    const char* mode = r == &iso ? "isolated" : "embedded";
    std::string lifecycle, known, bad, stamp;
    size_t outputs = 0, processed = 0;
    for (auto& call : r->calls) {
      if (skip.count(call.label) && r == &emb) continue;
      bool is_lifecycle =
          call.label == "create" || call.label == "start" || call.label == "health" || call.label == "stop";
      bool is_bad = call.label.rfind("bad input", 0) == 0;
      if (is_lifecycle) {
        if (!call.result.ok() && lifecycle.empty()) lifecycle = call.label + ": " + status_text(call.result);
      } else if (is_bad) {
        if (call.result.status != TROUPE_OK && call.result.status != TROUPE_ERROR)
          bad += (bad.empty() ? "" : "; ") + call.label + ": " + status_text(call.result);
      } else {
        ++processed;
        outputs += call.outputs.size();
        if (call.result.status == TROUPE_FATAL && known.empty()) known = call.label + ": " + status_text(call.result);
      }
      for (auto& out : call.outputs)
        if (out.find(" gen " + std::to_string(conformance_generation) + " ") == std::string::npos && stamp.empty())
          stamp = call.label + ": [" + out + "]";
    }
    c.check(lifecycle.empty(), std::string(mode) + ": create, start, health and stop succeed", lifecycle);
    size_t skipped = r == &emb ? skip.size() : 0;
    c.check(known.empty(),
            std::string(mode) + ": " + std::to_string(processed) + " " + (kind == "source" ? "turns" : "known inputs") +
                " processed without a failure, " + std::to_string(outputs) + " outputs" +
                (skipped ? " (" + std::to_string(skipped) + " not tried: they ended the worker)" : ""),
            known);
    if (kind != "source")
      c.check(bad.empty(), std::string(mode) + ": bad inputs (truncated, empty, foreign) get at most a frame error",
              bad);
    auto& declared = run.declared_outputs();
    if (outputs > 0 && (!declared.any_type() || !declared.keys.empty())) {
      auto types = joined(declared.types), keys = joined(declared.keys);
      c.check(r->off_contract.empty(),
              std::string(mode) + ": outputs are of the declared types (" + (types.empty() ? "any" : types) +
                  ") and carry the declared metadata (" + (keys.empty() ? "none" : keys) + ")",
              r->off_contract);
    }
    if (outputs > 0)
      c.check(stamp.empty(),
              std::string(mode) + ": every output carries the instance's generation (" +
                  std::to_string(conformance_generation) + ")",
              stamp);
  }
  auto diff = first_difference(iso, emb, skip);
  c.check(
      diff.empty(),
      "both modes give the same statuses, errors and outputs" +
          (iso.files.empty() ? std::string() : " and write the same files (" + std::to_string(iso.files.size()) + ")"),
      diff);
  fs::remove_all(dir);
  std::printf("%d passed, %d failed\n", c.passed, c.failed);
  return c.failed == 0 ? 0 : 1;
}

}  // namespace troupe::cli
