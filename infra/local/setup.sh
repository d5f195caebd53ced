#!/usr/bin/env bash
# Creates the full local environment (ADR-0012 §2): a kind cluster with a
# local registry, the platform (charts pinned in infra/platform/charts.yaml
# and the platform manifests), fresh local secrets, and the four services
# built from this checkout, pinned by digest, in both simulated regions.
# Idempotent: run it again to bring an existing environment up to date.
#
# Offline: set DARKTOWER_BASE=skeleton to build on the built-in base; the
# kind node image, registry:2 and the platform's images must already be in
# the local Docker engine.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_docker
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"
need go "Go 1.27 (https://go.dev/dl/)"

say "local registry on localhost:$registry_port"
if [[ $(docker inspect -f '{{.State.Running}}' "$registry" 2>/dev/null || true) != true ]]; then
  docker rm -f "$registry" >/dev/null 2>&1 || true
  docker run -d --restart=always -p "127.0.0.1:$registry_port:5000" --name "$registry" registry:2 >/dev/null
fi

say "kind cluster $cluster"
# Reuses a running cluster; the node image is kindest/node where it can be
# pulled, else built here from Debian and the Go module proxy.
dt cluster up --config "$here/kind-config.yaml" ${DARKTOWER_NODES:+--nodes "$DARKTOWER_NODES"}
use_cluster
# Nodes pull localhost:5001/... from the registry container (KEP-1755).
for node in $(cluster_nodes); do
  docker exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:$registry_port"
  printf '[host."http://%s:5000"]\n' "$registry" |
    docker exec -i "$node" tee "/etc/containerd/certs.d/localhost:$registry_port/hosts.toml" >/dev/null
done
if [[ $(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$registry") == null ]]; then
  docker network connect kind "$registry"
fi
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:$registry_port"
YAML

say "platform charts"
while IFS=$'\t' read -r name repo chart version namespace values; do
  extra=()
  if [[ $name == linkerd-control-plane ]]; then
    # The trust anchor and identity issuer come from cert-manager.
    kubectl apply -k "$root/infra/platform/linkerd"
    kubectl -n linkerd wait --for=condition=Ready --timeout=120s certificate/linkerd-trust-anchor certificate/linkerd-identity-issuer
    anchor=$(mktemp)
    kubectl -n linkerd get secret linkerd-trust-anchor -o jsonpath='{.data.tls\.crt}' | base64 -d >"$anchor"
    extra=(--set-file "identityTrustAnchorsPEM=$anchor")
  fi
  if [[ $name == litmus-core ]]; then
    kubectl apply -k "$root/infra/platform/chaos/operator"
  fi
  echo "    $name $version"
  helm upgrade --install "$name" "$chart" --repo "$repo" --version "$version" \
    --namespace "$namespace" --create-namespace --values "$root/infra/platform/$values" \
    --wait --timeout 10m "${extra[@]}" >/dev/null
done < <(cd "$root" && go run . platform-charts)

say "local secrets (generated once, kept across runs)"
kubectl apply -k "$root/infra/platform/external-secrets/stores/local" >/dev/null
if ! kubectl -n dark-tower-local-secrets get secret dark-tower-ac-service >/dev/null 2>&1; then
  (cd "$root" && go run . dev-secrets --service-namespaces "$(IFS=,; echo "${regions[*]}")") | kubectl apply -f - >/dev/null
fi

say "platform manifests"
for component in database observability security chaos; do
  kubectl apply -k "$root/infra/platform/$component" >/dev/null
done

say "images: build-all, pushed to the local registry"
(cd "$root" && go run . build-all --base "${DARKTOWER_BASE:-locked}" --platforms "linux/$(go env GOARCH)" \
  --push "localhost:$registry_port/darktower" --out "$root/dist/local")
(cd "$root" && go run . pin-images --manifest dist/local/manifest.json --kustomization infra/overlays/local/common/kustomization.yaml \
  --services ac-service,global-controller,meeting-controller,media-handler \
  --registry "localhost:$registry_port/darktower")

say "services, both regions"
kubectl apply -k "$root/infra/overlays/local" >/dev/null
for ns in "${regions[@]}"; do
  for short in ac gc mc mh; do
    kubectl -n "$ns" rollout status "$(workload "$short")" --timeout=300s
  done
done
say "ready: infra/local/status.sh shows the environment"
