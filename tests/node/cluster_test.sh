#!/usr/bin/env bash
# Three real `troupe node` processes on 127.0.0.1 whose cluster state is kept in an etcd of the
# test's own: each registers under a lease, they see each other up through the store, answer
# `troupe status` through any node, expose per-peer and lease metrics, close connections that
# send garbage to the peer or the admin port (saying why) and go on serving, refuse a client
# or a node with the wrong token (saying why), and a frozen (SIGSTOP) or killed (SIGKILL) node
# is down for every node once its lease ends; a thawed node registers again and is up.
# A pipeline is deployed through a node's admin interface, scaled and stopped there.
# Usage: cluster_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
unset TROUPE_TOKEN TROUPE_ETCD
source "$(dirname "$0")/nodes.sh"
free_ports 24
status() { "$troupe" status --node "127.0.0.1:${port[$1]}" --token secret 2>&1; }
state_is() { status "$1" | grep -qE "^$2 +$3 "; }

# A config with a mistake is refused, naming the file and the field.
printf 'name: bad\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\ntoken: t\netcd: [127.0.0.1:3]\nlease_ms: often\n' > bad.yaml
out=$("$troupe" node --config bad.yaml 2>&1); rc=$?
check "a bad node config is refused" [ "$rc" -eq 2 ]
check "... naming the file, line and field" contains "$out" "bad.yaml:6: field 'lease_ms': expected a number of milliseconds"
printf 'name: bad\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\ntoken: t\netcd: [127.0.0.1:3]\nlease_ms: 200\n' > short.yaml
out=$("$troupe" node --config short.yaml --check 2>&1)
check "a lease shorter than the store counts is refused" \
  contains "$out" "short.yaml:6: field 'lease_ms': expected 1000 to 600000 milliseconds"
printf 'name: bad\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\netcd: [127.0.0.1:3]\n' > notoken.yaml
out=$("$troupe" node --config notoken.yaml 2>&1)
check "a node needs a cluster token" contains "$out" "notoken.yaml: field 'token' is missing"
printf 'name: bad\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\ntoken: t\n' > noetcd.yaml
out=$("$troupe" node --config noetcd.yaml --check 2>&1)
check "a node needs etcd endpoints" contains "$out" "noetcd.yaml: field 'etcd': expected the etcd endpoints"
out=$(TROUPE_ETCD=127.0.0.1:3,127.0.0.1:4 "$troupe" node --config noetcd.yaml --check 2>&1)
check "... or \$TROUPE_ETCD" contains "$out" "etcd at 127.0.0.1:3,127.0.0.1:4"
printf 'name: cap\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\ntoken: t\netcd: [127.0.0.1:3]\ncapacity: {memory_mb: 3000, cpu_cores: 0, gpus: 2}\n' > badcap.yaml
out=$("$troupe" node --config badcap.yaml --check 2>&1)
check "a capacity of no cores is refused, naming the field" \
  contains "$out" "badcap.yaml:6: field 'capacity.cpu_cores': expected a positive number of cores"
sed -i 's/, cpu_cores: 0//' badcap.yaml
out=$("$troupe" node --config badcap.yaml --check 2>&1)
check "--check shows the capacity: the config's memory and GPUs, the machine's cores" \
  contains "$out" "capacity memory 3000 MiB, $(nproc) cores, 2 GPUs (capacity in badcap.yaml)"
printf 'name: bad\nlisten: 127.0.0.1:7x01\nadmin: 127.0.0.1:2\ntoken: t\netcd: [127.0.0.1:3]\n' > badport.yaml
out=$("$troupe" node --config badport.yaml --check 2>&1); rc=$?
check "a port that is not a number is refused, naming the field" \
  contains "$out" "badport.yaml: field 'listen': expected host:port, got '127.0.0.1:7x01'"

