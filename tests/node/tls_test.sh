#!/usr/bin/env bash
# A cluster whose peer, admin and data ports take TLS only: certificates from a CA of the test's
# own (openssl), three nodes and etcd on 127.0.0.1. The demo placed across the three (frames
# over mutually authenticated TLS data links) has the digests of `troupe run`; a plain
# connection to a data port, and a client without a certificate on a peer port, are refused
# and named. The CLI reaches a node with the CA and the name
# its certificate carries; a plain client, a client that trusts another CA and a certificate
# for another name are refused, and the node names what it refused. A pipeline deployed across
# both nodes (the deploy check between them over TLS) has the digests of `troupe run`. A node
# without TLS says its traffic is not encrypted; one whose TLS files are missing or wrong is
# refused at start, naming the file. The nodes have an admin token of their own: admin calls
# with the cluster token are refused, the peers' calls with it are not. Bounded; cleaned up.
# Usage: tls_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
repo=$(cd "$(dirname "$0")/../.." && pwd)
troupe="$1"
export TROUPE_PLUGIN_PATH="$2"
source "$(dirname "$0")/nodes.sh"
free_ports 24
start_etcd 1

# A CA, a certificate per node (its name, localhost and 127.0.0.1), and a CA nobody trusts.
certificate() {  # NAME CA SAN
  openssl req -x509 -CA "$2.pem" -CAkey "$2.key" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1.key" -out "$1.pem" -days 2 -subj "/CN=$1" -addext "subjectAltName=$3" \
    -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth,clientAuth" 2>/dev/null
}
for ca in ca rogue-ca; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$ca.key" -out "$ca.pem" \
    -days 2 -subj "/CN=$ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
done
for n in n1 n2 n3; do certificate "$n" ca "DNS:$n,DNS:localhost,IP:127.0.0.1"; done
certificate impostor rogue-ca "DNS:n2,DNS:localhost"
check "the test's certificates were made" bash -c "[ -s n1.pem ] && [ -s n2.key ] && [ -s impostor.pem ]"

tls_node() {  # NAME INDEX: a node config with TLS, its files next to it, and an admin token
  node_yaml "$1" "$2"
  printf 'tls: {cert: %s.pem, key: %s.key, ca: ca.pem}\nadmin_token: boss\n' "$1" "$1"
}
for i in 1 2 3; do
  tls_node "n$i" "$i" > "n$i.yaml"
  "$troupe" node --config "n$i.yaml" >> "n$i.log" 2>&1 &
  pids[$((i - 1))]=$!
done
admin1="127.0.0.1:${port[9]}"
tls_status() { "$troupe" status --node "$admin1" --token boss --ca ca.pem --tls-name n1 "$@"; }
check "the three nodes are up, as n1 says over TLS" wait_for 15 bash -c "$(declare -f tls_status); troupe='$troupe' admin1='$admin1'; s=\$(tls_status); grep -qE '^n2 +up ' <<<\"\$s\" && grep -qE '^n3 +up ' <<<\"\$s\""
check "a node with TLS does not warn that its traffic is not encrypted" bash -c "! grep -q 'not encrypted' n1.log"

# The demo as examples/cluster.yaml places it (smaller frames): source and sink on n1, invert on
# n2, blur on n2 and n3, watermark anywhere; every frame crosses TLS data links.
sed -e 's/width: 1280, height: 720, count: 120/width: 320, height: 180, count: 60/' \
    -e "s#output: cluster-checksum.txt#output: $work/cluster-sum.txt#" "$repo/examples/cluster.yaml" > placed.yaml
out=$("$troupe" deploy placed.yaml --node "$admin1" --token boss --ca ca.pem --tls-name n1 2>&1)
check "the demo is deployed across the three TLS nodes" contains "$out" "pipeline 'cluster-demo' deployed"
check "it finishes" wait_for 60 bash -c "$(declare -f tls_status); troupe='$troupe' admin1='$admin1'; tls_status | grep -qE '^cluster-demo +finished '"
sed "s#$work/cluster-sum.txt#$work/demo-single-sum.txt#" placed.yaml > demo-single.yaml
timeout 60 "$troupe" run demo-single.yaml > demo-single.out 2>&1
check "the single-node run completes" grep -q "total frames 120" demo-single-sum.txt
check "the sink's digests across the TLS nodes equal those of troupe run" diff cluster-sum.txt demo-single-sum.txt
check "the data links were TLS, both ways certified" grep -q "data link from node n2" n1.log
for i in 1 2 3; do
  m=$(curl -s -m 5 "127.0.0.1:${port[$((12 + i))]}/metrics")
  bad=$(grep -E '^troupe_link_bad_messages_total' <<<"$m" | awk '{print $2}')
  check "n$i refused no data link of the cluster's own" [ "${bad:-x}" = 0 ]
done
m=$(curl -s -m 5 "127.0.0.1:${port[13]}/metrics")
sent=$(grep -E "^troupe_link_frames_sent_total\{node=\"n1\",peer=\"n2\"\} " <<<"$m" | awk '{print $2}')
check "n1 sent every frame to n2 over the link (${sent:-none})" awk -v v="${sent:-0}" 'BEGIN { exit !(v >= 120) }'

