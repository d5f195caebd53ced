#!/usr/bin/env bash
# Restarts the full environment (teardown + setup), or one service in both
# regions: restart.sh [ac|gc|mc|mh].
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# > 1)); then
  die "usage: restart.sh [ac|gc|mc|mh]"
fi
if (($# == 0)); then
  "$here/teardown.sh"
  exec "$here/setup.sh"
fi

target=$(workload "$1")
need kubectl "https://kubernetes.io/docs/tasks/tools/"
cluster_exists || die "no kind cluster $cluster: run infra/local/setup.sh first"
use_cluster
for ns in "${regions[@]}"; do
  say "restarting $target in $ns"
  kubectl --context "kind-$cluster" -n "$ns" rollout restart "$target"
done
for ns in "${regions[@]}"; do
  kubectl --context "kind-$cluster" -n "$ns" rollout status "$target" --timeout=300s
done
