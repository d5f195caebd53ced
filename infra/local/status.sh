#!/usr/bin/env bash
# Shows the local environment: cluster, nodes, registry, platform and the
# services in each region with their readiness. Exits 1 if anything of
# Dark Tower is not ready.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_docker
need kubectl "https://kubernetes.io/docs/tasks/tools/"

if ! cluster_exists; then
  say "no kind cluster $cluster (infra/local/setup.sh creates it)"
  exit 1
fi
use_cluster
k=(kubectl --context "kind-$cluster")
say "nodes"
dt cluster status --name "$cluster" || true
"${k[@]}" get nodes -L darktower.io/pool
say "registry"
docker inspect -f '{{.Name}} {{.State.Status}}' "$registry" 2>/dev/null || echo "not running"
say "platform"
"${k[@]}" get pods -A -l 'app.kubernetes.io/part-of!=dark-tower' --field-selector=status.phase!=Succeeded \
  -o custom-columns=NAMESPACE:.metadata.namespace,POD:.metadata.name,PHASE:.status.phase --no-headers |
  grep -Ev '^(kube-system|local-path-storage) ' || true
status=0
for ns in "${regions[@]}" dark-tower-data; do
  say "$ns"
  "${k[@]}" -n "$ns" get pods -l app.kubernetes.io/part-of=dark-tower -o wide || true
  not_ready=$("${k[@]}" -n "$ns" get pods -l app.kubernetes.io/part-of=dark-tower \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | awk '$2 != "True"' || true)
  if [[ -n $not_ready ]]; then
    echo "not ready:"
    echo "$not_ready"
    status=1
  fi
done
exit $status
