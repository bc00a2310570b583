#!/usr/bin/env bash
# Nodes that fail under a pipeline placed across three real `troupe node` processes on
# 127.0.0.1, their state kept in an etcd of the test's own (leases of 2 s). Every case compares
# the sink's digests with `troupe run` of the same file: every frame once.
# - SIGKILL of one of a stage's two nodes: once its lease ends the leader places the stage on
#   the other alone, and what the dead node did not acknowledge is replayed there (counted).
# - A pinned stage's node frozen (SIGSTOP) past its lease, then thawed: the stage it shares
#   with another node runs there meanwhile; the thawed node stops its share (self-fencing),
#   registers again, runs its pinned stage on and is given its share back.
# - A pinned stage's node killed and started again: the stage waits for it, starts there again
#   from the placement record, and is fed what its senders still hold.
# - A `node: any` stage given to a node without room for it (its capacity): the node says so
#   in the store and the leader moves the stage on to one with room.
# - The leader killed together with the node of a `node: any` stage: the last node takes the
#   leader key and moves the stage to itself.
# Bounded in time; every process started is reaped.
# Usage: failover_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
source "$(dirname "$0")/nodes.sh"
free_ports 24
start_etcd 1
admin="--node 127.0.0.1:${port[9]} --token secret"
status() { "$troupe" status $admin 2>/dev/null; }
start_node n1 1
start_node n2 2
start_node n3 3
check "the three nodes are up" wait_for 10 members_up n2 n3

# pipeline NAME SRC_AND_SINK PRE MID [COUNT]: a source and a sink placed as SRC_AND_SINK says,
# a pass-through stage `pre` placed as PRE and a slow pass-through stage `mid` placed as MID
# (each ", node: ..." or empty).
pipeline() {
  cat <<Y
pipeline: $1
window: 8
stages:
  - {name: src, plugin: testsrc$2, config: {width: 48, height: 32, count: ${5:-400}, streams: 3, rate: 150}}
  - {name: pre, plugin: passthrough$3}
  - {name: mid, plugin: faulty$4, config: {action: slow, every: 1, slow_ms: 2}}
  - {name: sink, plugin: checksum$2, config: {output: $work/$1-sum.txt}}
edges: ["src -> pre -> mid -> sink"]
Y
}
# single COUNT: the single-node run of COUNT frames per stream every run is compared with.
single() {
  pipeline "single$1" "" "" ", node: n1" "$1" > "single$1.yaml"
  timeout 60 "$troupe" run "single$1.yaml" > "single$1.out" 2>&1
}
single 400
single 1500
check "the single-node runs take every frame" grep -q "total frames 4500 bytes" single1500-sum.txt
same_as_single() { diff <(grep '^stream' "$1-sum.txt") <(grep '^stream' "single$2-sum.txt"); }

# -- SIGKILL of one of a stage's two nodes ----------------------------------------------------
pipeline killed "" ", node: n2" ", nodes: [n2, n3], routing: by_stream" > killed.yaml
out=$("$troupe" deploy killed.yaml $admin 2>&1)
check "the pipeline is deployed with mid on n2 and n3" contains "$out" "pipeline 'killed' deployed"
check "mid runs on n3 and frames flow" wait_for 10 flowing killed mid n3
killed_n3=${pids[2]}
check "n3 keeps pipeline files in a directory of its own" compgen -G "${TMPDIR:-/tmp}/troupe-node-$killed_n3-*"
kill -9 "${pids[2]}"
wait "${pids[2]}" 2>/dev/null
check "n1 leads: once n3's lease ends, mid runs on n2 alone" \
  wait_for 10 grep -q "pipeline 'killed' (epoch [0-9]*): stage 'mid' runs on n2 (was n2, n3)" n1.log
check "the pipeline finishes" wait_for 30 finished killed
check "... with every instance stopped" all_stopped killed
status | grep -E '^(PIPELINE|killed) '
check "nothing lost, nothing twice: the sink's digests equal the single-node run's" same_as_single killed 400
check "no frame reached the sink twice" grep -q "total frames 1200 bytes [0-9]* duplicates 0" killed-sum.txt
replayed=$(curl -s -m 5 "127.0.0.1:${port[14]}/metrics" |
  awk '/^troupe_instance_frames_replayed_total\{.*pipeline="killed".*stage="pre"/ {s += $2} END {print s + 0}')
echo "frames n2's pre replayed to mid after n3 died: $replayed"
check "what n3 did not acknowledge was replayed (and counted)" [ "${replayed%.*}" -gt 0 ]
out=$("$troupe" events --output json $admin 2>&1)
check "events: n1 and n2 tell that n3 went down" bash -c \
  "grep -q '\"kind\":\"node\",\"node\":\"n1\",\"pipeline\":\"\",\"state\":\"down\",\"detail\":\"member n3 is down: its lease ended\"' <<<\"\$0\" &&
   grep -q '\"kind\":\"node\",\"node\":\"n2\",\"pipeline\":\"\",\"state\":\"down\"' <<<\"\$0\"" "$out"
