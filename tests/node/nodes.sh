# Sourced by the multi-node tests: a work directory, free loopback ports, `troupe node`
# processes that are always reaped (thawed first, then killed), and bounded waits.
# Needs $troupe. Sets $work (the current directory from here on) and the arrays pids, port.
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
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

# start_node NAME INDEX: node INDEX (1..3) of a cluster on 127.0.0.1 seeded by node 1, with
# peers on port[INDEX], frames on port[INDEX+4], admin on port[INDEX+8] and metrics on
# port[INDEX+12] (free_ports 16 first); plugins also from $work/extra-NAME. Logs to NAME.log.
start_node() {
  cat > "$1.yaml" <<Y
name: $1
listen: 127.0.0.1:${port[$2]}
data: 127.0.0.1:${port[$(($2 + 4))]}
admin: 127.0.0.1:${port[$(($2 + 8))]}
metrics: 127.0.0.1:${port[$(($2 + 12))]}
seeds: [127.0.0.1:${port[1]}]
plugin_paths: [$work/extra-$1]
token: secret
heartbeat_ms: 200
down_after_ms: 1500
Y
  "$troupe" node --config "$1.yaml" > "$1.log" 2>&1 &
  pids+=($!)
}
