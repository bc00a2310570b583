#!/usr/bin/env bash
# The troupe command as a user runs it: plugins, validate, run (exit status, summary, report).
# Usage: cli_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
work=$(mktemp -d)
trap 'pkill -9 -f "run (endless|slow).yaml --no-progress --report" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
running() {  # running LOG: waits (20 s at most) until the run in LOG has started its pipeline
  for _ in $(seq 200); do grep -q "running: " "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
field() {  # field FILE INSTANCE NAME: a field of an instance in a --report
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(next(i for i in r["instances"] if i["instance"]==sys.argv[2])[sys.argv[3]])' "$@"
}

out=$("$troupe" plugins 2>&1)
for p in testsrc passthrough invert blur watermark detect checksum faulty; do
  check "plugins lists $p" contains "$out" "$p"
done
"$troupe" plugins --output json > plugins.json 2>/dev/null
check "plugins --output json lists the plugins with their config schema" python3 -c '
import json
d = json.load(open("plugins.json"))
p = {x["name"]: x for x in d["plugins"]}
assert {"testsrc", "blur", "checksum", "faulty"} <= set(p), sorted(p)
w = p["testsrc"]["config"]["width"]
assert w["type"] == "int" and w["default"] == "320" and w["min"] == 1, w
assert p["blur"]["abi"] == 1 and p["blur"]["library"].endswith("libtroupe_blur.so")
assert "filter" in p["blur"]["capabilities"] and d["problems"] == []
assert p["blur"]["enforce"] == "declared", p["blur"]'

out=$("$troupe" plugins blur 2>/dev/null); rc=$?
check "plugins NAME describes one plugin" test $rc -eq 0
check "... the media types it takes and the metadata it needs" contains "$out" "inputs:       video/rgb24; needs metadata width, height"
check "... what it gives" contains "$out" "outputs:      same (the input's type); metadata: the input's"
check "... its config schema with ranges and descriptions" grep -qE "radius +int \[0\.\.32\] +default 2 +Half-width of the box in pixels" <<<"$out"
check "... where it was found" contains "$out" "library:      $TROUPE_PLUGIN_PATH/blur/libtroupe_blur.so"
out=$("$troupe" plugins checksum 2>/dev/null)
check "plugins NAME says which config fields name files" grep -qE "output +string \(a file it writes\)" <<<"$out"
check "... and where an isolated worker may read and write" \
  contains "$out" "files:        reads the system's libraries, its folder; writes its scratch directory, the file 'output' names, the file 'frames_log' names"
"$troupe" plugins checksum --output json > checksum.json 2>/dev/null
check "... in JSON too" python3 -c '
import json
p = json.load(open("checksum.json"))
assert p["config"]["output"]["path"] == "write" and p["config"]["frames_log"]["path"] == "write", p["config"]
assert p["resources"]["filesystem"] == {"read": [], "write": []}, p["resources"]'
"$troupe" plugins convert --output json > convert.json 2>/dev/null
check "plugins NAME --output json gives its inputs and outputs" python3 -c '
import json
p = json.load(open("convert.json"))
assert p["outputs"] == {"types": ["video/{format}"], "gives": ["width", "height", "format"]}, p["outputs"]
assert p["inputs"]["needs"] == ["width", "height"] and p["resources"]["deadline_ms"] > 0, p'
out=$("$troupe" plugins --capability video/gray8 2>/dev/null)
check "plugins --capability finds plugins by a media type they take or give" contains "$out" "invert"
check "... including one whose output type its config chooses" contains "$out" "video_decode"
check "... and no other" not_contains "$out" "blur "
out=$("$troupe" plugins --capability decoder 2>/dev/null)
check "plugins --capability finds plugins by a capability word" test "$(grep -c decode <<<"$out")" -eq 2
out=$("$troupe" plugins --capability filtre 2>&1); rc=$?
check "an unknown capability is a usage error" test $rc -eq 2
check "... with the list and a guess" contains "$out" "'filtre' is not a capability (source, sink, filter"
check "... with a guess" contains "$out" "did you mean 'filter'?"
out=$("$troupe" plugins blurr 2>&1); rc=$?
check "plugins NAME of no plugin fails and guesses" test $rc -eq 1
check "... naming the nearest" contains "$out" "did you mean 'blur'?"

# Typed edges: gray frames into blur (RGB only) are refused before anything starts.
cat > gray.yaml <<'Y'
pipeline: gray
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 10}}
  - {name: gray, plugin: convert, config: {format: gray8}}
  - {name: blur, plugin: blur}
  - {name: sink, plugin: checksum, config: {output: gray.txt}}
