#!/usr/bin/env bash
# Three real `troupe node` processes on 127.0.0.1 find each other from one seed, answer
# `troupe status`, expose per-peer metrics, close connections that send garbage (saying why)
# and go on serving, refuse a node and an admin client with the wrong token (both sides say
# why), and mark a frozen (SIGSTOP) or killed (SIGKILL) node down within the configured
# bound; a thawed node is up again.
# A pipeline is deployed on a node through its admin interface, scaled and stopped there.
# Usage: cluster_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
source "$(dirname "$0")/nodes.sh"
free_ports 18
seed="127.0.0.1:${port[1]}"
start_node() {  # start_node NAME INDEX TOKEN [LISTEN_HOST]
  cat > "$1.yaml" <<Y
name: $1
listen: ${4:-127.0.0.1}:${port[$2]}
advertise: 127.0.0.1:${port[$2]}
data: 127.0.0.1:${port[$(($2 + 13))]}
admin: 127.0.0.1:${port[$(($2 + 4))]}
metrics: 127.0.0.1:${port[$(($2 + 8))]}
seeds: [$seed]
token: $3
heartbeat_ms: 200
down_after_ms: 1500
Y
  "$troupe" node --config "$1.yaml" > "$1.log" 2>&1 &
  pids+=($!)
}
status() { "$troupe" status --node "127.0.0.1:${port[$1]}" --token secret 2>&1; }
state_is() { status "$1" | grep -qE "^$2 +$3 "; }

# A config with a mistake is refused, naming the file and the field.
printf 'name: bad\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\ntoken: t\nheartbeat_ms: often\n' > bad.yaml
out=$("$troupe" node --config bad.yaml 2>&1); rc=$?
check "a bad node config is refused" [ "$rc" -eq 2 ]
check "... naming the file, line and field" contains "$out" "bad.yaml:5: field 'heartbeat_ms': expected a positive number of milliseconds"
printf 'name: bad\nlisten: 127.0.0.1:1\nadmin: 127.0.0.1:2\n' > notoken.yaml
out=$("$troupe" node --config notoken.yaml 2>&1)
check "a node needs a cluster token" contains "$out" "notoken.yaml: field 'token' is missing"
printf 'name: bad\nlisten: 127.0.0.1:7x01\nadmin: 127.0.0.1:2\ntoken: t\n' > badport.yaml
out=$("$troupe" node --config badport.yaml --check 2>&1); rc=$?
check "a port that is not a number is refused, naming the field" \
  contains "$out" "badport.yaml: field 'listen': expected host:port, got '127.0.0.1:7x01'"

start_node n1 1 secret
start_node n2 2 secret
start_node n3 3 secret 0.0.0.0  # on every interface, reached at its advertised address
check "n1 sees n2 and n3 up" wait_for 10 eval 'state_is 5 n2 up && state_is 5 n3 up'
check "n3 learned n2 through the seed" wait_for 10 state_is 7 n2 up
out=$(status 6)
echo "$out"
check "status lists three nodes" [ "$(grep -cE '^n[123] ' <<<"$out")" -eq 3 ]
check "status marks the node asked" grep -qE "^n2 +self " <<<"$out"

metrics=$(curl -s -m 5 "127.0.0.1:${port[9]}/metrics")
check "metrics: n1's link to n2 is up" contains "$metrics" 'troupe_peer_up{node="n1",peer="n2"} 1'
check "metrics: heartbeats are counted" grep -qE 'troupe_peer_heartbeats_total\{node="n1",peer="n3"\} [1-9]' <<<"$metrics"
check "metrics pass promtool" bash -c "promtool check metrics <<<'$metrics' >/dev/null 2>&1"

# A pipeline deployed on n1 through its admin interface, scaled while it runs, then stopped:
# the sink takes every frame the source made.
cat > remote.yaml <<Y
pipeline: remote
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 100000, streams: 2, rate: 200}}
  - {name: f, plugin: faulty, config: {action: slow, every: 1, slow_ms: 2}}
  - {name: sink, plugin: checksum, config: {output: $work/remote-sum.txt}}
edges: ["src -> f -> sink"]
Y
admin="--node 127.0.0.1:${port[5]} --token secret"
out=$("$troupe" deploy remote.yaml $admin 2>&1)
check "deploy starts the pipeline on n1" contains "$out" "pipeline 'remote' deployed"
out=$("$troupe" deploy remote.yaml $admin 2>&1); rc=$?
check "a second deploy of a running pipeline is refused" [ "$rc" -ne 0 ]
check "... saying why" contains "$out" "pipeline 'remote' is already running on node n1"
check "status shows the instances, on n1, running" \
  wait_for 10 bash -c "\"$troupe\" status $admin | grep -qE '^remote +f +n1 +embedded +running '"
