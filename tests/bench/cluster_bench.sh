#!/usr/bin/env bash
# What users of a cluster wait for, measured on real processes on 127.0.0.1: an etcd member and
# three `troupe node`s (each under a uid of its own, so that nftables can cut one off), a
# pipeline file with real source and sink plugins (src and sink on n1, mid on any node).
# - Throughput: frames/s of the deployed pipeline from deploy to finished, beside `troupe run`
#   of the same file on one node in the same run (the baseline).
# - Recovery: for each lease, from `kill -9` of the node running mid, and from cutting it off
#   with nftables, to mid running on another node with frames moving again, as a multiple of
#   the lease; and the sink's frames/s over 2 s before the fault and 2 s after recovery.
# Run by hand, as root: tests/bench/cluster_bench.sh build/troupe build/plugins
set -uo pipefail
root=$(cd "$(dirname "$0")/../node" && pwd)
source "$root/check.sh"
troupe="$(realpath "$1")"
export TROUPE_PLUGIN_PATH="$(realpath "$2")"
source "$root/nodes.sh"
free_ports 24
start_etcd 1 >/dev/null
now_ms() { date +%s%3N; }
start_nodes() {  # start_nodes LEASE_MS
  for i in 1 2 3; do run_as=$(node_uid "$i") start_node "n$i" "$i" "$1"; done
  wait_for 15 node_up n3 1 || { echo "the nodes did not come up"; exit 1; }
}
stop_nodes() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  pids=()
  etcdctl --endpoints "$etcd_endpoints" del --prefix /troupe/ >/dev/null  # the next run starts afresh
}
pipeline() {  # pipeline NAME COUNT
  cat <<Y
pipeline: $1
stages:
  - {name: src, plugin: testsrc, node: n1, config: {width: 64, height: 48, count: $2, streams: 4}}
  - {name: mid, plugin: invert, node: any}
  - {name: sink, plugin: checksum, node: n1, config: {output: $work/out/$1-sum.txt}}
edges: ["src -> mid -> sink"]
Y
}
status() { "$troupe" status --node "127.0.0.1:${port[9]}" --token secret 2>/dev/null; }
finished() { status | grep -qE "^$1 +finished "; }
sink_in() { status | awk -v p="$1" '$1 == p && $2 == "sink" {print $7}'; }
rate() {  # rate PIPELINE: the sink's frames/s over 2 s
  local a b t0 t1
  a=$(sink_in "$1"); t0=$(now_ms); sleep 2; b=$(sink_in "$1"); t1=$(now_ms)
  echo $(((b - a) * 1000 / (t1 - t0)))
}

per_stream=2500
frames=$((per_stream * 4))
echo "== throughput: $frames frames of 64x48 (4 streams), src and sink on n1, mid on another node"
pipeline single $per_stream > single.yaml
t0=$(now_ms); "$troupe" run single.yaml > single.out 2>&1; t1=$(now_ms)
single_fps=$((frames * 1000 / (t1 - t0)))
start_nodes 3000
pipeline cluster $per_stream > cluster.yaml
t0=$(now_ms)
"$troupe" deploy cluster.yaml --node "127.0.0.1:${port[9]}" --token secret >/dev/null
wait_for 120 finished cluster || { echo "the deployed pipeline did not finish"; exit 1; }
t1=$(now_ms)
cluster_fps=$((frames * 1000 / (t1 - t0)))
printf "%-44s %10s\n" "path" "frames/s"
printf "%-44s %10d\n" "troupe run (one process)" "$single_fps"
printf "%-44s %10d   %d%% of troupe run\n" "deploy on 3 nodes (deploy to finished)" "$cluster_fps" \
  $((cluster_fps * 100 / single_fps))
cmp -s <(grep '^stream' out/single-sum.txt) <(grep '^stream' out/cluster-sum.txt) && echo "digests equal" ||
  echo "DIGESTS DIFFER"
stop_nodes

echo "== recovery: the node running mid dies or is cut off; until mid's frames move on another node"
printf "%-10s %-10s %14s %9s %14s %14s\n" "fault" "lease" "recovered in" "of lease" "fr/s before" "fr/s after"
run=0
for fault in kill partition; do
  for lease in 1000 2000 4000; do
    run=$((run + 1))
    start_nodes "$lease"
    name="recover$run"
    pipeline "$name" 100000000 > "$name.yaml"
    if ! "$troupe" deploy "$name.yaml" --node "127.0.0.1:${port[9]}" --token secret >/dev/null; then
      printf "%-10s %-10s %14s\n" "$fault" "${lease} ms" "not deployed"
      stop_nodes
      continue
    fi
    wait_for 10 bash -c "$(declare -f status); troupe=$troupe; port=(${port[*]}); status | grep -qE '^$name +mid .* running +1 +[1-9]'"
    before=$(rate "$name")
    on=$(status | awk -v p="$name" '$1 == p && $2 == "mid" {print $3}')
    idx=${on#n}
    t0=$(now_ms)
    if [ "$fault" = kill ]; then
      kill -9 "${pids[$((idx - 1))]}"
      wait "${pids[$((idx - 1))]}" 2>/dev/null
    else
      cut_node "$idx"
    fi
    # mid runs again elsewhere, and its count of frames grows (read from the other nodes'
    # /metrics: a status call may wait for the node that is cut off).
    mid_elsewhere() {
      local i s=0 v
      for i in 1 2 3; do
        [ "$i" = "$idx" ] && continue
        v=$(curl -s -m 1 "127.0.0.1:${port[$((i + 12))]}/metrics" |
          awk -v p="$name" '/^troupe_instance_frames_in_total\{/ && index($0, "pipeline=\"" p "\"") && index($0, "stage=\"mid\"") {s += $2} END {print s + 0}')
        s=$((s + ${v%.*}))
      done
      echo "$s"
    }
    base=$(mid_elsewhere)
    moved=""
    while [ $(($(now_ms) - t0)) -lt 60000 ]; do
      if [ "$(mid_elsewhere)" -gt "$base" ]; then moved=$(now_ms); break; fi
      sleep 0.02
    done
    if [ -n "$moved" ]; then
      ms=$((moved - t0))
      after=$(rate "$name")
      printf "%-10s %-10s %11d ms %8sx %14d %14d\n" "$fault" "${lease} ms" "$ms" \
        "$(awk -v a="$ms" -v b="$lease" 'BEGIN {printf "%.2f", a / b}')" "$before" "$after"
    else
      printf "%-10s %-10s %14s\n" "$fault" "${lease} ms" "not in 60 s"
    fi
    [ "$fault" = partition ] && heal_node "$idx"
    stop_nodes
  done
done