edges: ["src -> gray -> blur -> sink"]
Y
out=$("$troupe" validate gray.yaml 2>&1); rc=$?
check "validate refuses an edge whose types do not meet" test $rc -eq 1
check "... naming the edge, both stages and both types" contains "$out" \
  "gray.yaml:7: edge 'gray -> blur': stage 'gray' (plugin convert) gives video/gray8, but stage 'blur' (plugin blur) takes video/rgb24"
out=$("$troupe" run gray.yaml --no-progress 2>&1); rc=$?
check "run refuses it too" test $rc -eq 1
check "... before any stage starts" not_contains "$out" "running: "
check "... and before the sink wrote anything" test ! -e gray.txt
sed -i 's/format: gray8/format: rgb24/' gray.yaml
out=$("$troupe" validate gray.yaml 2>&1); rc=$?
check "with RGB frames the same pipeline is valid" test $rc -eq 0
check "validate shows what travels on each edge" contains "$out" "  gray -> blur: video/rgb24"
out=$("$troupe" run gray.yaml --no-progress --fail-on-errors 2>&1); rc=$?
check "... and runs without a failed frame" test $rc -eq 0

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
check "validate says what the pipeline asks of a node (testsrc 1024, detect 512, checksum 512 MiB)" \
  contains "$out" "asks for memory 2048 MiB; this machine has memory "
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

# What the stages ask for must fit the machine: 1000 replicas of detect ask for 500 GiB.
sed 's/{name: det, plugin: detect, config: {cell: 8}}/{name: det, plugin: detect, replicas: 1000, config: {cell: 8}}/' good.yaml > huge.yaml
out=$("$troupe" run huge.yaml 2>&1); rc=$?
check "run refuses a pipeline past the machine's memory" test $rc -ne 0
check "... naming the stage and the shortfall" contains "$out" \
  "huge.yaml: node local cannot take pipeline 'tiny': stage 'det' (1000 replicas of 512 MiB): it needs 512000 MiB of memory"
check "... against this machine" contains "$out" "MiB (this machine)"
out=$("$troupe" validate huge.yaml 2>&1); rc=$?
check "validate takes it (another machine may have room), and says what it asks for" bash -c \
  "[ $rc -eq 0 ] && grep -q 'asks for memory 513536 MiB; this machine has memory ' <<<\"\$1\"" _ "$out"
check "... and that this machine has not" contains "$out" "(node local cannot take pipeline 'tiny': stage 'det'"

