// troupe: run plugin pipelines on one machine.
#include "commands.hpp"

#include <CLI/CLI.hpp>

#include <troupe/plugin.h>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <troupe/nearest.hpp>

namespace {

// The usage error CLI11 found, with a "did you mean" for a mistyped subcommand or option.
int usage_error(CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
  std::string guess, typed;
  if (app.get_subcommands().empty()) {
    for (int i = 1; i < argc && guess.empty(); ++i) {
      if (argv[i][0] == '-') continue;
      typed = argv[i];
      size_t best = 3;
      for (auto* sub : app.get_subcommands({}))
        if (!sub->get_group().empty() && troupe::edit_distance(typed, sub->get_name()) < best) {
          best = troupe::edit_distance(typed, sub->get_name());
          guess = sub->get_name();
        }
    }
  }
  if (!guess.empty()) {
    std::fprintf(stderr, "troupe: unknown command '%s'; did you mean '%s'?\n", typed.c_str(), guess.c_str());
    return 2;
  }
  if (auto* extras = dynamic_cast<const CLI::ExtrasError*>(&e)) {
    (void)extras;
    // An unknown option: the nearest option of the subcommand given, or of troupe itself.
    CLI::App* scope = app.get_subcommands().empty() ? &app : app.get_subcommands().front();
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) continue;
      a = a.substr(0, a.find('='));
      if (scope->get_option_no_throw(a) || app.get_option_no_throw(a)) continue;
      size_t best = 3;
      for (auto* app_or_sub : {scope, &app})
        for (auto* opt : app_or_sub->get_options())
          for (auto& name : opt->get_lnames())
            if (troupe::edit_distance(a, "--" + name) < best) {
              best = troupe::edit_distance(a, "--" + name);
              guess = "--" + name;
            }
      if (!guess.empty()) {
        std::fprintf(stderr, "troupe: unknown option '%s'; did you mean '%s'?\n", a.c_str(), guess.c_str());
        return 2;
      }
    }
  }
  app.exit(e);
  return 2;  // usage errors exit 2, as the shell's conventions have it
}

}  // namespace

