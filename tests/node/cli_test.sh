#!/usr/bin/env bash
# The troupe command as a user runs it: plugins, validate, run (exit status, summary, report).
# Usage: cli_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

out=$("$troupe" plugins 2>&1)
for p in testsrc passthrough invert blur watermark detect checksum faulty; do
  check "plugins lists $p" contains "$out" "$p"
done

cat > good.yaml <<'Y'
pipeline: tiny
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 12, streams: 3}}
  - {name: det, plugin: detect, config: {cell: 8}}
  - {name: sink, plugin: checksum, config: {output: sum.txt}}
edges: ["src -> det -> sink"]
Y
out=$("$troupe" validate good.yaml 2>&1); rc=$?
check "validate accepts a good pipeline" test $rc -eq 0
check "validate prints the start order" contains "$out" "start order: sink, det, src"
check "validate says embedded stages' resources are not enforced" contains "$out" \
  "embedded stages run in the node's process, where their manifests' resources are not enforced: src, det, sink"

# An isolated stage may be held to less than its plugin grants, never to more; an embedded one
# cannot be held at all.
sed 's/{name: det, plugin: detect, config: {cell: 8}}/{name: det, plugin: detect, mode: isolated, resources: {memory_mb: 9999}, config: {cell: 8}}/' good.yaml > loose.yaml
out=$("$troupe" validate loose.yaml 2>&1); rc=$?
check "validate refuses a stage looser than its plugin" test $rc -ne 0
check "the error names the stage and the limit" contains "$out" "stage 'det': resources.memory_mb 9999 is above the plugin's limit of 512"
sed 's/{name: det, plugin: detect, config: {cell: 8}}/{name: det, plugin: detect, resources: {memory_mb: 64}, config: {cell: 8}}/' good.yaml > embedded.yaml
out=$("$troupe" validate embedded.yaml 2>&1); rc=$?
check "validate refuses resources on an embedded stage" test $rc -ne 0
check "the error says why" contains "$out" "stage 'det': runs embedded, in the node's process, where resources are not enforced"

cat > bad.yaml <<'Y'
pipeline: bad
stages:
  - {name: src, plugin: testsrc}
  - name: blur
    plugin: blur
    config: {radius: 99}
  - {name: sink, plugin: checksum}
edges: ["src -> blur -> sink"]
Y
out=$("$troupe" validate bad.yaml 2>&1); rc=$?
check "validate refuses a config out of range" test $rc -ne 0
check "the error names file, line and field" contains "$out" "bad.yaml:6: config field 'radius'"

out=$("$troupe" run good.yaml --no-progress --report report.json 2>&1); rc=$?
check "run exits 0 on a clean finish" test $rc -eq 0
check "run prints a summary" contains "$out" "pipeline 'tiny' finished"
check "the summary counts the sink's frames" contains "$out" "sinks took 36 frames"
check "the checksum plugin wrote its summary" grep -q "total frames 36" sum.txt
check "the JSON report says ok" grep -q '"ok":true' report.json

cat > failing.yaml <<'Y'
pipeline: failing
restart: {max_restarts: 1, backoff_initial_ms: 5, backoff_max_ms: 5}
stages:
  - {name: src, plugin: testsrc, config: {width: 8, height: 8, count: 5}}
  - {name: f, plugin: faulty, config: {fail_start: true}}
  - {name: sink, plugin: checksum, config: {output: f.txt}}
edges: ["src -> f -> sink"]
Y
out=$("$troupe" run failing.yaml --no-progress 2>&1); rc=$?
check "run exits non-zero when a stage is quarantined" test $rc -ne 0
check "the summary says why" contains "$out" "quarantined"
check "the summary shows start_failed" contains "$out" "configured to fail start"

cat > hang.yaml <<'Y'
pipeline: hang
restart: {backoff_initial_ms: 5, backoff_max_ms: 10}
stages:
  - {name: src, plugin: testsrc, config: {width: 8, height: 8, count: 6}}
  - {name: f, plugin: faulty, config: {action: hang, every: 3}, deadline_ms: 200}
  - {name: sink, plugin: checksum, config: {output: h.txt}}
edges: ["src -> f -> sink"]
Y
# Each generation hangs for an hour on its 3rd frame: the deadline makes it lost, the
# frame goes to the next generation, and the run ends although hung threads remain.
out=$(timeout 60 "$troupe" run hang.yaml --no-progress --report hang.json 2>&1); rc=$?
check "a run with hung plugin calls still finishes (exit 0)" test $rc -eq 0
check "every frame reached the sink once" grep -q "total frames 6 bytes 1152 duplicates 0" h.txt
check "the lost calls were restarts" grep -q '"stage":"f","replica":0,"plugin":"faulty","mode":"embedded","state":"stopped","failure":"none","quarantined":false,"generation":3' hang.json
check "the log names the deadline" contains "$out" "deadline of 200 ms"

cat > poison.yaml <<'Y'
pipeline: poison
dead_letter_after: 2
dead_letters: dead.jsonl
restart: {backoff_initial_ms: 2, backoff_max_ms: 5}
stages:
  - {name: src, plugin: testsrc, config: {width: 8, height: 8, count: 8}}
  - {name: f, plugin: faulty, config: {action: throw, on_seq: 5}}
  - {name: sink, plugin: checksum, config: {output: p.txt}}
edges: ["src -> f -> sink"]
Y
out=$("$troupe" run poison.yaml --no-progress 2>&1); rc=$?
check "a run with a dead letter still finishes (exit 0)" test $rc -eq 0
check "the summary lists the dead letter" contains "$out" "1 dead letter, recorded in dead.jsonl:"
check "the summary names the frame and the error" contains "$out" "stage f (faulty): stream 0 seq 5 part 0, lost 2 times: uncaught exception: faulty: exception on stream 0 seq 5"
check "the dead letter file has the record" grep -q '"seq":5,"part":0,"stage":"f","plugin":"faulty","failure":"lost"' dead.jsonl
check "the other frames reached the sink" grep -q "total frames 7 " p.txt

out=$("$troupe" run good.yaml --no-progress --log-level warn 2>&1); rc=$?
check "global options may follow the subcommand" test $rc -eq 0
check "--log-level warn hides info lines" test "$(grep -c ' info ' <<<"$out")" -eq 0
out=$("$troupe" --log-level nonsense run good.yaml 2>&1); rc=$?
check "an unknown log level is refused" test $rc -eq 2
out=$("$troupe" run --help 2>&1)
check "run --help describes --metrics" contains "$out" "--metrics"

verdict