check "events: the leader n1 tells the new placement" grep -qE \
  '"kind":"placement","node":"n1","pipeline":"killed","detail":"epoch [0-9]+: stage .mid. runs on n2 \(was n2, n3\)' <<<"$out"

# -- a pinned stage's node frozen past its lease, then thawed ---------------------------------
start_node n3 3  # a fresh n3
check "the restarted n3 is up" wait_for 10 bash -c "\"$troupe\" status $admin | grep -qE '^n3 +up '"
check "... and the directory the killed n3 left behind is gone" bash -c "! compgen -G '${TMPDIR:-/tmp}/troupe-node-$killed_n3-*'"
pipeline frozen "" ", node: n2" ", nodes: [n2, n3], routing: by_stream" 1500 > frozen.yaml
out=$("$troupe" deploy frozen.yaml $admin 2>&1)
check "a pipeline with pre pinned to n2 and mid on n2 and n3 is deployed" contains "$out" "pipeline 'frozen' deployed"
check "its frames flow through n2 and n3" wait_for 10 flowing frozen mid n3
kill -STOP "${pids[1]}"
check "the frozen n2 is down once its lease ends, and mid runs on n3 alone" \
  wait_for 10 grep -q "pipeline 'frozen' (epoch [0-9]*): stage 'mid' runs on n3 (was n2, n3)" n1.log
check "pre, pinned to n2, waits for it" wait_for 5 grep -q "pipeline 'frozen': stage 'pre' waits for n2" n1.log
sleep 2
kill -CONT "${pids[1]}"
# It may have read the new placement (mid on n3 alone) before it finds its lease gone; it
# stops what runs here as it was placed, not what the newer record still places here.
fenced="stops the stages other nodes may take over (frozen/mid); stages only it may run go on"
check "the thawed n2 stops its share of mid (self-fencing) and keeps pre" wait_for 10 grep -qF "$fenced" n2.log
grep -qF "$fenced" n2.log || grep -E "(fence|lease|frozen)" n2.log | tail -8
check "it registers again" wait_for 10 grep -q "registered again with the cluster" n2.log
check "and is given its share of mid back" \
  wait_for 10 grep -q "pipeline 'frozen' (epoch [0-9]*): stage 'mid' runs on n2, n3 (was n3)" n1.log
check "the pipeline finishes" wait_for 60 finished frozen
check "... with every instance stopped" all_stopped frozen
status | grep -E '^(PIPELINE|frozen) '
check "nothing lost, nothing twice across the freeze" same_as_single frozen 1500
check "no frame of the freeze reached the sink twice" grep -q "total frames 4500 bytes [0-9]* duplicates 0" frozen-sum.txt
fenced=$(curl -s -m 5 "127.0.0.1:${port[15]}/metrics" | awk '/^troupe_link_fenced_frames_total\{node="n3",peer="n2"\}/ {print $2}')
echo "frames n3 dropped from the thawed n2 until it read the new placement: ${fenced:-none}"

# -- a pinned stage's node killed, then started again -------------------------------------------
pipeline restarted "" ", node: n2" ", nodes: [n2, n3], routing: by_stream" 1500 > restarted.yaml
out=$("$troupe" deploy restarted.yaml $admin 2>&1)
check "the pipeline is deployed" contains "$out" "pipeline 'restarted' deployed"
check "its frames flow through n2" wait_for 10 flowing restarted pre n2
kill -9 "${pids[1]}"
wait "${pids[1]}" 2>/dev/null
check "the killed n2 is down, and mid runs on n3 alone" \
  wait_for 10 grep -q "pipeline 'restarted' (epoch [0-9]*): stage 'mid' runs on n3 (was n2, n3)" n1.log
check "pre waits for n2" wait_for 5 grep -q "pipeline 'restarted': stage 'pre' waits for n2" n1.log
sleep 3
start_node n2 2
check "the restarted n2 starts pre again from the placement record" \
  wait_for 10 bash -c "\"$troupe\" status $admin | grep -qE '^restarted +pre +n2 +embedded +(running|stopped) '"
check "the pipeline finishes" wait_for 60 finished restarted
check "... with every instance stopped" all_stopped restarted
status | grep -E '^(PIPELINE|restarted) '
check "nothing lost, nothing twice across the restart" same_as_single restarted 1500
check "no frame of the restart reached the sink twice" \
  grep -q "total frames 4500 bytes [0-9]* duplicates 0" restarted-sum.txt

