#!/usr/bin/env bash
# A pipeline placed across three real `troupe node` processes on 127.0.0.1: deployed through
# one node, each node runs its stages, frames cross over the data links, and the sink's
# per-stream digests equal those of `troupe run` of the same file on one node. A placement
# the cluster cannot run is refused before anything starts, naming the stage and node. A
# long-running pipeline across the nodes is stopped through one node: every node drains,
# and the sink takes every frame the source made. Link metrics are exposed and valid.
# Usage: placement_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
repo=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/nodes.sh"
free_ports 24
start_etcd 1
admin="--node 127.0.0.1:${port[9]} --token secret"
status() { "$troupe" status $admin 2>&1; }
start_node n1 1
start_node n2 2
start_node n3 3
check "the three nodes see each other" wait_for 10 bash -c \
  "s=\$(\"$troupe\" status $admin); grep -qE '^n2 +up ' <<<\"\$s\" && grep -qE '^n3 +up ' <<<\"\$s\""

# The demo, placed as examples/cluster.yaml places it, on smaller frames.
sed -e 's/width: 1280, height: 720, count: 120/width: 320, height: 180, count: 60/' \
    -e "s#output: cluster-checksum.txt#output: $work/cluster-sum.txt#" "$repo/examples/cluster.yaml" > placed.yaml
out=$("$troupe" deploy placed.yaml $admin 2>&1)
echo "$out"
check "deploy places the pipeline across the nodes" contains "$out" "pipeline 'cluster-demo' deployed"
check "the pipeline runs to its end on every node" wait_for 30 bash -c \
  "[ \$(\"$troupe\" status $admin | grep -cE '^cluster-demo .* stopped ') -eq 6 ]"
out=$(status)
echo "$out"
check "source and sink ran on n1" bash -c "grep -qE '^cluster-demo +source +n1 ' <<<'$out' && grep -qE '^cluster-demo +checksum +n1 ' <<<'$out'"
check "invert ran on n2" grep -qE '^cluster-demo +invert +n2 ' <<<"$out"
check "blur ran on n2 and on n3, each took frames" bash -c \
  "grep -qE '^cluster-demo +blur +n2 +embedded +stopped +1 +[1-9]' <<<'$out' && grep -qE '^cluster-demo +blur +n3 +embedded +stopped +1 +[1-9]' <<<'$out'"
check "watermark (any node) ran on the node with the fewest of its stages, n3" grep -qE '^cluster-demo +watermark +n3 ' <<<"$out"
sed "s#$work/cluster-sum.txt#$work/single-sum.txt#" placed.yaml > single.yaml
timeout 60 "$troupe" run single.yaml > single.out 2>&1
check "the single-node run completes" grep -q "total frames 120" single-sum.txt
cat cluster-sum.txt
check "the sink's digests across nodes equal the single-node run's" diff cluster-sum.txt single-sum.txt
check "no frame reached the sink twice" grep -q "total frames 120 bytes [0-9]* duplicates 0" cluster-sum.txt

metrics=$(curl -s -m 5 "127.0.0.1:${port[13]}/metrics")
# Every frame once, or more if a link was cut under load and frames were sent again (the
# receiver drops what it has already seen: the digests above show it).
sent=$(grep -E "^troupe_link_frames_sent_total\{node=\"n1\",peer=\"n2\"\} " <<<"$metrics" | awk '{print $2}')
echo "n1 sent ${sent:-no} frames to n2"
check "metrics: n1 sent every frame to n2 (the link's peer by name)" awk -v v="${sent:-0}" 'BEGIN { exit !(v >= 120) }'
check "metrics: n1 took frames from n3" grep -qE \
  "troupe_link_frames_received_total\{node=\"n1\",peer=\"n3\"\} 120" <<<"$metrics"
check "metrics: the link is up" grep -qE "troupe_link_up\{node=\"n1\",peer=\"n2\"\} 1" <<<"$metrics"
echo "$metrics" > metrics.txt
check "metrics pass promtool" bash -c "promtool check metrics < metrics.txt"