# Another pipeline on n2; a node that runs nothing shows both, with their nodes.
sed -e 's/pipeline: remote/pipeline: other/' -e 's/remote-sum/other-sum/' remote.yaml > other.yaml
out=$("$troupe" deploy other.yaml --node "127.0.0.1:${port[6]}" --token secret 2>&1)
check "deploy on n2" contains "$out" "pipeline 'other' deployed"
check "status through n3 lists the instances of n1 and n2" wait_for 10 bash -c \
  "s=\$(\"$troupe\" status --node 127.0.0.1:${port[7]} --token secret); grep -qE '^remote +f +n1 ' <<<\"\$s\" && grep -qE '^other +f +n2 ' <<<\"\$s\""
"$troupe" stop other --node "127.0.0.1:${port[6]}" --token secret >/dev/null

out=$("$troupe" scale f 2 --pipeline remote $admin 2>&1)
check "scale is taken" contains "$out" "scaling stage 'f' of pipeline 'remote' to 2 replicas"
out=$("$troupe" scale nope 2 --pipeline remote $admin 2>&1); rc=$?
check "scaling an unknown stage is refused by name" bash -c "[ $rc -ne 0 ] && grep -q \"no stage named 'nope'\" <<<\"$out\""
check "the new replica serves" \
  wait_for 10 bash -c "\"$troupe\" status $admin | grep -qE '^remote +f#1 +n1 +embedded +running +1 +[1-9]'"
out=$("$troupe" stop remote $admin 2>&1)
check "stop is taken" contains "$out" "stopping pipeline 'remote'"
check "the pipeline stops" wait_for 10 bash -c "\"$troupe\" status $admin | grep -qE '^remote +sink +n1 +embedded +stopped '"
made=$("$troupe" status $admin | awk '$1 == "remote" && $2 == "src" {print $8}')
taken=$(awk '$1 == "total" {print $3}' "$work/remote-sum.txt")
echo "source made $made, sink took $taken"
check "stop drained: the sink took every frame the source made ($made)" test "${made:-none}" = "${taken:-nothing}"

# Garbage, an oversized message, a truncated one and a well-framed one with nonsense inside,
# each on a connection of its own to n1's peer port.
python3 - "${port[1]}" <<'PY'
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
PY
check "garbage closes its connection and says why" grep -q "closed the connection from 127.0.0.1:[0-9]*: malformed message: its header claims 4294967296 segments" n1.log
check "an oversized message is refused with its size" grep -q "oversized message: 80000000 bytes (at most 16777216)" n1.log
check "a truncated message is named" grep -q "the connection ended 48 bytes into a message (truncated)" n1.log
check "the bad connections are counted" bash -c "curl -s -m 5 127.0.0.1:${port[9]}/metrics | grep -q '^troupe_node_bad_messages_total 3'"
check "n1 still serves its peers" wait_for 5 eval 'state_is 5 n2 up && state_is 6 n1 up'

out=$("$troupe" status --node "127.0.0.1:${port[5]}" --token wrong 2>&1); rc=$?
check "an admin client with the wrong token is refused" [ "$rc" -ne 0 ]
check "... and told why" contains "$out" "refused by node n1: wrong cluster token"

start_node intruder 4 wrong
check "a node with the wrong token says it was refused" \
  wait_for 10 grep -q "refused by seed $seed: refused by node n1: wrong cluster token" intruder.log
check "the seed says whom it refused" grep -q "refused node intruder at 127.0.0.1:${port[4]}: wrong cluster token" n1.log
check "the intruder is not a member" bash -c "! (\"$troupe\" status --node 127.0.0.1:${port[5]} --token secret | grep -q intruder)"

# Frozen: its sockets stay open, only missed heartbeats tell.
kill -STOP "${pids[2]}"
frozen_at=$SECONDS
check "a frozen node is marked down" wait_for 10 state_is 5 n3 down
check "... within the bound (1.5 s, with room for a loaded machine)" [ $((SECONDS - frozen_at)) -le 5 ]
check "n1 logs it" grep -q "node n3 is down: no heartbeat for" n1.log
kill -CONT "${pids[2]}"
check "a thawed node is up again" wait_for 10 state_is 5 n3 up

kill -9 "${pids[1]}"
wait "${pids[1]}" 2>/dev/null
check "a killed node is marked down" wait_for 10 state_is 5 n2 down
check "the others stay up" state_is 7 n1 up
# The compose cluster's files, as far as they can be checked without a Docker engine.
docker_dir="$(dirname "$0")/../../docker"
for n in n1 n2 n3; do
  check "docker/$n.yaml is a valid node config" "$troupe" node --config "$docker_dir/$n.yaml" --check
done
check "docker/prometheus.yml is a valid Prometheus config" promtool check config "$docker_dir/prometheus.yml"
verdict
