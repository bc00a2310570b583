# Sourced by the multi-node tests: a work directory, free loopback ports, an etcd cluster of
# the test's own, `troupe node` processes that are always reaped (thawed first, then killed),
# and bounded waits.
# Needs $troupe. Sets $work (the current directory from here on) and the arrays pids, port.
work=$(mktemp -d)
chmod 755 "$work"  # nodes may run under uids of their own (see run_as)
pids=()
etcd_pids=()
cleanup() {
  for p in "${pids[@]}" "${etcd_pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ -n "${cleanup_extra:-}" ] && eval "$cleanup_extra"
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

# free_ports N: N ports the kernel hands out on 127.0.0.1, in the array `port`.
free_ports() {
  read -r -a port <<<"$(python3 -c "
import socket
socks = [socket.socket() for _ in range($1)]
for s in socks: s.bind(('127.0.0.1', 0))
print(' '.join(str(s.getsockname()[1]) for s in socks))")"
}

# wait_for SECONDS COMMAND...: until the command succeeds, at most that long.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -ge $end ] && return 1; sleep 0.1; done
}

# The layout of `port` (free_ports 24 first): node INDEX (1..3) has peers on port[INDEX],
# frames on port[INDEX+4], admin on port[INDEX+8] and metrics on port[INDEX+12]; etcd member
# K (1..3) has clients on port[16+K] and peers on port[20+K].
etcd_client_port() { echo "${port[$((16 + $1))]}"; }

# start_etcd N: an etcd cluster of N members (1..3) on loopback, with short elections so that
# a lease can be a second; waits until it answers. Sets $etcd_endpoints (HOST:PORT,...).
# Member K logs to etcd-K.log; its pid is etcd_pids[K-1].
start_etcd() {
  local n=$1 k initial=""
  etcd_endpoints=""
  for ((k = 1; k <= n; k++)); do
    initial+="${initial:+,}e$k=http://127.0.0.1:${port[$((20 + k))]}"
    etcd_endpoints+="${etcd_endpoints:+,}127.0.0.1:${port[$((16 + k))]}"
  done
  for ((k = 1; k <= n; k++)); do start_etcd_member "$k" "$initial"; done
  check "etcd answers" wait_for 20 etcdctl --endpoints "$etcd_endpoints" endpoint health
}

# start_etcd_member K INITIAL_CLUSTER: member K (again, with its data kept).
start_etcd_member() {
  local k=$1
  etcd --name "e$k" --data-dir "$work/etcd-$k" \
    --listen-client-urls "http://127.0.0.1:${port[$((16 + k))]}" \
    --advertise-client-urls "http://127.0.0.1:${port[$((16 + k))]}" \
    --listen-peer-urls "http://127.0.0.1:${port[$((20 + k))]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${port[$((20 + k))]}" \
    --initial-cluster "${2:-$etcd_initial}" --initial-cluster-state new \
    --heartbeat-interval 25 --election-timeout 250 >>"etcd-$k.log" 2>&1 &
  etcd_pids[$((k - 1))]=$!
  etcd_initial="${2:-$etcd_initial}"
}