# Placements the cluster cannot run: refused, naming what is wrong, and nothing starts.
sed -e 's/pipeline: cluster-demo/pipeline: nowhere/' -e 's/nodes: \[n2, n3\]/nodes: [n2, n9]/' placed.yaml > nowhere.yaml
out=$("$troupe" deploy nowhere.yaml $admin 2>&1); rc=$?
check "a stage on an unknown node is refused" [ "$rc" -ne 0 ]
check "... naming the stage, the node and the members" \
  contains "$out" "nowhere.yaml: stage 'blur' is placed on node 'n9', which is not a member of the cluster (members: n1, n2, n3)"
sed -e 's/pipeline: cluster-demo/pipeline: missing/' -e 's/plugin: watermark/plugin: nosuchplugin/' placed.yaml > missing.yaml
out=$("$troupe" deploy missing.yaml $admin 2>&1); rc=$?
check "a plugin missing where its stage is placed is refused" [ "$rc" -ne 0 ]
check "... by the node that lacks it, naming the stage" \
  contains "$out" "node n3: missing.yaml:22: stage 'watermark': plugin 'nosuchplugin' not found"
# A plugin's dependency met by a stage on another node, but in a version out of range: n1
# finds a watermark that needs checksum ^2.0, and checksum runs on n2 in version 1.0.0.
mkdir -p "$work/extra-n1/watermark"
sed -e "s#^library: .*#library: $TROUPE_PLUGIN_PATH/watermark/libtroupe_watermark.so#" \
    -e 's#^dependencies: .*#dependencies: [{name: checksum, version: "^2.0"}]#' \
    "$TROUPE_PLUGIN_PATH/watermark/plugin.yaml" > "$work/extra-n1/watermark/plugin.yaml"
cat > needy.yaml <<Y
pipeline: needy
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 10}}
  - {name: mark, plugin: watermark}
  - {name: sum, plugin: checksum, node: n2, config: {output: $work/needy-sum.txt}}
edges: ["src -> mark -> sum"]
Y
out=$("$troupe" deploy needy.yaml $admin 2>&1); rc=$?
rm -rf "$work/extra-n1/watermark"
check "a dependency out of range on another node is refused" [ "$rc" -ne 0 ]
check "... naming the stage, both nodes and the versions" contains "$out" \
  "needy.yaml: stage 'mark' on node n1: plugin 'watermark' needs plugin 'checksum' ^2.0, which no stage of the pipeline runs; stage 'sum' on node n2 runs version 1.0.0"
# Gray frames made on n2 into blur (RGB only) on n3: each node's own stages meet, the edge
# between them does not, and only the node deployed to sees both sides.
cat > gray.yaml <<Y
pipeline: gray
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 10}}
  - {name: gray, plugin: convert, node: n2, config: {format: gray8}}
  - {name: soft, plugin: blur, node: n3}
  - {name: sum, plugin: checksum, config: {output: $work/gray-sum.txt}}
edges: ["src -> gray -> soft -> sum"]
Y
out=$("$troupe" deploy gray.yaml $admin 2>&1); rc=$?
check "an edge across nodes whose types do not meet is refused" [ "$rc" -ne 0 ]
check "... naming the edge, both stages, both types and their nodes" contains "$out" \
  "gray.yaml:7: edge 'gray -> soft': stage 'gray' (plugin convert on node n2) gives video/gray8, but stage 'soft' (plugin blur on node n3) takes video/rgb24 ($TROUPE_PLUGIN_PATH/blur/plugin.yaml)"
sed -i 's/format: gray8/format: rgb24/; s/^pipeline: gray/pipeline: rgb/' gray.yaml
out=$("$troupe" deploy gray.yaml $admin 2>&1)
check "with RGB frames the same placement is deployed" contains "$out" "pipeline 'rgb' deployed"
check "... and finishes" wait_for 20 bash -c "\"$troupe\" status $admin | grep -qE '^rgb +finished '"
sleep 0.5
check "nothing of a refused pipeline started anywhere" bash -c "! (\"$troupe\" status $admin | grep -qE '^(nowhere|missing|needy|gray) ')"

