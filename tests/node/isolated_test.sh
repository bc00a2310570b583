#!/usr/bin/env bash
# Isolated workers as a user meets them: a segfaulting plugin does not take `troupe run`
# down, and no worker outlives a node killed with SIGKILL.
# Usage: isolated_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
# Under the sanitizers, a worker's segfault stays a signal rather than a sanitizer report.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:handle_segv=0:handle_abort=0"
work=$(mktemp -d)
node=""
cleanup() {
  [ -n "$node" ] && kill -9 "$node" 2>/dev/null
  pkill -9 -f "$work" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
alive() { kill -0 "$1" 2>/dev/null; }

cat > crash.yaml <<Y
pipeline: crash
restart: {max_restarts: 20, backoff_initial_ms: 2, backoff_max_ms: 10}
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 20}}
  - {name: f, plugin: faulty, mode: isolated, config: {action: segfault, every: 6}}
  - {name: sink, plugin: checksum, config: {output: $work/sum.txt}}
edges: ["src -> f -> sink"]
Y
out=$(timeout 60 "$troupe" run --no-progress crash.yaml 2>&1); rc=$?
check "a segfaulting isolated plugin leaves the run successful" test $rc -eq 0
check "the loss names the signal" contains "$out" "killed by SIGSEGV (Segmentation fault)"
check "the summary shows the isolated instance with its restarts" \
  grep -qE '^f +faulty +isolated +stopped +4 +([0-9]+ +){8}3 ' <<<"$out"
check "every frame reached the sink once" grep -q "^total frames 20 bytes 30720 duplicates 0" sum.txt

# A node killed with SIGKILL takes its workers with it, even one stuck in plugin code
# (b hangs on frame 3), which would never read the closed socket.
cat > slow.yaml <<Y
pipeline: slow
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 100000, rate: 100}}
  - {name: a, plugin: passthrough, mode: isolated}
  - {name: b, plugin: faulty, mode: isolated, deadline_ms: 600000, config: {action: hang, on_seq: 3}}
  - {name: sink, plugin: checksum, config: {output: $work/slow.txt}}
edges: ["src -> a -> b -> sink"]
Y
"$troupe" run --no-progress slow.yaml >node.log 2>&1 &
node=$!
workers=""
for _ in $(seq 100); do
  workers=$(pgrep -P "$node" -f "troupe.* worker" | tr '\n' ' ')
  [ "$(wc -w <<<"$workers")" -ge 2 ] && break
  sleep 0.1
done
check "the node runs one worker per isolated instance" test "$(wc -w <<<"$workers")" -eq 2
kill -9 "$node"
wait "$node" 2>/dev/null
node=""
left=""
for _ in $(seq 50); do
  left=""
  for w in $workers; do alive "$w" && left="$left $w"; done
  [ -z "$left" ] && break
  sleep 0.1
done
check "no worker outlives its node (left:$left)" test -z "$left"

verdict