start_etcd 1
start_node n1 1
start_node n2 2
# n3 listens on every interface and is reached at its advertised address.
# n3 takes work up to 3000 MiB.
node_yaml n3 3 | sed -e "s/^listen: .*/listen: 0.0.0.0:${port[3]}\nadvertise: 127.0.0.1:${port[3]}/" > n3.yaml
echo "capacity: {memory_mb: 3000, gpus: 1}" >> n3.yaml
"$troupe" node --config n3.yaml > n3.log 2>&1 &
pids[2]=$!
check "n1 sees n2 and n3 up" wait_for 10 eval 'state_is 9 n2 up && state_is 9 n3 up'
check "n3 sees n2 up (through the store)" wait_for 10 state_is 11 n2 up
# n2 reads the store on its own schedule: it lists the others once it has read them.
lists_three() { [ "$(status 10 | grep -cE '^n[123] ')" -eq 3 ]; }
if ! wait_for 10 lists_three; then echo "n2 does not list the others; its log:"; tail -n 20 n2.log; fi
out=$(status 10)
echo "$out"
check "status lists three nodes" [ "$(grep -cE '^n[123] ' <<<"$out")" -eq 3 ]
check "status marks the node asked" grep -qE "^n2 +self " <<<"$out"
check "n3 is listed at its advertised address" grep -qE "^n3 +up +127.0.0.1:${port[3]} " <<<"$out"
check "each node registered under a lease" grep -q "registered with the cluster 'troupe' (lease of 2 s" n1.log
check "the members are in etcd" bash -c \
  "etcdctl --endpoints $etcd_endpoints get --prefix /troupe/troupe/members/ --keys-only | grep -c members/ | grep -qx 3"

metrics=$(curl -s -m 5 "127.0.0.1:${port[13]}/metrics")
check "metrics: n1 sees n2 up" contains "$metrics" 'troupe_peer_up{node="n1",peer="n2"} 1'
check "metrics: lease renewals are counted" grep -qE 'troupe_node_lease_renewals_total\{node="n1"\} [1-9]' <<<"$metrics"
check "metrics: n1 holds its lease" contains "$metrics" 'troupe_node_lease_held{node="n1"} 1'
echo "$metrics" > metrics.txt
check "metrics pass promtool" bash -c "promtool check metrics < metrics.txt"

# A pipeline deployed on n1 through its admin interface, scaled while it runs, then stopped:
# the sink takes every frame the source made.
cat > remote.yaml <<Y
pipeline: remote
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 100000, streams: 2, rate: 200}}
  - {name: f, plugin: faulty, config: {action: slow, every: 1, slow_ms: 2}}
  - {name: sink, plugin: checksum, config: {output: $work/out/remote-sum.txt}}
edges: ["src -> f -> sink"]
Y
admin="--node 127.0.0.1:${port[9]} --token secret"
out=$("$troupe" deploy remote.yaml $admin 2>&1)
check "deploy starts the pipeline on n1" contains "$out" "pipeline 'remote' deployed"
out=$("$troupe" deploy remote.yaml $admin 2>&1); rc=$?
check "a second deploy of a running pipeline is refused" [ "$rc" -ne 0 ]
check "... saying why" contains "$out" "pipeline 'remote' is already running on the cluster (deployed through node n1"
check "status shows the instances, on n1, running" \
  wait_for 10 bash -c "\"$troupe\" status $admin | grep -qE '^remote +f +n1 +embedded +running '"
check "status shows the pipeline, its epoch and its leader" \
  bash -c "\"$troupe\" status $admin | grep -qE '^remote +running +[0-9]+ +n1 +f@n1 sink@n1 src@n1'"
# Another pipeline on n2; a node that runs nothing shows both, with their nodes.
sed -e 's/pipeline: remote/pipeline: other/' -e 's/remote-sum/other-sum/' remote.yaml > other.yaml
out=$("$troupe" deploy other.yaml --node "127.0.0.1:${port[10]}" --token secret 2>&1)
check "deploy on n2" contains "$out" "pipeline 'other' deployed"
check "status through n3 lists the instances of n1 and n2" wait_for 10 bash -c \
  "s=\$(\"$troupe\" status --node 127.0.0.1:${port[11]} --token secret); grep -qE '^remote +f +n1 ' <<<\"\$s\" && grep -qE '^other +f +n2 ' <<<\"\$s\""
"$troupe" stop other --node "127.0.0.1:${port[10]}" --token secret >/dev/null

out=$("$troupe" scale f 2 --pipeline remote $admin 2>&1)
check "scale is taken" contains "$out" "scaling stage 'f' of pipeline 'remote' to 2 replicas"
out=$("$troupe" scale nope 2 --pipeline remote $admin 2>&1); rc=$?
check "scaling an unknown stage is refused by name" bash -c "[ $rc -ne 0 ] && grep -q \"no stage named 'nope'\" <<<\"$out\""
check "the new replica serves" \
  wait_for 10 bash -c "\"$troupe\" status $admin | grep -qE '^remote +f#1 +n1 +embedded +running +1 +[1-9]'"