# -- a node: any stage whose next node has no room for it ---------------------------------------
# n3 again, with room for 200 MiB only: mid (faulty: 256 MiB) goes to n2, the one with room.
# n2 killed: the leader n1 gives mid to n3, which runs the fewest stages; n3 has no room, says
# so in the store, and n1 moves mid on to itself.
kill -9 "${pids[2]}"
wait "${pids[2]}" 2>/dev/null
sleep 3  # its lease ends
node_yaml n3 3 > n3.yaml
echo "capacity: {memory_mb: 200}" >> n3.yaml
"$troupe" node --config n3.yaml >> n3.log 2>&1 &
pids[2]=$!
check "n3 is up again, with room for 200 MiB" wait_for 10 members_up n2 n3
pipeline full "" "" ", node: any" 1500 > full.yaml
out=$("$troupe" deploy full.yaml $admin 2>&1)
check "a pipeline with mid on any node is deployed" contains "$out" "pipeline 'full' deployed"
check "mid runs on n2: n3 has no room for it" wait_for 10 flowing full mid n2
kill -9 "${pids[1]}"
wait "${pids[1]}" 2>/dev/null
check "n1 gives mid to n3 once n2's lease ends" \
  wait_for 10 grep -q "pipeline 'full' (epoch [0-9]*): stage 'mid' moves from n2 to node n3" n1.log
check "n3 has no room for it, and says why" wait_for 10 grep -qF \
  "pipeline 'full': no room here for stage mid: node n3 cannot take pipeline 'full': stage 'mid' (1 replica of 256 MiB): it needs 256 MiB of memory, 200 MiB free of 200 MiB (capacity in n3.yaml)" n3.log
check "n1 moves mid on to a node with room: itself" wait_for 10 grep -q \
  "pipeline 'full' (epoch [0-9]*): stage 'mid' moves from n3 to node n1 (n3 has no room for it)" n1.log
check "the pipeline finishes" wait_for 60 finished full
out=$("$troupe" events --output json --pipeline full $admin 2>&1)
check "events: n3 says it has no room for mid, and why" grep -qF \
  '"kind":"placement","node":"n3","pipeline":"full","state":"no room","detail":"stages mid: node n3 cannot take' <<<"$out"
status | grep -E '^(PIPELINE|full) '
check "nothing lost, nothing twice across the moves" same_as_single full 1500
check "no frame of the moves reached the sink twice" grep -q "total frames 4500 bytes [0-9]* duplicates 0" full-sum.txt
check "n3 withdrew its word once mid left it" wait_for 10 bash -c \
  "! etcdctl --endpoints $etcd_endpoints get --prefix --keys-only /troupe/ | grep -q '/refusals/full/'"
start_node n2 2

# -- the leader dies together with the node of a node: any stage ------------------------------
# Deployed through n3, which leads; src and sink on n2; mid on any node: n1 (it runs none).
admin3="--node 127.0.0.1:${port[11]} --token secret"
check "n2 is up again everywhere" wait_for 10 bash -c "\"$troupe\" status $admin3 | grep -qE '^n2 +up '"
pipeline leaderless ", node: n2" ", node: n2" ", node: any" 1500 > leaderless.yaml
out=$("$troupe" deploy leaderless.yaml $admin3 2>&1)
check "the pipeline is deployed through n3" contains "$out" "pipeline 'leaderless' deployed"
check "n3 leads it, mid runs on n1" wait_for 10 bash -c \
  "\"$troupe\" status $admin3 | grep -qE '^leaderless +running +[0-9]+ +n3 +mid@n1 '"
check "frames flow through n1" wait_for 10 bash -c \
  "\"$troupe\" status $admin3 | grep -qE '^leaderless +mid +n1 +embedded +running +1 +[1-9][0-9]'"
kill -9 "${pids[0]}" "${pids[2]}"
wait "${pids[0]}" "${pids[2]}" 2>/dev/null
check "n2 takes the leader key" wait_for 10 grep -q "this node leads pipeline 'leaderless' now" n2.log
check "and moves mid to itself" wait_for 10 grep -q "pipeline 'leaderless' (epoch [0-9]*): stage 'mid' moves from n1 to node n2" n2.log
admin2="--node 127.0.0.1:${port[10]} --token secret"
check "the pipeline finishes on n2" wait_for 60 bash -c "\"$troupe\" status $admin2 | grep -qE '^leaderless +finished '"
"$troupe" status $admin2 | grep -E '^(PIPELINE|leaderless) '
check "nothing lost, nothing twice" same_as_single leaderless 1500
check "no frame reached the sink twice" grep -q "total frames 4500 bytes [0-9]* duplicates 0" leaderless-sum.txt
check "mid started on n2 past the generations it ran on n1" \
  bash -c "\"$troupe\" status $admin2 | grep -qE '^leaderless +mid +n2 +embedded +stopped +2 '"
for n in n1 n2 n3; do
  check "$n logged no crash" bash -c "! grep -qiE 'segmentation|abort|terminate called' $n.log"
done
verdict
