# Shared by the infra/local scripts (sourced, not run).
# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this

cluster=dark-tower
registry=kind-registry
registry_port=5001
regions=(region-us-west region-us-east)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export GOTOOLCHAIN=go1.27.3

say() { printf '==> %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# need CMD HOW: fail early, naming the missing tool and how to get it.
need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is required: $2"
}

need_docker() {
  need docker "install Docker (https://docs.docker.com/engine/install/)"
  docker info >/dev/null 2>&1 || die "the Docker engine does not answer: start it (or set DOCKER_HOST)"
}

# dt ARGS: the pipeline's CLI (the cluster commands drive kind's own Go API;
# no kind binary is needed).
dt() { (cd "$root" && go run . "$@"); }

cluster_exists() { dt cluster list 2>/dev/null | grep -x "$cluster" >/dev/null; }

# use_cluster: point kubectl at the cluster (its kubeconfig is kept by the CLI).
use_cluster() {
  KUBECONFIG=$(dt cluster kubeconfig --name "$cluster")
  export KUBECONFIG
}

# cluster_nodes: the node containers of the cluster.
cluster_nodes() { docker ps --filter "label=io.x-k8s.kind.cluster=$cluster" --format '{{.Names}}'; }

# workload SHORT: the kind/name of a service's workload (ac|gc|mc|mh).
workload() {
  case $1 in
    ac) echo statefulset/ac-service ;;
    gc) echo deployment/global-controller ;;
    mc) echo deployment/meeting-controller ;;
    mh) echo deployment/media-handler ;;
    *) die "unknown service \"$1\": use ac, gc, mc or mh" ;;
  esac
}