out=$("$troupe" stop remote $admin 2>&1)
check "stop is taken" contains "$out" "stopping pipeline 'remote': draining on node n1"
check "the pipeline stops and is finished" wait_for 10 bash -c \
  "\"$troupe\" status $admin | grep -qE '^remote +sink +n1 +embedded +stopped ' && \"$troupe\" status $admin | grep -qE '^remote +finished '"
made=$("$troupe" status $admin | awk '$1 == "remote" && $2 == "src" {print $8}')
taken=$(awk '$1 == "total" {print $3}' "$work/out/remote-sum.txt")
echo "source made $made, sink took $taken"
check "stop drained: the sink took every frame the source made ($made)" test "${made:-none}" = "${taken:-nothing}"
out=$("$troupe" deploy remote.yaml $admin 2>&1)
check "a finished pipeline can be deployed again" contains "$out" "pipeline 'remote' deployed"
"$troupe" stop remote $admin >/dev/null

# Admission: n3 takes work up to its capacity (3000 MiB). The pipeline asks for 1792 MiB
# (testsrc 1024, faulty 256, checksum 512).
admin3="--node 127.0.0.1:${port[11]} --token secret"
sed -e 's/pipeline: remote/pipeline: fits/' -e 's/remote-sum/fits-sum/' remote.yaml > fits.yaml
out=$("$troupe" deploy fits.yaml $admin3 2>&1)
check "n3 takes a pipeline that fits its capacity" contains "$out" "pipeline 'fits' deployed"
out=$("$troupe" scale f 6 --pipeline fits $admin3 2>&1); rc=$?
check "replicas past the capacity are refused" [ "$rc" -ne 0 ]
check "... naming the node, the stage and the shortfall" contains "$out" \
  "node n3 cannot take 5 more replicas of stage 'f' (256 MiB each): it needs 1280 MiB of memory, 1208 MiB free of 3000 MiB (capacity in n3.yaml)"
out=$("$troupe" scale f 5 --pipeline fits $admin3 2>&1)
check "replicas that fit are taken" contains "$out" "scaling stage 'f' of pipeline 'fits' to 5 replicas"
metrics3=$(curl -s -m 5 "127.0.0.1:${port[15]}/metrics")
check "metrics: n3's capacity" contains "$metrics3" 'troupe_node_capacity_memory_bytes{node="n3"} 3145728000'
check "metrics: n3's GPUs, and none asked for" bash -c \
  "grep -qF 'troupe_node_capacity_gpus{node=\"n3\"} 1' <<<\"\$1\" && grep -qF 'troupe_node_requested_gpus{node=\"n3\"} 0' <<<\"\$1\"" _ "$metrics3"
check "metrics: what n3's replicas ask for (1024 + 5 x 256 + 512 MiB)" wait_for 5 bash -c \
  "curl -s -m 5 127.0.0.1:${port[15]}/metrics | grep -qF 'troupe_node_requested_memory_bytes{node=\"n3\"} 2952790016'"
# `node: any` goes where there is room: the sink would go to n3 (running the fewest of the
# pipeline's stages), which is full; it is placed again without n3.
cat > spread.yaml <<Y
pipeline: spread
stages:
  - {name: src, plugin: testsrc, node: n1, config: {width: 32, height: 16, count: 50, streams: 1}}
  - {name: mid, plugin: passthrough, node: any}
  - {name: sink, plugin: checksum, node: any, config: {output: $work/out/spread-sum.txt}}
edges: ["src -> mid -> sink"]
Y
out=$("$troupe" deploy spread.yaml $admin 2>&1)
check "a pipeline with a node: any stage no room is left for on n3 is deployed" contains "$out" "pipeline 'spread' deployed"
check "... n3 said it has no room" grep -q \
  "pipeline 'spread': node n3 cannot take pipeline 'spread': stage 'sink' (1 replica of 512 MiB): it needs 512 MiB of memory, 184 MiB free of 3000 MiB (capacity in n3.yaml); its \`node: any\` stages are placed again without it" n1.log
check "... and the sink runs on n1" wait_for 10 bash -c "\"$troupe\" status $admin | grep -qE '^spread +sink +n1 '"
check "... and takes every frame" wait_for 20 grep -q "total frames 50 " "$work/out/spread-sum.txt"
"$troupe" stop spread $admin >/dev/null
sed -e 's/pipeline: remote/pipeline: second/' -e 's/remote-sum/second-sum/' remote.yaml > second.yaml
out=$("$troupe" deploy second.yaml $admin3 2>&1); rc=$?
check "a second pipeline past the capacity is refused" [ "$rc" -ne 0 ]
check "... naming the node, the stage and the shortfall" contains "$out" \
  "node n3 cannot take pipeline 'second': stage 'src' (1 replica of 1024 MiB): it needs 1024 MiB of memory, 184 MiB free of 3000 MiB (capacity in n3.yaml)"
