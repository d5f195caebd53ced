#!/usr/bin/env bash
# Destroys the full local environment: the kind cluster and the local
# registry. Idempotent: nothing to remove is not an error.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_docker

if cluster_exists; then
  say "deleting kind cluster $cluster"
  dt cluster down --name "$cluster"
else
  say "no kind cluster $cluster"
fi
if docker inspect "$registry" >/dev/null 2>&1; then
  say "removing the local registry"
  docker rm -f "$registry" >/dev/null
else
  say "no local registry"
fi
