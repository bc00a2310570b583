#!/usr/bin/env bash
# A node's ports under hostile input from 127.0.0.1, without a token. Data port: a flood of
# idle connections, hellos that claim a gigabyte, a hello that trickles in a byte a second.
# Peer and admin ports: a flood of idle connections, messages that claim 16 MiB before any
# call carried the token, a message that trickles in. The node refuses them (logged and
# counted), its threads and memory stay bounded, and afterwards it still answers `troupe
# status` and runs a pipeline across nodes with the digests of `troupe run`. Bounded;
# cleaned up.
# Usage: ports_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
source "$(dirname "$0")/nodes.sh"
free_ports 24
start_etcd 1
for i in 1 2; do start_node "n$i" "$i"; done
admin="--node 127.0.0.1:${port[9]} --token secret"
check "the two nodes are up" wait_for 10 node_up n2 1
data=${port[5]}  # n1's data port
threads() { ls /proc/"${pids[0]}"/task | wc -l; }
rss_mb() { awk '/^VmRSS/ {print int($2 / 1024)}' /proc/"${pids[0]}"/status; }
metric() { curl -s -m 5 "127.0.0.1:${port[13]}/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $2} END {print s + 0}'; }
threads_before=$(threads)
rss_before=$(rss_mb)

# 1000 connections that say nothing, held open together.
python3 - "$data" <<'P' &
import socket, sys, time
socks = []
for _ in range(1000):
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
        socks.append(s)
    except OSError:
        pass
time.sleep(3)
P
flood=$!
sleep 2
threads_during=$(threads)
echo "threads: $threads_before before, $threads_during with 1000 idle data connections open"
check "idle connections do not each get threads" [ "$threads_during" -lt $((threads_before + 40)) ]
wait $flood
check "the refused connections are counted" [ "$(metric troupe_link_refused_connections_total)" -gt 0 ]
check "... and logged, once in a while" grep -qE "refused [0-9]+ data connections? \(the last from 127.0.0.1:[0-9]+\): 8 connections from 127.0.0.1 wait for their hello" n1.log

# Hellos that claim 1 GiB of header or payload: refused before anything is allocated.
python3 - "$data" <<'P'
import socket, struct, sys
for words, payload in ((1 << 27, 0), (8, 1 << 30), (1 << 21, 0)):
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
        s.sendall(struct.pack("<IIQ", 0x4c505254, words, payload))
        try:
            s.recv(1)
        except OSError:
            pass
        s.close()
P
check "a hello larger than 4 KiB is refused, naming its size" \
  wait_for 5 grep -q "closed the data link from 127.0.0.1:[0-9]*: a hello of 16777216 bytes (at most 4096 before the token is checked)" n1.log
rss_after=$(rss_mb)
echo "RSS: $rss_before MB before, $rss_after MB after twelve hellos claiming up to 1 GiB"
check "memory stays bounded" [ "$rss_after" -lt $((rss_before + 64)) ]

# A hello that trickles in, a byte a second: closed at the handshake deadline.
deadline_lines() { grep -cE "closed the data link from 127.0.0.1:[0-9]*: no (whole )?hello within 5 s" n1.log; }
before=$(deadline_lines)
python3 - "$data" <<'P' &
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
for b in struct.pack("<IIQ", 0x4c505254, 4, 0) + b"\0" * 32:
    try:
        s.send(bytes([b]))
    except OSError:
        break
    time.sleep(1)
P
slow=$!
check "a trickling hello is cut off at the handshake deadline" wait_for 12 bash -c "[ \$(grep -cE 'no (whole )?hello within 5 s' n1.log) -gt $before ]"
kill "$slow" 2>/dev/null; wait "$slow" 2>/dev/null

# The peer and admin ports (KJ's event loop, no thread per connection): 300 idle
# connections to each, held open together; a few are taken, the rest refused at accept.
peer=${port[1]} admin_port=${port[9]}
metric_of() { curl -s -m 5 "127.0.0.1:${port[13]}/metrics" | awk -v m="$1" -v l="$2" 'index($1, m) == 1 && index($1, l) {s += $2} END {print s + 0}'; }
python3 - "$peer" "$admin_port" <<'P' &
import socket, sys, time
socks = []
for port in sys.argv[1:]:
    for _ in range(300):
        try:
            socks.append(socket.create_connection(("127.0.0.1", int(port)), timeout=2))
        except OSError:
            pass
time.sleep(2)
P
flood=$!
sleep 1.5
open_during=$(metric_of troupe_node_open_connections 'port="admin"')
echo "admin connections open during a flood of 300: $open_during"
check "at most 8 connections from one host wait for their token" [ "$open_during" -le 8 ]
wait $flood
check "the refused connections to both ports are counted" \
  bash -c "[ $(metric_of troupe_node_refused_connections_total 'port="peer"') -gt 0 ] && [ $(metric_of troupe_node_refused_connections_total 'port="admin"') -gt 0 ]"
check "... and logged, once in a while" grep -qE "refused [0-9]+ admin connections? \(the last from 127.0.0.1:[0-9]+\): 8 connections from 127.0.0.1 wait for a call with the token" n1.log

# Twenty connections to each port whose first message claims 16 MiB, each followed by a
# MiB of it: closed at the header, before anything is allocated for it.
rss_before=$(rss_mb)
python3 - "$peer" "$admin_port" <<'P'
import socket, struct, sys
for port in sys.argv[1:]:
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
        try:
            s.sendall(struct.pack("<II", 0, (16 << 20) // 8 - 1))
            s.sendall(b"\0" * (1 << 20))
            s.recv(1)
        except OSError:
            pass
        s.close()
P
check "a large message before the token is refused at its header, naming its size" \
  wait_for 5 grep -q "closed the connection from 127.0.0.1:[0-9]*: a message of 16777208 bytes before the token was checked (at most 4096)" n1.log
rss_after=$(rss_mb)
echo "RSS: $rss_before MB before, $rss_after MB after forty messages claiming 16 MiB on the peer and admin ports"
check "memory stays bounded" [ "$rss_after" -lt $((rss_before + 32)) ]

# A message that trickles in on the admin port, a byte a second, and a connection that says
# nothing: both closed at the handshake deadline, counted.
python3 - "$admin_port" <<'P' &
import socket, struct, sys, time
quiet = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
for b in struct.pack("<II", 0, 4) + b"\0" * 32:
    try:
        s.send(bytes([b]))
    except OSError:
        break
    time.sleep(1)
P
slow=$!
check "a trickling message and a silent connection are cut off at the handshake deadline" \
  wait_for 12 bash -c "[ \$(grep -cE 'closed the admin connection from 127.0.0.1:[0-9]*: no call with the token within 5 s' n1.log) -ge 2 ]"
kill "$slow" 2>/dev/null; wait "$slow" 2>/dev/null
check "... and counted" [ "$(metric_of troupe_node_connection_deadlines_total 'port="admin"')" -ge 2 ]
check "no admin connection is left open" wait_for 5 bash -c "[ \$(curl -s -m 5 127.0.0.1:${port[13]}/metrics | awk '/^troupe_node_open_connections.*admin/ {print \$2}') = 0 ]"

# The node goes on: status, and a pipeline across both nodes with the single-node digests.
check "the node still answers troupe status" bash -c "\"$troupe\" status $admin | grep -qE '^n2 +up '"
across_and_single
out=$("$troupe" deploy across.yaml $admin 2>&1)
check "a pipeline across both nodes is deployed" contains "$out" "pipeline 'across' deployed"
check "it finishes" wait_for 60 bash -c "\"$troupe\" status $admin | grep -qE '^across +finished '"
check "with the digests of troupe run" across_matches_single
check "n1 is still running" kill -0 "${pids[0]}"
check "n1 logged no crash" bash -c "! grep -qiE 'segmentation|abort|terminate called' n1.log"
[ "$failed" -gt 0 ] && grep -E "refused|closed the data" n1.log | tail -5
verdict