# GPUs: a plugin whose manifest needs one is admitted only where a GPU is free. (This machine's
# GPUs: its /dev/nvidiaN devices, else its /dev/dri/renderD* nodes.)
mkdir -p gpu/detect && cp "$TROUPE_PLUGIN_PATH"/detect/* gpu/detect/
sed -i 's/^resources:$/resources:\n  gpus: 1/' gpu/detect/plugin.yaml
gpus=$(ls /dev 2>/dev/null | grep -cE '^nvidia[0-9]+$'); [ "$gpus" -gt 0 ] || gpus=$(ls /dev/dri 2>/dev/null | grep -c '^renderD')
out=$("$troupe" plugins detect --plugin-path gpu 2>&1)
check "plugins NAME says how many GPUs a replica needs" contains "$out" "gpus:         1 per replica"
out=$("$troupe" validate good.yaml --plugin-path gpu 2>&1); out2=$out
check "validate counts the GPUs a pipeline asks for" contains "$out" "asks for memory 2048 MiB, 1 GPU; this machine has"
out=$("$troupe" run good.yaml --plugin-path gpu --no-progress 2>&1); rc=$?
if [ "$gpus" -eq 0 ]; then
  check "run refuses a stage that needs a GPU on a machine without one" bash -c \
    "[ $rc -ne 0 ] && grep -q \"stage 'det' (1 replica of 512 MiB and 1 GPU): it needs 1 GPU, 0 free of 0 (this machine)\" <<<\"\$1\"" _ "$out"
  check "... and validate says it has none" contains "$out2" "this machine has memory "
  check "... (no GPUs)" grep -qE "this machine has memory [0-9]+ MiB, [0-9.]+ cores, no GPUs" <<<"$out2"
else
  check "run takes a stage that needs a GPU on a machine with $gpus" test $rc -eq 0
fi
sed 's/{name: det, plugin: detect, config: {cell: 8}}/{name: det, plugin: detect, resources: {gpus: 0}, config: {cell: 8}}/' good.yaml > stagegpu.yaml
out=$("$troupe" validate stagegpu.yaml --plugin-path gpu 2>&1); rc=$?
check "a stage cannot say how many GPUs its plugin needs" bash -c \
  "[ $rc -ne 0 ] && grep -q \"field 'resources.gpus': how many GPUs a replica needs is its plugin's to say\" <<<\"\$1\"" _ "$out"

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
check "the JSON report says ok" python3 -c 'import json,sys; assert json.load(open("report.json"))["ok"] is True'
# Many instances: one line per stage, with the counts of its replicas added up; --instances
# shows each.
cat > many.yaml <<Y
pipeline: many
stages:
  - {name: src, plugin: testsrc, config: {width: 8, height: 8, count: 50, streams: 2}}
  - {name: a, plugin: passthrough, replicas: 40, routing: round_robin}
  - {name: b, plugin: faulty, replicas: 30, config: {action: error, every: 7}}
  - {name: sink, plugin: checksum, config: {output: many-sum.txt}}
edges: ["src -> a -> b -> sink"]
Y
out=$("$troupe" run many.yaml --no-progress 2>/dev/null)
check "past 64 instances the summary shows one line per stage" \
  grep -qE "^a \(40\) +passthrough +embedded +stopped +1 +100 +100 " <<<"$out"
check "... its replicas' counts added up" grep -qE "^b \(30\) +faulty +embedded +stopped +1 +100 +88 +0 +12 " <<<"$out"
check "... and says how to see each" contains "$out" "72 instances, one line per stage (troupe run --instances shows each)"
out=$("$troupe" run many.yaml --no-progress --instances 2>/dev/null)
check "--instances shows each instance" test "$(grep -cE '^(a|b)(#[0-9]+)? ' <<<"$out")" -eq 70
# The report's names are the table's; its counts are integers.
check "the report counts as the table does" test "$(field report.json sink in)" = 36 -a "$(field report.json src out)" = 36
check "the report has the time each instance spent in plugin calls, a source's included" python3 -c '
import json; r = json.load(open("report.json"))
assert all(i["processing_seconds"] > 0 for i in r["instances"]), r["instances"]'
check "the report's counts are integers" python3 -c '
import json
r = json.load(open("report.json"))
i = r["instances"][0]
for k in ("gen", "in", "done", "filt", "fail", "dead", "resent", "held", "out", "restarts", "stale", "dups", "bytes_in", "bytes_out"):
    assert type(i[k]) is int, k
assert type(r["sinks_took"]) is int and r["sinks_took"] == 36'
out=$("$troupe" run good.yaml --no-progress --report "$work/no/such/dir/r.json" 2>&1); rc=$?
check "an unwritable --report fails the run before it starts" test $rc -eq 1
check "... naming the path" contains "$out" "--report $work/no/such/dir/r.json: cannot write it: No such file or directory"
check "... and nothing ran" test "$(grep -c "running:" <<<"$out")" -eq 0

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
check "the lost calls were restarts" test "$(field hang.json f restarts)" = 2 -a "$(field hang.json f gen)" = 3 -a \
  "$(field hang.json f state)" = stopped -a "$(field hang.json f failure)" = none
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

check "a run with a dead letter fails with --fail-on-errors (exit 3)" sh -c \
  "'$troupe' run poison.yaml --no-progress --fail-on-errors >/dev/null 2>&1; test \$? -eq 3"

# Ctrl-C drains: the sources end their streams and everything they made reaches the sink.
# The run has a process group of its own, and the signal goes to all of it, as a terminal's
# Ctrl-C does: the isolated stage's worker gets it too, and serves on.
cat > endless.yaml <<'Y'
pipeline: endless
stages:
  - {name: src, plugin: testsrc, config: {width: 8, height: 8, count: 1000000, rate: 200}}
  - {name: f, plugin: passthrough, mode: isolated}
  - {name: sink, plugin: checksum, config: {output: e.txt}}
edges: ["src -> f -> sink"]
Y
# interrupt NAME N: runs NAME.yaml (report NAME.json, log NAME.log) in a process group of its
# own, as a terminal does, and sends the whole group N SIGINTs half a second apart once it has
# run for a second; sets rc. A guard kills it after 60 s (GNU timeout would take the signals).
interrupt() {
  setsid "$troupe" run "$1.yaml" --no-progress --report "$1.json" > "$1.log" 2>&1 &
  local pid=$! guard
  (sleep 60; kill -9 -- -$pid 2>/dev/null) &
  guard=$!
  running "$1.log"
  sleep 1
  for ((i = 0; i < $2; i++)); do
    [ "$i" -gt 0 ] && sleep 0.5
    kill -INT -- -$pid
  done
  wait $pid; rc=$?
  pkill -P $guard 2>/dev/null; kill $guard 2>/dev/null  # and its sleep, which would hold the output open
}
interrupt endless 1
check "SIGINT drains and the run exits 0" test $rc -eq 0
check "the summary says the run was drained" grep -q "^pipeline 'endless' finished in .* (drained on SIGINT)" endless.log
made=$(field endless.json src out)
check "every frame made before the drain reached the sink" grep -q "^total frames $made bytes .* duplicates 0" e.txt
check "... and the source had made some" test "$made" -gt 50
check "the isolated worker was not lost to the signal" test "$(field endless.json f restarts)" = 0 -a \
  "$(field endless.json f gen)" = 1
# A second SIGINT stops at once: a slow stage holds frames a drain would wait for.
cat > slow.yaml <<'Y'
pipeline: slow
stages:
  - {name: src, plugin: testsrc, config: {width: 8, height: 8, count: 1000000}}
  - {name: f, plugin: faulty, config: {action: slow, every: 1, slow_ms: 50}}
  - {name: sink, plugin: checksum, config: {output: s.txt}}
edges: ["src -> f -> sink"]
Y
interrupt slow 2
check "a second SIGINT stops without draining (exit 130)" test $rc -eq 130
check "the summary says so" grep -q "^pipeline 'slow' FAILED in .*: stopped on a second SIGINT, without draining" slow.log
check "the report names the signal" python3 -c 'import json; assert json.load(open("slow.json"))["cut_by"] == "SIGINT"'

out=$("$troupe" run good.yaml --no-progress --log-level warn 2>&1); rc=$?
check "global options may follow the subcommand" test $rc -eq 0
check "--log-level warn hides info lines" test "$(grep -c ' info ' <<<"$out")" -eq 0
out=$("$troupe" --log-level nonsense run good.yaml 2>&1); rc=$?
check "an unknown log level is refused" test $rc -eq 2
out=$("$troupe" run --help 2>&1)
check "run --help describes --metrics" contains "$out" "--metrics"

verdict