check "... and nothing of it runs" bash -c "! \"$troupe\" status $admin3 | grep -qE '^second '"
# Priorities: a pipeline of higher priority takes room from 'fits' (priority 0), whose stage f
# gives back replicas it holds beyond one, drained as for scaling down. 'second' at priority
# 10 needs 1608 MiB more than is free: f's four spare replicas give 1024, not enough.
sed -e 's/^pipeline: second/pipeline: second\npriority: 10/' second.yaml > second10.yaml
out=$("$troupe" deploy second10.yaml $admin3 2>&1); rc=$?
check "a higher priority is refused when lower ones cannot give enough" [ "$rc" -ne 0 ]
check "... saying what they could give" contains "$out" \
  "184 MiB free of 3000 MiB (capacity in n3.yaml); pipelines of lower priority than 10 here could give back only memory 1024 MiB (down to one replica of each stage): not enough"
check "... and nothing was evicted" bash -c "\"$troupe\" status $admin3 | grep -cE '^fits +f(#[0-9])? +n3 +embedded +running ' | grep -qx 5"
# 'urgent' (priority 10) asks for 512 MiB (its stages isolated, at 256 MiB each): f gives two
# replicas back.
cat > urgent.yaml <<Y
pipeline: urgent
priority: 10
stages:
  - {name: src, plugin: testsrc, mode: isolated, resources: {memory_mb: 256}, config: {width: 8, height: 8, count: 20, streams: 1}}
  - {name: sink, plugin: checksum, mode: isolated, resources: {memory_mb: 256}, config: {output: $work/out/urgent-sum.txt}}
edges: ["src -> sink"]
Y
out=$("$troupe" deploy urgent.yaml $admin3 2>&1)
check "a higher priority that lower ones make room for is deployed" contains "$out" "pipeline 'urgent' deployed"
check "... n3 says what it evicted, and why" wait_for 10 grep -q \
  "stage 'f' of pipeline 'fits' (priority 0) gives back 2 replicas (5 -> 3, memory 512 MiB) for pipeline 'urgent' (priority 10)" n3.log
check "... fits' f drains down to 3 replicas" wait_for 10 bash -c \
  "[ \$(\"$troupe\" status $admin3 | grep -cE '^fits +f(#[0-9])? +n3 +embedded +running ') -eq 3 ]"
check "... the eviction is an event" bash -c \
  "\"$troupe\" events --pipeline fits $admin3 | grep -q 'eviction'"
check "... and counted" bash -c \
  "curl -s -m 5 127.0.0.1:${port[15]}/metrics | grep -qF 'troupe_node_evicted_replicas_total{node=\"n3\"} 2'"
check "... and urgent runs to its end" wait_for 20 grep -q "total frames 20 " "$work/out/urgent-sum.txt"
"$troupe" stop fits $admin3 >/dev/null
check "fits stops" wait_for 20 bash -c "\"$troupe\" status $admin3 | grep -qE '^fits +finished '"
made=$("$troupe" status $admin3 | awk '$1 == "fits" && $2 == "src" {print $8}')
taken=$(awk '$1 == "total" {print $3}' "$work/out/fits-sum.txt")
echo "fits: source made $made, sink took $taken"
check "the evicted pipeline lost nothing: its sink took every frame its source made ($made)" \
  test "${made:-none}" = "${taken:-nothing}"
check "once the first has stopped, the second fits" wait_for 10 bash -c \
  "\"$troupe\" deploy second.yaml $admin3 2>&1 | grep -q \"pipeline 'second' deployed\""
"$troupe" stop second $admin3 >/dev/null

# Garbage, an oversized message, a truncated one and a well-framed one with nonsense inside,
# each on a connection of its own to n1's peer port, then to its admin port.
for p in 1 9; do
python3 - "${port[$p]}" <<'PY'
import socket, struct, sys, time
def send(b):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b)
    time.sleep(0.2)
    s.close()
