#!/usr/bin/env bash
# Controlling a running `troupe run`: scaling a stage from the terminal (a command on
# stdin) and by signal (SIGUSR1 adds a replica of --scale-stage, SIGUSR2 removes one), and
# reloading it with a new config: the sink still gets every frame once.
# Usage: scale_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
work=$(mktemp -d)
node=""
cleanup() {
  [ -n "$node" ] && kill -9 "$node" 2>/dev/null
  exec 3>&- 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

cat > scale.yaml <<Y
pipeline: scale
window: 4
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 400, streams: 2}}
  - {name: f, plugin: faulty, config: {action: slow, every: 1, slow_ms: 8}}
  - {name: sink, plugin: checksum, config: {output: $work/sum.txt, frames_log: $work/frames.txt}}
edges: ["src -> f -> sink"]
Y

mkfifo commands
trap '' PIPE  # a run that ended early fails the checks below, not this script
"$troupe" run scale.yaml --timeout 60 --scale-stage f --no-progress --events events.jsonl < commands > out.txt 2> err.txt &
node=$!
exec 3> commands  # held open: the run reads commands from it
echo "scale nope 2" >&3
sleep 0.5
echo "scale f 3" >&3
sleep 0.6
kill -USR2 "$node"   # 3 -> 2
sleep 0.6
kill -USR1 "$node"   # 2 -> 3 (a fresh replica, f#3)
sleep 0.5
echo "pause f" >&3
sleep 0.3
echo "resume f" >&3
echo "reload f slow_ms=2" >&3  # live config: each replica's next generation takes it
wait "$node"; rc=$?
node=""
out=$(cat out.txt); err=$(cat err.txt)
echo "$out"
check "the run finishes" [ "$rc" -eq 0 ]
check "the terminal command scales f" contains "$err" "scaling stage 'f' to 3 replicas"
check "SIGUSR2 takes one away" contains "$err" "scaling stage 'f' to 2 replicas"
check "a replica scaled away is drained, then stopped" contains "$err" "scaled away"
check "a bad command is refused by name" contains "$err" "no stage named 'nope'"
check "the summary lists the replicas" grep -qE "^f#2 +faulty" <<<"$out"
check "SIGUSR1 adds a fresh replica" grep -qE "^f#3 +faulty" <<<"$out"
f_in=$(awk '$1 ~ /^f(#[0-9]+)?$/ {n += $6} END {print n}' <<<"$out")
check "the replicas of f took 800 frames between them" [ "$f_in" = 800 ]
lines=$(wc -l < frames.txt)
unique=$(awk '{print $1, $2, $3}' frames.txt | sort -u | wc -l)
check "reload takes the new config" contains "$err" "stage 'f' reloaded"
check "pause and resume from the terminal" bash -c "grep -q \"stage 'f' paused\" <<<\"\$0\" && grep -q \"stage 'f' resumed\" <<<\"\$0\"" "$err"
check "--events wrote every change as a JSON line, numbered in order" python3 -c '
import json
ev = [json.loads(l) for l in open("events.jsonl")]
assert [e["seq"] for e in ev] == list(range(1, len(ev) + 1)), [e["seq"] for e in ev]
scales = [e["detail"] for e in ev if e["kind"] == "scale"]
assert scales == ["from 1 to 3 replicas", "from 3 to 2 replicas", "from 2 to 3 replicas"], scales
assert [e["state"] for e in ev if e["kind"] == "reload"] == ["reloading", "reloaded"], ev
assert [e["state"] for e in ev if e["kind"] == "pause"] == ["paused", "resumed"], ev
assert any(e["kind"] == "instance" and e.get("state") == "scaled_away" and e["stage"] == "f" for e in ev)
assert [e["state"] for e in ev if e["kind"] == "pipeline"] == ["running", "finished", "stopped"], ev
assert all(e["pipeline"] == "scale" and e["node"] == "local" for e in ev)'

check "the sink got every frame (800)" [ "$lines" -eq 800 ]
check "the sink got no frame twice" [ "$unique" -eq 800 ]
verdict