int main(int argc, char** argv) {
  using namespace troupe::cli;
  CLI::App app{"Troupe: an actor-based plugin runtime. Runs pipelines of plugin instances under supervision."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("troupe ") + TROUPE_VERSION + " (plugin ABI " +
                                        std::to_string(TROUPE_ABI_MAJOR) + "." + std::to_string(TROUPE_ABI_MINOR) +
                                        ")");
  app.fallthrough();  // global options may also follow the subcommand
  common_options common;
  app.add_option("--log-level", common.log_level, "trace, debug, info, warn, error or off")->capture_default_str();
  app.add_option("--plugin-path", common.plugin_paths,
                 "Extra plugin directories, searched before ./plugins, TROUPE_PLUGIN_PATH and troupe's own")
      ->allow_extra_args(false);  // one directory per --plugin-path: a positional may follow

  run_options run_opts;
  auto* run_cmd = app.add_subcommand(
      "run",
      "Run a pipeline in this process until it finishes. While it runs, stdin takes "
      "'scale STAGE N', 'pause STAGE', 'resume STAGE' and 'reload STAGE [PLUGIN_YAML] [KEY=VALUE...]'");
  run_cmd->add_option("pipeline", run_opts.pipeline, "Pipeline file (pipeline.yaml)")->required();
  run_cmd->add_option("--metrics", run_opts.metrics_address,
                      "Serve Prometheus /metrics on ADDRESS:PORT (a port alone: on 127.0.0.1)");
  run_cmd->add_flag("--fail-on-errors", run_opts.fail_on_errors,
                    "Exit 3 if a frame failed or was given up on, though the pipeline finished");
  run_cmd->footer(
      "Exit status: 0 finished, every instance stopped cleanly (also after a drain on the first SIGINT or "
      "SIGTERM); 1 failed (load error, quarantine, failed stop, --timeout, unwritable --report); 2 usage error; "
      "3 frames failed (--fail-on-errors); 128+N stopped without draining by a second signal N (130: SIGINT).");
  run_cmd->add_option("--report", run_opts.report_path, "Write the summary as JSON to this file");
  run_cmd->add_flag("--instances", run_opts.instances,
                    "A line per instance in the summary and the progress view, however many (past 64 instances "
                    "they show one line per stage)");
  run_cmd->add_option("--events", run_opts.events_path,
                      "Append every event (instance states, restarts, quarantines, dead letters, scaling, reloads) to "
                      "this file as JSON lines, as they happen");
  run_cmd->add_option("--timeout", run_opts.timeout_s, "Stop and fail after this many seconds (0: never)");
  run_cmd->add_flag("!--no-progress", run_opts.progress, "No live progress on the terminal");
  run_cmd->add_option("--scale-stage", run_opts.scale_stage,
                      "The stage SIGUSR1 adds a replica to and SIGUSR2 removes one from "
                      "(the terminal takes 'scale STAGE N' at any time)");

  std::string validate_path;
  auto* validate_cmd =
      app.add_subcommand("validate", "Check a pipeline file, its plugins and configs without running it");
  validate_cmd->add_option("pipeline", validate_path, "Pipeline file (pipeline.yaml)")->required();

  auto* plugins_cmd =
      app.add_subcommand("plugins", "List the plugins found on the search paths, or describe one (plugins NAME)");
  plugins_query plugins_q;
  plugins_cmd->add_option("name", plugins_q.name, "A plugin to describe: schema, inputs and outputs, resources");
  plugins_cmd->add_option("--capability", plugins_q.capability,
                          "Only plugins with this capability (filter, decoder, ...) or taking or giving this media "
                          "type (video/rgb24, ...)");
  plugins_cmd->add_option("--output", plugins_q.output, "table, or json for scripts")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();

  worker_options worker_opts;
  node_options node_opts;
  auto* node_cmd = app.add_subcommand("node", "Run a cluster node until SIGINT or SIGTERM");
  node_cmd->add_option("--config", node_opts.config, "Node config (node.yaml)")->required();
  node_cmd->add_flag("--check", node_opts.check_only, "Check the config and exit");

  admin_options admin_opts;
  if (const char* t = std::getenv("TROUPE_TOKEN")) admin_opts.token = t;
  if (const char* ca = std::getenv("TROUPE_CA")) admin_opts.ca = ca;
  auto* status_cmd = app.add_subcommand("status", "Show the cluster's nodes and instances as a node sees them");
  status_cmd->add_option("--pipeline", admin_opts.pipeline, "Only this pipeline and its instances");
  status_cmd->add_option("--output", admin_opts.output, "table, or json for scripts")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  auto* deploy_cmd = app.add_subcommand(
      "deploy", "Run a pipeline through any node: each stage runs where its node/nodes field places it");
  deploy_cmd->add_option("pipeline", admin_opts.pipeline, "Pipeline file (pipeline.yaml)")->required();
  auto* scale_cmd =
      app.add_subcommand("scale", "Change a running stage's replicas, through any node that runs part of its pipeline");
  scale_cmd->add_option("stage", admin_opts.stage, "Stage")->required();
  scale_cmd->add_option("replicas", admin_opts.replicas, "Replicas")->required();
  scale_cmd->add_option("--pipeline", admin_opts.pipeline, "Pipeline name")->required();
  scale_cmd->add_option("--on", admin_opts.on,
                        "One of the nodes the stage runs on (replicas are per node; another node is refused)");
  auto* stop_cmd = app.add_subcommand("stop", "Drain and stop a pipeline on every node running it, through any node");
  stop_cmd->add_option("pipeline", admin_opts.pipeline, "Pipeline name")->required();
  auto* events_cmd = app.add_subcommand(
      "events",
      "Show what happened to the cluster's pipelines (instance states, restarts, quarantines, dead letters, "
      "scaling, reloads), through any node");
  events_cmd->add_flag("--follow,-f", admin_opts.follow, "Keep printing events as they happen");
  events_cmd->add_option("--pipeline", admin_opts.pipeline, "Only this pipeline's events");
  events_cmd->add_option("--since", admin_opts.since, "Only events of the last DURATION (30s, 10m, 2h)");
  events_cmd->add_option("--output", admin_opts.output, "table, or json (one object per line) for scripts")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  for (auto* cmd : {status_cmd, deploy_cmd, scale_cmd, stop_cmd, events_cmd}) {
    cmd->add_option("--node", admin_opts.node, "Admin address of the node (HOST:PORT; default: $TROUPE_NODE)")
        ->envname("TROUPE_NODE")
        ->required();
    cmd->add_option("--token", admin_opts.token,
                    "The cluster token (default: $TROUPE_TOKEN; visible to others in ps: prefer --token-file)");
    cmd->add_option("--token-file", admin_opts.token_file, "A file whose first line is the cluster token");
    cmd->add_option("--ca", admin_opts.ca,
                    "The cluster's CA (PEM): speak TLS to the node and check its certificate (default: $TROUPE_CA)");
    cmd->add_option("--tls-name", admin_opts.tls_name,
                    "The name the node's certificate must carry (default: the host of --node)");
  }

  conformance_options conf_opts;
  auto* conf_cmd = app.add_subcommand(
      "conformance", "Check a plugin against the plugin contract, embedded and isolated (exit 0: conformant)");
  conf_cmd->add_option("plugin", conf_opts.plugin, "Plugin name (found on the plugin paths)")->required();
  conf_cmd->add_option("--config", conf_opts.config, "KEY=VALUE config for the plugin (repeatable)")
      ->allow_extra_args(false);
  conf_cmd->add_option("--source", conf_opts.source, "Source plugin whose frames are the known inputs");
  conf_cmd->add_option("--frames", conf_opts.frames, "Known inputs (or a source's turns)")
      ->check(CLI::Range(1u, 10000u));

  new_plugin_options new_opts;
  auto* new_cmd = app.add_subcommand("new-plugin",
                                     "Make a folder for a new plugin, built outside Troupe against the installed SDK");
  new_cmd->add_option("name", new_opts.name, "Plugin name (lower-case letters, digits and _)")->required();
  new_cmd->add_flag("--filter{filter},--source{source},--sink{sink}", new_opts.kind,
                    "What the plugin is (default: --filter)");
  new_cmd->add_option("--dir", new_opts.dir, "Folder to make (default: ./NAME)");

  auto* worker_cmd = app.add_subcommand("worker", "Serve one isolated plugin instance (started by a node)");
  worker_cmd->group("");  // not for users: hidden from --help
  worker_cmd->add_option("--manifest", worker_opts.manifest)->required();
  worker_cmd->add_option("--generation", worker_opts.generation)->required();
  worker_cmd->add_option("--tag", worker_opts.tag);
  worker_cmd->add_option("--parent", worker_opts.parent)->required();
  worker_cmd->add_option("--region-bytes", worker_opts.region_bytes)->required();
  worker_cmd->add_option("--cgroup", worker_opts.cgroup);
  worker_cmd->add_option("--read", worker_opts.files.read);
  worker_cmd->add_option("--write", worker_opts.files.write);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return usage_error(app, e, argc, argv);
  }
  if (!setup_logging(common.log_level)) {
    fprintf(stderr, "troupe: --log-level: unknown level '%s' (expected trace, debug, info, warn, error or off)\n",
            common.log_level.c_str());
    return 2;
  }
  if (*worker_cmd) return serve_worker(worker_opts);
  if (*new_cmd) return new_plugin(new_opts);
  if (*run_cmd) return run(common, run_opts);
  if (*validate_cmd) return validate(common, validate_path);
  if (*plugins_cmd) return list_plugins(common, plugins_q);
  if (*conf_cmd) return conformance(common, conf_opts);
  if (*node_cmd) return run_node(common, node_opts);
  const bool admin = *status_cmd || *deploy_cmd || *scale_cmd || *stop_cmd || *events_cmd;
  if (admin && !admin_opts.token_file.empty()) {
    std::ifstream in(admin_opts.token_file);
    std::string line;
    if (!in || !std::getline(in, line) || line.empty()) {
      std::fprintf(stderr, "troupe: --token-file %s: expected a file whose first line is the cluster token\n",
                   admin_opts.token_file.c_str());
      return 2;
    }
    admin_opts.token = line;
  }
  if (admin && admin_opts.token.empty()) {
    std::fprintf(stderr,
                 "troupe: no cluster token: give --token-file FILE (or --token, or set TROUPE_TOKEN); the node "
                 "refuses admin calls without it\n");
    return 2;
  }
  if (*status_cmd) return cluster_status(common, admin_opts);
  if (*deploy_cmd) return cluster_deploy(common, admin_opts);
  if (*scale_cmd) return cluster_scale(common, admin_opts);
  if (*stop_cmd) return cluster_stop(common, admin_opts);
  if (*events_cmd) return cluster_events(common, admin_opts);
  return 2;
}