# A plain connection to a data port, and a client without a certificate on a peer port.
python3 - "${port[5]}" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"TRPL" + bytes(60))
s.settimeout(5)
assert s.recv(1) == b"", "the data port answered a plain connection"
PY
check "a plain connection to the data port is closed" [ $? -eq 0 ]
check "... and named" wait_for 5 grep -qE "closed the data link from 127.0.0.1:[0-9]+: not a TLS handshake" n1.log
out=$("$troupe" status --node "127.0.0.1:${port[1]}" --token secret --ca ca.pem --tls-name n1 2>&1); rc=$?
check "a client without a certificate cannot call the peer port" [ "$rc" -ne 0 ]
check "... and the node names it" wait_for 5 grep -q "the client presented no certificate" n1.log

out=$("$troupe" status --node "$admin1" --token boss 2>&1); rc=$?
check "a plain admin client is refused" [ "$rc" -ne 0 ]
check "... and told to give the CA" contains "$out" "give its CA with --ca"
check "the node names the plain connection" \
  wait_for 5 grep -qE "closed the connection from 127.0.0.1:[0-9]+: not a TLS handshake \(a plain connection\? this port takes TLS only\)" n1.log
out=$(TROUPE_CA=rogue-ca.pem "$troupe" status --node "$admin1" --token boss --tls-name n1 2>&1); rc=$?
check "a client that trusts another CA refuses the node" [ "$rc" -ne 0 ]
check "... saying why" contains "$out" "certificate is not trusted"
out=$("$troupe" status --node "$admin1" --token boss --ca ca.pem --tls-name n2 2>&1); rc=$?
check "a certificate for another name is refused" [ "$rc" -ne 0 ]
check "... saying why" contains "$out" "hostname mismatch"
out=$(TROUPE_CA=ca.pem "$troupe" status --node "localhost:${port[9]}" --token boss 2>&1)
check "the CA from \$TROUPE_CA and the name from --node" contains "$out" "n1           self"
out=$("$troupe" status --node "$admin1" --token wrong --ca ca.pem --tls-name n1 2>&1)
check "over TLS the token is still checked" contains "$out" "refused by node n1: wrong admin token"
out=$("$troupe" status --node "$admin1" --token secret --ca ca.pem --tls-name n1 2>&1)
check "the cluster token does not open the admin port when it has a token of its own" \
  contains "$out" "refused by node n1: wrong admin token"

# A node whose certificate another CA signed (in n3's place): its peers' calls to it fail the
# handshake.
kill -9 "${pids[2]}"; wait "${pids[2]}" 2>/dev/null
node_yaml n5 3 > n5.yaml
printf 'tls: {cert: impostor.pem, key: impostor.key, ca: ca.pem}\n' >> n5.yaml
"$troupe" node --config n5.yaml >> n5.log 2>&1 &
pids[2]=$!

# A pipeline across both TLS nodes: the digests of troupe run.
across_and_single
out=$("$troupe" deploy across.yaml --node "$admin1" --token boss --ca ca.pem --tls-name n1 2>&1)
check "a pipeline across both nodes is deployed over TLS" contains "$out" "pipeline 'across' deployed"
check "it finishes" wait_for 60 bash -c "$(declare -f tls_status); troupe='$troupe' admin1='$admin1'; tls_status | grep -qE '^across +finished '"
check "with the digests of troupe run" across_matches_single
check "n1 could not reach the impostor: its certificate is not from the cluster's CA" \
  wait_for 10 grep -q "certificate is not trusted" n1.log

# Config errors name the file and field; a node without TLS warns.
node_yaml n4 3 > n4.yaml
printf 'tls: {cert: missing.pem, key: n1.key, ca: ca.pem}\n' >> n4.yaml
out=$("$troupe" node --config n4.yaml --check 2>&1); rc=$?
check "a missing certificate file is refused" [ "$rc" -ne 0 ]
check "... naming the field and file" contains "$out" "n4.yaml: field 'tls.cert': cannot read 'missing.pem' (expected a file)"
node_yaml n4 3 > n4.yaml
printf 'tls: {cert: n1.key, key: n1.key, ca: ca.pem}\n' >> n4.yaml
out=$("$troupe" node --config n4.yaml --check 2>&1)
check "a key given as the certificate is named" contains "$out" "field 'tls.cert': expected a PEM file with a CERTIFICATE"
node_yaml n4 3 > n4.yaml
printf 'tls: {cert: n1.pem, key: n2.key, ca: ca.pem}\n' >> n4.yaml
out=$("$troupe" node --config n4.yaml --check 2>&1)
check "a key that is not the certificate's is named" contains "$out" "n4.yaml: field 'tls.key': it is not the certificate's key"
node_yaml n4 3 > n4.yaml
echo "admin_token: secret" >> n4.yaml
out=$("$troupe" node --config n4.yaml --check 2>&1)
check "an admin token equal to the cluster token is refused" contains "$out" "field 'admin_token': expected a secret other than 'token'"
node_yaml n4 3 > n4.yaml
echo "admin_token: change-me" >> n4.yaml
out=$("$troupe" node --config n4.yaml --check 2>&1)
check "... and the documentation's example" contains "$out" "field 'admin_token': 'change-me' is the documentation's example"
kill -9 "${pids[2]}"; wait "${pids[2]}" 2>/dev/null
node_yaml n6 3 > plain.yaml
"$troupe" node --config plain.yaml > plain.log 2>&1 &
pids[2]=$!
check "a node without TLS says its traffic is not encrypted" \
  wait_for 10 grep -q "peer, admin and data traffic is not encrypted (no 'tls' in plain.yaml)" plain.log
check "n1 is still running" kill -0 "${pids[0]}"
[ "$failed" -gt 0 ] && tail -20 n1.log
verdict