# A long-running pipeline across the nodes, stopped through n1: the sources end their
# streams, every node drains, and the sink takes every frame the source made.
cat > long.yaml <<Y
pipeline: long
window: 4
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 100000, streams: 2, rate: 300}}
  - {name: f, plugin: faulty, node: n2, replicas: 2, config: {action: slow, every: 1, slow_ms: 1}}
  - {name: inv, plugin: invert, node: n2}
  - {name: sink, plugin: checksum, config: {output: $work/long-sum.txt}}
edges: ["src -> f -> inv -> sink"]
Y
# Its events, followed through n1 from before it starts (JSON lines).
"$troupe" events --follow --pipeline long --output json $admin > follow.jsonl 2> follow.err &
pids+=($!)
follower=$!
out=$("$troupe" deploy long.yaml $admin 2>&1)
check "the long pipeline is deployed" contains "$out" "pipeline 'long' deployed"
check "its frames flow through n2" wait_for 10 bash -c \
  "\"$troupe\" status $admin | grep -qE '^long +inv +n2 +embedded +running +1 +[1-9][0-9][0-9]'"
# Scaled through n1 while frames flow: the call goes to n2, which runs the stage; scaling
# down drains the replica scaled away, fed from n1 through n2's ingress.
out=$("$troupe" scale f 3 --pipeline long $admin 2>&1)
check "scale through n1 reaches the stage on n2" contains "$out" "scaling stage 'f' of pipeline 'long' to 3 replicas on node n2"
check "the third replica serves on n2" wait_for 10 bash -c \
  "\"$troupe\" status $admin | grep -qE '^long +f#2 +n2 +embedded +running +1 +[1-9]'"
out=$("$troupe" scale f 1 --pipeline long --on n3 $admin 2>&1); rc=$?
check "scale --on a node the stage does not run on is refused" [ "$rc" -ne 0 ]
check "... naming where it runs" contains "$out" "stage 'f' of pipeline 'long' runs on node n2, not on node n3"
out=$("$troupe" scale f 1 --pipeline long --on n2 $admin 2>&1)
check "scale --on the stage's node is taken" contains "$out" "to 1 replicas on node n2"
check "the replicas scaled away drain and stop" wait_for 15 bash -c \
  "[ \$(\"$troupe\" status $admin | grep -cE '^long +f#[12] +n2 +embedded +stopped ') -eq 2 ]"
# Stopped through n3, which runs none of it: a node that does drains the whole of it.
out=$("$troupe" stop long --node "127.0.0.1:${port[11]}" --token secret 2>&1)
check "stop through a node that runs none of it is taken" contains "$out" "stopping pipeline 'long': draining on nodes n1, n2"
out=$("$troupe" stop nosuch --node "127.0.0.1:${port[11]}" --token secret 2>&1); rc=$?
check "stopping a pipeline no node runs is refused, saying so" \
  bash -c "[ $rc -ne 0 ] && grep -q \"no pipeline 'nosuch' runs on the cluster\" <<<\"\$0\"" "$out"
