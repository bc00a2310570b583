#!/usr/bin/env bash
# The compose cluster's files, as far as a machine without a Docker engine can check them:
# compose.yaml as docker-compose reads it (three etcd members, a scalable node service, the
# node config mounted), docker/node.yaml as a node would take it in a container (name and
# address from the hostname, etcd and token from the environment), prometheus.yml with promtool.
# Usage: docker_test.sh TROUPE_BINARY SOURCE_DIR
set -uo pipefail
source "$(dirname "$0")/check.sh"
troupe="$1"
docker="$2/docker"
out=$(env -u TROUPE_TOKEN docker-compose -f "$docker/compose.yaml" config 2>&1)
check "compose refuses to start without a token of the user's own" contains "$out" "set TROUPE_TOKEN to a secret of your own"
config=$(TROUPE_TOKEN=k3yOfMine docker-compose -f "$docker/compose.yaml" config 2>&1)
check "docker-compose reads compose.yaml" [ $? -eq 0 ]
for s in e1 e2 e3 node prometheus; do
  check "compose.yaml has the service $s" grep -qE "^  $s:$" <<<"$config"
done
check "the nodes find etcd through \$TROUPE_ETCD" contains "$config" "TROUPE_ETCD: e1:2379,e2:2379,e3:2379"
check "the node service mounts node.yaml" contains "$config" "node.yaml:/config/node.yaml:ro"
check "the node service has no fixed name (it scales)" bash -c "! grep -qE 'container_name|hostname:' <<<\"\$0\"" "$config"
out=$(TROUPE_ETCD=e1:2379,e2:2379,e3:2379 TROUPE_TOKEN=t "$troupe" node --config "$docker/node.yaml" --check 2>&1)
check "a node takes docker/node.yaml" [ $? -eq 0 ]
echo "$out"
host=$(hostname)
check "... named after its hostname" contains "$out" "node $host of cluster troupe"
check "... reached at its hostname" contains "$out" "reached at $host:7100"
check "... with etcd from the environment" contains "$out" "etcd at e1:2379,e2:2379,e3:2379"
out=$(TROUPE_TOKEN=t "$troupe" node --config "$docker/node.yaml" --check 2>&1)
check "without \$TROUPE_ETCD the node config is refused, naming the field" \
  contains "$out" "node.yaml: field 'etcd': expected the etcd endpoints"
out=$(TROUPE_ETCD=e1:2379 TROUPE_TOKEN=change-me "$troupe" node --config "$docker/node.yaml" --check 2>&1)
check "the documentation's example token is refused" \
  contains "$out" "node.yaml: field 'token': 'change-me' is the documentation's example; set a secret of your own"
check "promtool accepts prometheus.yml" promtool check config "$docker/prometheus.yml"
verdict
