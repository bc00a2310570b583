#!/usr/bin/env bash
# The cluster's store (etcd) under faults, with three real `troupe node` processes and an etcd
# cluster of three members on 127.0.0.1 (leases of 2 s). Each case compares the sink's digests
# with `troupe run` of the same file.
# - One etcd member is killed mid-run: the nodes go on with the other two (no node is taken
#   for down, none stops a stage), and the pipeline finishes.
# - Every etcd member is stopped for twice the lease: the nodes keep running what they run
#   and change no placement (every node says the store is down, none fences itself); when etcd
#   is back they renew their leases and the pipeline finishes.
# Bounded; cleaned up.
# Usage: store_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
source "$(dirname "$0")/nodes.sh"
free_ports 24
start_etcd 3
for i in 1 2 3; do start_node "n$i" "$i"; done
admin="--node 127.0.0.1:${port[9]} --token secret"
status() { "$troupe" status $admin 2>/dev/null; }
check "the three nodes are up" wait_for 10 members_up n2 n3

slow_mid_pipeline single ", node: n1" > single.yaml
timeout 60 "$troupe" run single.yaml > single.out 2>&1
epoch_of() { status | awk -v p="$1" '$1 == p && ($2 == "running" || $2 == "stopping") {print $3}'; }

# -- one etcd member killed ------------------------------------------------------------------------
slow_mid_pipeline member ", nodes: [n2, n3], routing: by_stream" > member.yaml
out=$("$troupe" deploy member.yaml $admin 2>&1)
check "the pipeline is deployed" contains "$out" "pipeline 'member' deployed"
check "frames flow" wait_for 10 flowing member mid n3
epoch=$(epoch_of member)
kill -9 "${etcd_pids[0]}"   # the member every node asks first
sleep 4
check "no node was taken for down" bash -c "! grep -q 'is down: its lease ended' n1.log n2.log n3.log"
check "no node stopped a stage for want of its lease" bash -c "! grep -q 'stops the stages other nodes may take over' n1.log n2.log n3.log"
check "the placement did not change" [ "$(epoch_of member)" = "$epoch" ]
check "the pipeline finishes with two etcd members" wait_for 60 finished member
check "... with every instance stopped" all_stopped member
check "nothing lost, nothing twice" same_digests member
start_etcd_member 1
check "the killed etcd member is back" wait_for 20 etcdctl --endpoints "$etcd_endpoints" endpoint health

# -- every etcd member stopped for a while ---------------------------------------------------------
slow_mid_pipeline outage ", nodes: [n2, n3], routing: by_stream" > outage.yaml
out=$("$troupe" deploy outage.yaml $admin 2>&1)
check "the pipeline is deployed" contains "$out" "pipeline 'outage' deployed"
check "frames flow" wait_for 10 flowing outage mid n3
epoch=$(epoch_of outage)
sum_before=$(status | awk '$1 == "outage" && $2 == "sink" {print $7}')
kill -9 "${etcd_pids[@]}"
wait "${etcd_pids[@]}" 2>/dev/null
sleep 4
for n in n1 n2 n3; do
  check "$n says the store answers no member, and keeps running" grep -q "the cluster's store answers no member" $n.log
done
check "no node stopped a stage" bash -c "! grep -q 'stops the stages other nodes may take over' n1.log n2.log n3.log"
sum_during=$(status | awk '$1 == "outage" && $2 == "sink" {print $7}')
echo "the sink took ${sum_before:-?} frames before the outage, ${sum_during:-?} after 4 s of it"
check "frames went on flowing while etcd was down" [ "${sum_during:-0}" -gt "${sum_before:-0}" ]
for k in 1 2 3; do start_etcd_member "$k"; done
check "etcd is back" wait_for 20 etcdctl --endpoints "$etcd_endpoints" endpoint health
check "the nodes renew their leases again" wait_for 10 grep -q "the cluster's store answers again" n1.log
check "no node was taken for down" bash -c "! grep -q 'is down: its lease ended' n1.log n2.log n3.log"
check "the pipeline finishes" wait_for 60 finished outage
check "... with every instance stopped" all_stopped outage
check "the placement never changed during the outage" \
  bash -c "! grep -qE \"pipeline 'outage' \\(epoch [0-9]+\\): stage\" n1.log n2.log n3.log"
check "nothing lost, nothing twice" same_digests outage
for n in n1 n2 n3; do
  check "$n is still running" kill -0 "${pids[$((${n#n} - 1))]}"
  check "$n logged no crash" bash -c "! grep -qiE 'segmentation|abort|terminate called' $n.log"
done
verdict