check "every node stops its part, and the pipeline is finished" wait_for 15 bash -c \
  "s=\$(\"$troupe\" status $admin); grep -qE '^long +finished ' <<<\"\$s\" &&
   [ \$(grep -cE '^long .* stopped ' <<<\"\$s\") -eq \$(grep -cE '^long +[^ ]+ +n[0-9] ' <<<\"\$s\") ]"
# Events through any node: every node's, in order, from the follower and from one call.
check "events --follow saw the pipeline stop on n1 and n2" wait_for 10 bash -c \
  "grep -q '\"node\":\"n1\",\"pipeline\":\"long\",\"state\":\"stopped\"' follow.jsonl &&
   grep -q '\"node\":\"n2\",\"pipeline\":\"long\",\"state\":\"stopped\"' follow.jsonl"
kill "$follower" 2>/dev/null
check "events --follow: each node's events in order, none twice, none of other pipelines" python3 -c '
import json, collections
seen = collections.defaultdict(list)
for line in open("follow.jsonl"):
    e = json.loads(line)
    assert e["pipeline"] == "long", e
    seen[e["node"]].append(e["seq"])
assert set(seen) == {"n1", "n2"}, sorted(seen)
for node, seqs in seen.items():
    assert seqs == sorted(set(seqs)), (node, seqs)'
check "... scaling on n2, with what changed" grep -q '"kind":"scale","node":"n2","pipeline":"long","stage":"f","detail":"from 2 to 3 replicas"' follow.jsonl
check "... the replicas scaled away" grep -qE '"kind":"instance","node":"n2","pipeline":"long","stage":"f","replica":[12],"generation":1,"state":"scaled_away"' follow.jsonl
check "... the source starting on n1" grep -q '"kind":"instance","node":"n1","pipeline":"long","stage":"src","replica":0,"generation":1,"state":"running"' follow.jsonl
out=$("$troupe" events --pipeline long --since 10m --node "127.0.0.1:${port[11]}" --token secret 2>&1)
check "events through n3, which runs none of it, shows n1's and n2's" bash -c \
  "grep -qE ' n1 +long/src gen 1 +instance running$' <<<\"\$0\" && grep -qE ' n2 +long/f +scale: from 2 to 3 replicas$' <<<\"\$0\"" "$out"
check "... oldest first" bash -c "[ \"\$(awk '{print \$1, \$2}' <<<\"\$0\")\" = \"\$(awk '{print \$1, \$2}' <<<\"\$0\" | sort)\" ]" "$out"
out=$("$troupe" events --since soon $admin 2>&1); rc=$?
check "events --since takes only a duration" bash -c "[ $rc -eq 2 ] && grep -q \"expected a duration such as 30s\" <<<\"\$0\"" "$out"
made=$("$troupe" status $admin | awk '$1 == "long" && $2 == "src" {print $8}')
taken=$(awk '$1 == "total" {print $3}' "$work/long-sum.txt")
echo "source made $made, sink took $taken"
check "stop drained across the nodes: the sink took every frame the source made ($made)" \
  test "${made:-none}" = "${taken:-nothing}"

# Status that tells: a stage on n2 that fails on one frame, read through n3 with --pipeline.
cat > flaky.yaml <<Y
pipeline: flaky
dead_letter_after: 2
restart: {max_restarts: 10, backoff_initial_ms: 5, backoff_max_ms: 20}
stages:
  - {name: src, plugin: testsrc, config: {width: 16, height: 8, count: 20}}
  - {name: f, plugin: faulty, node: n2, config: {action: fatal, on_seq: 3}}
  - {name: sink, plugin: checksum, config: {output: $work/flaky-sum.txt}}
edges: ["src -> f -> sink"]
Y
out=$("$troupe" deploy flaky.yaml $admin 2>&1)
check "the flaky pipeline is deployed" contains "$out" "pipeline 'flaky' deployed"
n3admin="--node 127.0.0.1:${port[11]} --token secret"
check "it finishes" wait_for 20 bash -c "\"$troupe\" status $n3admin | grep -qE '^flaky +finished '"
out=$("$troupe" status --pipeline flaky $n3admin 2>&1)
echo "$out" | sed -n '/^PIPELINE/,$p'
check "status --pipeline shows that pipeline alone" not_contains "$out" "long "
check "status shows the failure class, errors, dead letters and restarts of f on n2" grep -qE \
  '^flaky +f +n2 +embedded +stopped +3 +[0-9]+ +[0-9]+ +2 +0 +1 +[0-9.]+ +[0-9.]+ +lost$' <<<"$out"
check "... and its last error" grep -qE '^ +last error: faulty: fatal error on stream 0 seq 3' <<<"$out"
"$troupe" status --pipeline flaky --output json $n3admin > flaky.json 2>&1
check "status --output json gives the same, with processing times" python3 -c '
import json
d = json.load(open("flaky.json"))
i = {x["instance"]: x for x in d["instances"]}
assert set(x["pipeline"] for x in d["instances"]) == {"flaky"}, d["instances"]
assert [p["pipeline"] for p in d["pipelines"]] == ["flaky"], d["pipelines"]
f = i["f"]
assert f["failure"] == "lost" and "fatal error" in f["last_error"] and f["dead"] == 1 and f["restarts"] == 2, f
assert f["p50_ms"] > 0 and f["p99_ms"] >= f["p50_ms"], f
assert i["src"]["failure"] == "" and i["src"]["last_error"] == "", i["src"]'
verdict