# node_yaml NAME INDEX [LEASE_MS]: the config of node INDEX (1..3), plugins also from
# $work/extra-NAME.
node_yaml() {
  cat <<Y
name: $1
listen: 127.0.0.1:${port[$2]}
data: 127.0.0.1:${port[$(($2 + 4))]}
admin: 127.0.0.1:${port[$(($2 + 8))]}
metrics: 127.0.0.1:${port[$(($2 + 12))]}
etcd: [${etcd_endpoints//,/, }]
plugin_paths: [$work/extra-$1]
token: secret
lease_ms: ${3:-2000}
Y
}

# start_node NAME INDEX [LEASE_MS]: node INDEX of a cluster on 127.0.0.1 whose state is in the
# test's etcd. Logs to NAME.log. With $run_as set (a uid), it runs under that uid (see
# partition.sh).
start_node() {
  node_yaml "$@" > "$1.yaml"
  if [ -n "${run_as:-}" ]; then
    setpriv --reuid="$run_as" --regid="$run_as" --clear-groups "$troupe" node --config "$1.yaml" >> "$1.log" 2>&1 &
  else
    "$troupe" node --config "$1.yaml" >> "$1.log" 2>&1 &
  fi
  pids[$(($2 - 1))]=$!
}

# all_stopped PIPELINE: every instance of it that any node lists is stopped (else shows them).
# Needs the test's own `status` (troupe status through a node that is up).
all_stopped() {
  local s; s=$(status)
  [ "$(grep -cE "^$1 +[^ ]+ +n[0-9] .* stopped " <<<"$s")" -eq "$(grep -cE "^$1 +[^ ]+ +n[0-9] " <<<"$s")" ] ||
    { grep -E "^$1 " <<<"$s"; false; }
}

# node_up NAME INDEX_ASKED: NAME is up as node INDEX_ASKED sees it.
node_up() { "$troupe" status --node "127.0.0.1:${port[$(($2 + 8))]}" --token secret 2>/dev/null | grep -qE "^$1 +(up|self) "; }
# members_up NAME...: each is up as node 1 sees it.
members_up() { local n; for n in "$@"; do node_up "$n" 1 || return 1; done; }
# flowing PIPELINE INSTANCE NODE: that instance runs there, generation 1, and has taken ten
# frames or more (through the test's own `status`).
flowing() { status | grep -qE "^$1 +$2 +$3 +embedded +running +1 +[1-9][0-9]"; }

# slow_mid_pipeline NAME MID_PLACEMENT: src -> mid -> sink, 4,500 frames on three streams
# paced at 150 a second, mid (faulty) taking 2 ms a frame and placed by MID_PLACEMENT (for
# example ", node: any"); the sink's digests go to out/NAME-sum.txt (out/ is writable by nodes
# under uids of their own). same_digests NAME: they equal those of the pipeline named single.
# finished NAME: the cluster says the pipeline finished (through the test's `status`).
mkdir -p out && chmod 777 out
slow_mid_pipeline() {
  cat <<Y
pipeline: $1
window: 8
stages:
  - {name: src, plugin: testsrc, config: {width: 48, height: 32, count: 1500, streams: 3, rate: 150}}
  - {name: mid, plugin: faulty$2, config: {action: slow, every: 1, slow_ms: 2}}
  - {name: sink, plugin: checksum, config: {output: $work/out/$1-sum.txt}}
edges: ["src -> mid -> sink"]
Y
}
same_digests() { diff <(grep '^stream' "out/$1-sum.txt") <(grep '^stream' out/single-sum.txt); }
finished() { status | grep -qE "^$1 +finished "; }

# node_uid INDEX: the uid node INDEX runs under when started with run_as=$(node_uid INDEX).
node_uid() { echo $((40000 + $1)); }

# cut_node INDEX: cuts off node INDEX (started under its node_uid): everything it sends is
# dropped, and everything sent to its four ports. heal_node INDEX undoes it. Only loopback
# traffic of the test's own processes is touched.
cut_node() {
  local uid ports
  uid=$(node_uid "$1")
  ports="${port[$1]}, ${port[$(($1 + 4))]}, ${port[$(($1 + 8))]}, ${port[$(($1 + 12))]}"
  nft -f - <<N || return 1
table inet troupe_test_$uid {
  chain out {
    type filter hook output priority 0; policy accept;
    meta skuid $uid drop
    ip daddr 127.0.0.0/8 tcp dport { $ports } drop
  }
}
N
  cleanup_extra+="nft delete table inet troupe_test_$uid 2>/dev/null; "
}
heal_node() { nft delete table inet "troupe_test_$(node_uid "$1")"; }

# across_and_single: across.yaml (testsrc on the node deploying, invert on n2, checksum) and
# single.yaml, the same in one process, run now with `troupe run`; across_matches_single compares
# the sinks' digests.
across_and_single() {
  cat > across.yaml <<Y
pipeline: across
stages:
  - {name: src, plugin: testsrc, config: {width: 32, height: 16, count: 300, streams: 2}}
  - {name: mid, plugin: invert, node: n2}
  - {name: sink, plugin: checksum, config: {output: $work/across-sum.txt}}
edges: ["src -> mid -> sink"]
Y
  sed "s/pipeline: across/pipeline: single/; s/across-sum/single-sum/" across.yaml > single.yaml
  timeout 60 "$troupe" run single.yaml > single.out 2>&1
}
across_matches_single() { diff <(grep '^stream' across-sum.txt) <(grep '^stream' single-sum.txt); }
