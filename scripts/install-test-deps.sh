#!/usr/bin/env bash
# Installs, from Debian's packages, the servers the test suite starts on
# loopback: PostgreSQL, Redis, the CNCF distribution registry and a Docker
# engine (docker.io: dockerd, containerd, runc) and shellcheck for the
# infra/local scripts. Idempotent; installs only what is missing. (The
# simulated cluster's etcd, control plane and kwok are built from the Go
# module proxy on first use: pipelines/sim.) DARKTOWER_TEST_DEPS=no-docker
# leaves the Docker engine out: the Dagger ci function runs the tests in a
# container without one.
set -euo pipefail

need=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v docker-registry >/dev/null || need+=(docker-registry)
if [[ ${DARKTOWER_TEST_DEPS:-} != no-docker ]]; then
  command -v dockerd >/dev/null || need+=(docker.io)
fi
command -v shellcheck >/dev/null || need+=(shellcheck)
# The real cluster: debootstrap makes the kind node's Debian root; jq edits
# container specs in scripts/runc-without-sys-resource.
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v jq >/dev/null || need+=(jq)

if ((${#need[@]} == 0)); then
  echo "test dependencies: all present"
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to apt-get install ${need[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "test dependencies: installing ${need[*]} from Debian"
"${sudo[@]}" apt-get update -qq
# The packages' own services are not wanted: the tests start throwaway
# servers on free loopback ports. policy-rc.d stops dpkg from starting them.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod +x "$policy"
  created_policy=1
fi
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
if ((created_policy)); then "${sudo[@]}" rm -f "$policy"; fi
echo "test dependencies: installed ${need[*]}"
