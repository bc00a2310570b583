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
# The image, as hadolint would judge it (Debian 12 has no hadolint): the rules that apply.
df="$docker/Dockerfile"
check "the Dockerfile has a build stage and a runtime stage" test "$(grep -c '^FROM ' "$df")" -eq 2
last=$(awk '/^FROM /{n++} n==2' "$df")
check "the runtime stage is slim" grep -q '^FROM debian:12-slim' <<<"$last"
check "... and installs no compilers, tests or Prometheus" bash -c '! grep -qE "build-essential|g\+\+|cmake|gtest|prometheus |scripts/setup" <<<"$0"' "$last"
check "... but the package the build stage made, with its dependencies" grep -q 'apt-get install -y --no-install-recommends /tmp/troupe.deb' <<<"$last"
check "... removing apt's lists in the same layer" grep -q 'rm -rf /var/lib/apt/lists/\*' <<<"$last"
check "the image runs as a user of its own, not root" grep -qE '^USER troupe$' <<<"$last"
joined=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$df")  # continuation lines joined
check "the image has a health check" grep -qE '^HEALTHCHECK .*CMD \["troupe", "status"' <<<"$joined"
check "CMD is in JSON form" grep -qE '^CMD \[' <<<"$last"
check "every apt-get install skips recommends" bash -c '! grep "apt-get install" "$0" | grep -v -- "--no-install-recommends"' "$df"
check ".dockerignore keeps build folders and git out" bash -c 'grep -qx "build" "$0" && grep -qx "build-\*" "$0" && grep -qx ".git" "$0"' "$2/.dockerignore"
check "the etcd services check etcd, not a node" contains "$config" "etcdctl"
check "the node service names its admin address for troupe commands" contains "$config" "TROUPE_NODE: 127.0.0.1:7200"
check "promtool accepts prometheus.yml and the alert rules it loads" promtool check config "$docker/prometheus.yml"
check "promtool checks the alert rules" promtool check rules "$docker/alerts.yml"
out=$(promtool test rules "$(dirname "$0")/alerts_test.yml" 2>&1)
check "each alert fires on the series that should fire it, and only then" [ $? -eq 0 ]
echo "$out" | grep -A20 FAILED
for s in node prometheus grafana; do
  check "compose.yaml has the service $s" grep -qE "^  $s:$" <<<"$config"
done
check "the nodes publish their admin and metrics ports" \
  python3 -c 'import sys,yaml; p=yaml.safe_load(sys.stdin)["services"]["node"]["ports"]; assert {str(x["target"]) for x in p} == {"7200", "9100"}, p' <<<"$config"
# The dashboard: Grafana's JSON, the panels users look for, and only metrics a node exports
# (each name appears in the source as it is registered).
src="$2"
out=$(python3 - "$docker/grafana/dashboards/troupe.json" <<'P'
import json, re, sys
d = json.load(open(sys.argv[1]))
titles = [p["title"] for p in d["panels"]]
for want in ("Frames/s per stage", "Queue depth per stage", "Restarts", "Dead letters", "Data link bytes/s",
             "Processing latency (p50, p99)"):
    assert want in titles, want
names = set()
for p in d["panels"]:
    assert p["datasource"]["uid"] == "prometheus" and p["targets"], p["title"]
    for t in p["targets"]:
        names |= set(re.findall(r"\btroupe_[a-z_]+", t["expr"]))
print("\n".join(sorted(names)))
P
)
check "the dashboard is Grafana JSON with the panels users look for" [ $? -eq 0 -a -n "$out" ]
for m in $out; do
  base=$(sed -E 's/_bucket$//' <<<"$m")
  check "the dashboard's $m is a metric troupe exports" grep -rqF "\"$base\"" "$src/actors" "$src/node"
done
check "Grafana is provisioned with the dashboard and Prometheus" \
  grep -q "path: /var/lib/grafana/dashboards" "$docker/grafana/provisioning/dashboards/troupe.yml"
verdict
