#!/usr/bin/env bash
# The user's path across two nodes, whole pipeline: an etcd member and two `troupe node`s on
# 127.0.0.1, and the pipeline file of scripts/bench's table (testsrc -> passthrough x3 ->
# checksum, small frames on 2 streams) deployed with the middle stage on n2 and the rest on
# n1, so that every frame crosses to n2 and back. Prints the frames/s from deploy to finished
# (best of 3), beside `troupe run` of the same stages in one process in the same run.
# Usage: nodes_row.sh TROUPE PLUGIN_DIR FRAMES
set -uo pipefail
root=$(cd "$(dirname "$0")/../node" && pwd)
source "$root/check.sh"
troupe="$(realpath "$1")"
export TROUPE_PLUGIN_PATH="$(realpath "$2")"
frames=$3
source "$root/nodes.sh"
free_ports 24
start_etcd 1 >/dev/null
for i in 1 2; do start_node "n$i" "$i" 3000; done
wait_for 15 node_up n2 1 || { echo "nodes_row: the nodes did not come up" >&2; exit 1; }
now_ms() { date +%s%3N; }

# bench NAME PLACEMENT-OF-B PLACEMENT-OF-THE-REST: the pipeline file.
bench() {
  cat <<Y
pipeline: $1
stages:
  - {name: src, plugin: testsrc$3, config: {width: 8, height: 8, count: $((frames / 2)), streams: 2}}
  - {name: a, plugin: passthrough$3}
  - {name: b, plugin: passthrough$2}
  - {name: c, plugin: passthrough$3}
  - {name: sink, plugin: checksum$3, config: {output: "$work/out/$1-sum.txt"}}
edges: ["src -> a -> b -> c -> sink"]
Y
}
finished() { "$troupe" status --node "127.0.0.1:${port[9]}" --token secret --pipeline "$1" 2>/dev/null |
  grep -qE "^$1 +finished "; }

bench single "" "" > single.yaml
best_single=0
for _ in 1 2 3; do
  t0=$(now_ms)
  "$troupe" run --no-progress single.yaml > single.out 2>&1 || { cat single.out >&2; exit 1; }
  t1=$(now_ms)
  rate=$((frames * 1000 / (t1 - t0)))
  [ "$rate" -gt "$best_single" ] && best_single=$rate
done
best=0
for k in 1 2 3; do
  bench "across$k" ", node: n2" ", node: n1" > "across$k.yaml"
  t0=$(now_ms)
  "$troupe" deploy "across$k.yaml" --node "127.0.0.1:${port[9]}" --token secret > deploy.out 2>&1 ||
    { cat deploy.out >&2; exit 1; }
  end=$((SECONDS + 600))
  until finished "across$k"; do
    [ $SECONDS -ge $end ] && { echo "nodes_row: across$k did not finish" >&2; exit 1; }
    sleep 0.02
  done
  t1=$(now_ms)
  rate=$((frames * 1000 / (t1 - t0)))
  [ "$rate" -gt "$best" ] && best=$rate
  diff -q <(grep '^stream' "out/across$k-sum.txt") <(grep '^stream' out/single-sum.txt) >/dev/null ||
    { echo "nodes_row: the sink's digests differ from troupe run's" >&2; exit 1; }
done
echo "$best $best_single"
