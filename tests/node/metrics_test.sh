#!/usr/bin/env bash
# Scrapes a running `troupe run --metrics` over HTTP and checks the exposition with promtool.
# Usage: metrics_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

# A free port on loopback.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > slow.yaml <<'Y'
pipeline: metered
stages:
  - {name: src, plugin: testsrc, config: {width: 16, height: 16, count: 1500, rate: 100}}
  - {name: pass, plugin: passthrough}
  - {name: sink, plugin: checksum, config: {output: sum.txt}}
edges: ["src -> pass -> sink"]
Y
"$troupe" run slow.yaml --no-progress --metrics "127.0.0.1:$port" --timeout 30 >run.log 2>&1 &
pid=$!

# Scrape until the sink has counted frames (bounded: 10 s).
got=""
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$port/metrics" -o metrics.txt &&
     grep -qE '^troupe_instance_frames_in_total\{.*stage="sink".*\} [1-9]' metrics.txt; then
    got=yes; break
  fi
  sleep 0.1
done
check "metrics were served while the pipeline ran" test -n "$got"
check "promtool accepts the exposition" promtool check metrics <metrics.txt
for m in troupe_instance_frames_in_total troupe_instance_frames_completed_total troupe_instance_frames_filtered_total \
         troupe_instance_frames_abandoned_total troupe_instance_frames_out_total troupe_instance_bytes_in_total \
         troupe_instance_bytes_out_total troupe_instance_errors_total troupe_instance_restarts_total \
         troupe_instance_generation troupe_instance_processing_seconds_bucket troupe_instance_up; do
  check "exposes $m" grep -q "^$m{" metrics.txt
done
check "series carry node, pipeline, plugin, replica and stage labels" \
  grep -qE '^troupe_instance_generation\{node="local",pipeline="metered",plugin="passthrough",replica="0",stage="pass"\} 1' metrics.txt
check "no series has an instance label (Prometheus's own on scrape)" test "$(grep -c 'instance=' metrics.txt)" -eq 0
check "troupe_build_info names the version and the ABI" \
  grep -qE '^troupe_build_info\{node="local",abi="1.1",version="[0-9]+\.[0-9]+\.[0-9]+"\} 1$' metrics.txt

# Five clients that trickle a byte a second, and five that say nothing: scrapes go on.
python3 - "$port" <<'P' &
import socket, sys, time
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(10)]
for i in range(8):
    for s in socks[:5]:
        try:
            s.send(b"G")
        except OSError:
            pass
    time.sleep(1)
P
slow=$!
sleep 1
t0=$(date +%s%3N)
check "a scrape answers while ten clients stall" curl -sf -m 5 "http://127.0.0.1:$port/metrics" -o stalled.txt
echo "a scrape with ten stalled clients took $(($(date +%s%3N) - t0)) ms"
kill "$slow" 2>/dev/null; wait "$slow" 2>/dev/null
port_only=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=$(timeout 20 "$troupe" run slow.yaml --no-progress --metrics "$port_only" --timeout 1 2>&1)
check "--metrics PORT alone binds to loopback" contains "$out" "serving metrics on http://127.0.0.1:$port_only/metrics"

kill -INT "$pid"
wait "$pid"; rc=$?
pid=""
check "SIGINT drains the run (exit 0)" test "$rc" -eq 0
check "the summary says it was drained" grep -q "(drained on SIGINT)" run.log

verdict
