#!/usr/bin/env bash
# A cluster whose peer and admin ports take TLS only: certificates from a CA of the test's own
# (openssl), two nodes and etcd on 127.0.0.1. The CLI reaches a node with the CA and the name
# its certificate carries; a plain client, a client that trusts another CA and a certificate
# for another name are refused, and the node names what it refused. A pipeline deployed across
# both nodes (the deploy check between them over TLS) has the digests of `troupe run`. A node
# without TLS says its traffic is not encrypted; one whose TLS files are missing or wrong is
# refused at start, naming the file. The nodes have an admin token of their own: admin calls
# with the cluster token are refused, the peers' calls with it are not. Bounded; cleaned up.
# Usage: tls_test.sh TROUPE_BINARY PLUGIN_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
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
for n in n1 n2; do certificate "$n" ca "DNS:$n,DNS:localhost,IP:127.0.0.1"; done
certificate impostor rogue-ca "DNS:n2,DNS:localhost"
check "the test's certificates were made" [ -s n1.pem ] && [ -s n2.key ] && [ -s impostor.pem ]

tls_node() {  # NAME INDEX: a node config with TLS, its files next to it, and an admin token
  node_yaml "$1" "$2"
  printf 'tls: {cert: %s.pem, key: %s.key, ca: ca.pem}\nadmin_token: boss\n' "$1" "$1"
}
for i in 1 2; do
  tls_node "n$i" "$i" > "n$i.yaml"
  "$troupe" node --config "n$i.yaml" >> "n$i.log" 2>&1 &
  pids[$((i - 1))]=$!
done
admin1="127.0.0.1:${port[9]}"
tls_status() { "$troupe" status --node "$admin1" --token boss --ca ca.pem --tls-name n1 "$@"; }
check "both nodes are up, as n1 says over TLS" wait_for 15 bash -c "$(declare -f tls_status); troupe='$troupe' admin1='$admin1'; tls_status | grep -qE '^n2 +up '"
check "a node with TLS does not warn that its traffic is not encrypted" bash -c "! grep -q 'not encrypted' n1.log"

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

# A node whose certificate another CA signed: its peers' calls to it fail the handshake.
node_yaml n3 3 > n3.yaml
printf 'tls: {cert: impostor.pem, key: impostor.key, ca: ca.pem}\n' >> n3.yaml
"$troupe" node --config n3.yaml >> n3.log 2>&1 &
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
echo "admin_token: secret" >> n4.yaml
out=$("$troupe" node --config n4.yaml --check 2>&1)
check "an admin token equal to the cluster token is refused" contains "$out" "field 'admin_token': expected a secret other than 'token'"
node_yaml n4 3 > n4.yaml
echo "admin_token: change-me" >> n4.yaml
out=$("$troupe" node --config n4.yaml --check 2>&1)
check "... and the documentation's example" contains "$out" "field 'admin_token': 'change-me' is the documentation's example"
kill -9 "${pids[2]}"; wait "${pids[2]}" 2>/dev/null
node_yaml n3 3 > plain.yaml
"$troupe" node --config plain.yaml > plain.log 2>&1 &
pids[2]=$!
check "a node without TLS says its traffic is not encrypted" \
  wait_for 10 grep -q "peer and admin traffic is not encrypted (no 'tls' in plain.yaml)" plain.log
check "n1 is still running" kill -0 "${pids[0]}"
[ "$failed" -gt 0 ] && tail -20 n1.log
verdict
