#!/usr/bin/env bash
# Makes sure a Docker engine answers and prints the DOCKER_HOST to reach it.
# Reuses a running engine (DOCKER_HOST, the default socket, or one this script
# started before); otherwise starts Debian's dockerd with its state under
# /tmp/darktower-dockerd, so it never touches a system installation.
set -euo pipefail

state=/tmp/darktower-dockerd
ours=unix://$state/docker.sock

answers() { DOCKER_HOST=$1 timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

for host in "${DOCKER_HOST:-}" unix:///var/run/docker.sock "$ours"; do
  if [[ -n $host ]] && answers "$host"; then
    echo "$host"
    exit 0
  fi
done

command -v dockerd >/dev/null || { echo "dockerd not found: run scripts/install-test-deps.sh (Debian's docker.io)" >&2; exit 1; }
if [[ $(id -u) -ne 0 ]]; then
  echo "starting dockerd needs root; start a Docker engine yourself and export DOCKER_HOST" >&2
  exit 1
fi
mkdir -p "$state"
extra=()
# Quirk of some test machines: root without CAP_SYS_RESOURCE (bit 24 of the
# bounding set) cannot start any --privileged container (kind's nodes); the
# wrapper runtime drops that capability from each container's spec. Detected
# here, never assumed: on a normal host dockerd runs as installed.
capbnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
if (((16#$capbnd >> 24 & 1) == 0)); then
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  install -m 0755 "$here/runc-without-sys-resource" "$state/runc-without-sys-resource"
  extra+=(--add-runtime "darktower-runc=$state/runc-without-sys-resource" --default-runtime darktower-runc)
  echo "start-dockerd: root lacks CAP_SYS_RESOURCE; containers run through $state/runc-without-sys-resource" >&2
fi
nohup dockerd --host "$ours" --data-root "$state/data" --exec-root "$state/exec" \
  --pidfile "$state/dockerd.pid" "${extra[@]}" >"$state/dockerd.log" 2>&1 &
for _ in $(seq 60); do
  if answers "$ours"; then
    echo "$ours"
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not answer within 30 s; its log ($state/dockerd.log) ends:" >&2
tail -20 "$state/dockerd.log" >&2
exit 1