send(b"\xff" * 64)
send(struct.pack("<II", 0, 10_000_000))
send(struct.pack("<II", 0, 100) + b"\0" * 40)
send(struct.pack("<II", 0, 2) + b"\xff" * 16)
send(b"\xff\xff\xff\xff\x00\x00\x00\x00")
PY
done
check "garbage closes its connection and says why" grep -q "closed the connection from 127.0.0.1:[0-9]*: malformed message: its header claims 4294967296 segments" n1.log
check "an oversized message is refused with its size" grep -q "oversized message: 80000000 bytes (at most 16777216)" n1.log
check "a truncated message is named" grep -q "the connection ended 48 bytes into a message (truncated)" n1.log
check "the bad connections to both ports are counted" bash -c \
  "curl -s -m 5 127.0.0.1:${port[13]}/metrics | grep -q '^troupe_node_bad_messages_total{node=\"n1\"} 8'"
check "n1 still serves" wait_for 5 eval 'state_is 9 n2 up && state_is 10 n1 up'

out=$("$troupe" status --node "127.0.0.1:${port[9]}" --token wrong 2>&1); rc=$?
check "an admin client with the wrong token is refused" [ "$rc" -ne 0 ]
check "... and told why" contains "$out" "refused by node n1: wrong cluster token"
out=$(TROUPE_NODE="127.0.0.1:${port[9]}" "$troupe" status --token secret 2>&1); rc=$?
check "TROUPE_NODE stands for --node" [ "$rc" -eq 0 ]
check "... and status answers" grep -qE '^n1 +self ' <<<"$out"
out=$("$troupe" status --node "127.0.0.1:${port[9]}" --token secret --output json 2>&1)
check "status --output json gives the nodes as JSON" python3 -c '
import json, sys
d = json.loads(sys.argv[1])
states = {n["node"]: n["state"] for n in d["nodes"]}
assert states.get("n1") == "self" and states.get("n2") == "up", states
assert all(n["admin_address"] for n in d["nodes"])' "$out"
out=$(env -u TROUPE_TOKEN "$troupe" status --node "127.0.0.1:${port[9]}" 2>&1); rc=$?
check "an admin call without a token is a usage error (exit 2)" [ "$rc" -eq 2 ]
check "... that says a token is missing, not wrong" contains "$out" "troupe: no cluster token: give --token-file FILE"

# A node with another token registers in the store, but its peers refuse its calls: a
# pipeline deployed through it with a stage on n1 is refused by n1.
node_yaml intruder 4 | sed -e "s/^token: .*/token: wrong/" -e "s/^listen: .*/listen: 127.0.0.1:${port[4]}/" \
  -e "s/^data: .*/data: 127.0.0.1:${port[8]}/" -e "s/^admin: .*/admin: 127.0.0.1:${port[16]}/" \
  -e "s/^metrics: .*/metrics: 127.0.0.1:${port[12]}/" > intruder.yaml
"$troupe" node --config intruder.yaml > intruder.log 2>&1 &
pids[3]=$!
check "the intruder is up" wait_for 10 state_is 9 intruder up
printf 'pipeline: sneaky\nstages:\n  - {name: src, plugin: testsrc, config: {count: 1}}\n  - {name: sink, plugin: checksum, node: n1}\nedges: ["src -> sink"]\n' > sneaky.yaml
out=$("$troupe" deploy sneaky.yaml --node "127.0.0.1:${port[16]}" --token wrong 2>&1); rc=$?
check "a deploy through a node with the wrong token is refused by its peers" [ "$rc" -ne 0 ]
check "... saying which and why" contains "$out" "refused by node n1: wrong cluster token"
check "n1 says whom it refused" grep -q "refused node intruder: wrong cluster token" n1.log
kill -9 "${pids[3]}"

# Frozen: its sockets stay open, only its lease ends.
kill -STOP "${pids[2]}"
frozen_at=$SECONDS
check "a frozen node is marked down" wait_for 10 state_is 9 n3 down
check "... once its lease ended (2 s, with room for a loaded machine)" [ $((SECONDS - frozen_at)) -le 6 ]
check "n1 logs it" grep -q "node n3 is down: its lease ended" n1.log
kill -CONT "${pids[2]}"
check "a thawed node registers again and is up" wait_for 10 state_is 9 n3 up
check "... saying so" wait_for 5 grep -q "registered again with the cluster" n3.log

kill -9 "${pids[1]}"
wait "${pids[1]}" 2>/dev/null
check "a killed node is marked down" wait_for 10 state_is 9 n2 down
check "the others stay up" state_is 11 n1 up
kill -TERM "${pids[2]}"
wait "${pids[2]}" 2>/dev/null
check "a node stopped with SIGTERM leaves at once (its lease is revoked)" wait_for 2 state_is 9 n3 down
verdict
