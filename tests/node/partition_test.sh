#!/usr/bin/env bash
# Network partitions of real `troupe node` processes on 127.0.0.1, made with nftables: each node
# runs under a uid of its own, and a partition drops everything that uid sends and everything
# sent to the node's ports (nothing but loopback is touched). Leases of 2 s; each partition
# lasts twice that, then heals. Every case compares the sink's digests with `troupe run` of
# the same file: every frame once.
# - The node of a middle stage (`node: any`) is cut off: it stops the stage before its lease
#   can end (self-fencing), the leader moves the stage once the lease ended, and the healed
#   node registers again and stops what is left of its part.
# - The leader, which also runs the source and the sink, is cut off: another node takes the
#   leader key, nothing pinned moves, and the pipeline goes on when the partition heals.
# No node crashes; each case ends with every instance stopped. Bounded; cleaned up.
# Usage: partition_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
source "$(dirname "$0")/nodes.sh"
if [ "$(id -u)" -ne 0 ] || ! nft list tables >/dev/null 2>&1; then
  echo "FAIL: partitions need root and nftables (scripts/setup installs nftables; run the tests as root)"
  exit 1
fi
free_ports 24
start_etcd 1
for i in 1 2 3; do run_as=$(node_uid $i) start_node "n$i" "$i"; done
admin="--node 127.0.0.1:${port[9]} --token secret"
admin2="--node 127.0.0.1:${port[10]} --token secret"
status() { "$troupe" status $admin 2>/dev/null; }
check "the three nodes are up" wait_for 10 members_up n2 n3
check "each node runs under its own uid" bash -c "[ \$(ps -o uid= -p ${pids[1]} | tr -d ' ') = $(node_uid 2) ]"

slow_mid_pipeline single ", node: n1" > single.yaml
timeout 60 "$troupe" run single.yaml > single.out 2>&1
check "the single-node run takes every frame" grep -q "total frames 4500 bytes" out/single-sum.txt

# -- the node of a middle stage is cut off --------------------------------------------------------
slow_mid_pipeline middle ", node: any" > middle.yaml
out=$("$troupe" deploy middle.yaml $admin 2>&1)
check "mid goes to any node: n2, which runs none of the pipeline" contains "$out" "pipeline 'middle' deployed" || echo "$out"
check "frames flow through n2" wait_for 10 flowing middle mid n2
cut_node 2
cut_at=$SECONDS
check "the cut-off n2 stops mid before its lease can end (self-fencing)" \
  wait_for 5 grep -q "stops the stages other nodes may take over (middle/mid)" n2.log
check "... within the lease (2 s)" [ $((SECONDS - cut_at)) -le 3 ]
check "once n2's lease ended, n1 (the leader) moves mid to n3" \
  wait_for 10 grep -q "pipeline 'middle' (epoch [0-9]*): stage 'mid' moves from n2 to node n3" n1.log
sleep $((cut_at + 4 - SECONDS > 0 ? cut_at + 4 - SECONDS : 0))
heal_node 2
check "the healed n2 registers again" wait_for 10 grep -q "registered again with the cluster" n2.log
check "... and stops what is left of its part" \
  wait_for 10 grep -q "pipeline 'middle' runs no stage on this node any more: stopping its part here" n2.log
check "the pipeline finishes" wait_for 60 finished middle
check "... with every instance stopped" all_stopped middle
status | grep -E '^(PIPELINE|middle) '
check "nothing lost, nothing twice across the partition" same_digests middle
check "no frame reached the sink twice" grep -q "total frames 4500 bytes [0-9]* duplicates 0" out/middle-sum.txt

# -- the leader, running the source and the sink, is cut off -----------------------------------
slow_mid_pipeline leader ", nodes: [n2, n3], routing: by_stream" > leader.yaml
out=$("$troupe" deploy leader.yaml $admin 2>&1)
check "a pipeline led by n1, with its source and sink there, is deployed" contains "$out" "pipeline 'leader' deployed" ||
  echo "$out"
check "frames flow" wait_for 10 flowing leader mid n3
cut_node 1
cut_at=$SECONDS
check "the cut-off n1 keeps its pinned source and sink" \
  wait_for 5 grep -q "stops the stages other nodes may take over (none runs here); stages only it may run go on" n1.log
check "another node takes the leader key once n1's lease ended" wait_for 10 bash -c \
  "grep -q \"this node leads pipeline 'leader' now\" n2.log || grep -q \"this node leads pipeline 'leader' now\" n3.log"
check "... and the source and sink wait for n1" wait_for 10 bash -c \
  "grep -q \"pipeline 'leader': stage 'src' waits for n1\" n2.log n3.log"
sleep $((cut_at + 4 - SECONDS > 0 ? cut_at + 4 - SECONDS : 0))
heal_node 1
check "the healed n1 registers again" wait_for 10 grep -q "registered again with the cluster" n1.log
check "the pipeline finishes" wait_for 60 bash -c "\"$troupe\" status $admin2 | grep -qE '^leader +finished '"
check "... with every instance stopped" all_stopped leader
status | grep -E '^(PIPELINE|leader) '
check "nothing lost, nothing twice across the leader's partition" same_digests leader
check "no frame reached the sink twice" grep -q "total frames 4500 bytes [0-9]* duplicates 0" out/leader-sum.txt
check "no stage was placed again (they are pinned, or their nodes stayed up)" \
  bash -c "! grep -qE \"pipeline 'leader' \\(epoch [0-9]+\\): stage\" n1.log n2.log n3.log"

for n in n1 n2 n3; do
  check "$n is still running" kill -0 "${pids[$((${n#n} - 1))]}"
  check "$n logged no crash" bash -c "! grep -qiE 'segmentation|abort|terminate called' $n.log"
done
verdict
