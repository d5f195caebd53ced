# Thin aliases; the work lives in Go (pipelines/, services/, ci/) and scripts/.
export GOTOOLCHAIN := go1.27.3

.PHONY: test build-all build-platform bench-build bench-pipeline bench-cluster bench-flags services lint dagger-check sim-up sim-down validate-server node-image cluster-up cluster-down preview-up preview-down chaos canary-check canary-install canary-watch

## test: install what the tests need, then gofmt, go vet, every test and dagger-check (the README's test command)
test:
	scripts/test.sh

## build-all: the main job: build every image into dist/ (go run . build-all $(ARGS));
## air-gapped it runs as is (the Go vulnerability database and the skeleton base, announced),
## or with a prepared Trivy DB: make build-all ARGS="--base skeleton --vuln-db DIR" (see the README)
build-all:
	go run . build-all $(ARGS)

## build-platform: Flagger's and Traefik's images (images/platform) through the same stages into dist/platform
## (canary install builds them itself for its cluster); e.g. make build-platform ARGS="--platforms linux/amd64 --vuln-db DIR"
build-platform:
	go run . build-all --images images/platform --out dist/platform $(ARGS)

## bench-build: build-all vs ko vs go build, cold and warm, sizes and reproducibility (installs ko from the module proxy into ~/.cache)
bench-build:
	go run ./bench/buildbench

## bench-pipeline: the whole job (build, SBOMs, gate, sign, attest, push) by build-all vs the upstream CLI chain (ko, syft, trivy, cosign at go.mod's versions, installed into ~/.cache) vs go build, cold and warm, wall time and peak RSS
bench-pipeline:
	go run ./bench/pipelinebench

## bench-cluster: the real cluster (kind on the node image built here) against the simulated one, up and down, in one run
bench-cluster:
	go run ./bench/clusterbench

## bench-flags: flag propagation, etcd write to the value held by N = 1, 100, 1000 clients of the flag gateway over loopback: p50/p99/max and memory per subscriber (etcd built from the Go module proxy, cached)
bench-flags:
	go run ./bench/flagbench

## services: build the four service binaries into bin/
services:
	cd services && CGO_ENABLED=0 go build -trimpath -o ../bin/ ./cmd/...

## lint: gofmt and go vet only
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet ./... && (cd services && go vet ./...) && (cd policy && go vet ./...)

## dagger-check: generate the Dagger module's bindings offline (codegen v0.21.7), then go build, vet and test ci/
dagger-check:
	go run ./tools/dagger-check

## sim-up / sim-down: the simulated cluster (validate-server applies every overlay to it)
sim-up:
	go run . sim up
sim-down:
	go run . sim down
validate-server:
	go run . validate --server

## node-image / cluster-up / cluster-down: the real cluster (kind through its Go API; node image built from Debian and the Go module proxy where kindest/node cannot be pulled)
node-image:
	go run . node-image
cluster-up:
	go run . cluster up $(ARGS)
cluster-down:
	go run . cluster down $(ARGS)

## preview-up / preview-down: pull request $(PR)'s preview (its own kind cluster) on this Docker engine; up deploys dist/ (build-all for this platform first)
preview-up:
	go run . preview up --pr $(PR) $(ARGS)
preview-down:
	go run . preview down --pr $(PR)

## chaos: the repository's chaos engines against pull request $(PR)'s preview (chaos run --cluster pr-$(PR)); ARGS="--only ENGINE --duration 20s --interval 10s"
chaos:
	go run . chaos run --cluster pr-$(PR) $(ARGS)

## canary-check: the canary proof on a real cluster: a canaryfault build in a preview, Flagger v1.36.1 and Traefik
## built from the module proxy, global-controller and meeting-controller through good, 2x/1.4x error-rate and
## 2.5x/1.9x p99 releases, each rollback timed (docs/operations/canary.md); also part of `make test`
canary-check:
	DOCKER_HOST=$$(scripts/start-dockerd.sh) go test -count=1 -timeout 50m -v -run TestCanaryReleasesOnARealCluster ./pipelines/canary/

## canary-install: Flagger, the Gateway and the Canaries into pull request $(PR)'s preview
canary-install:
	go run . canary install --pr $(PR)

## canary-watch: follow $(SERVICE)'s canary in pull request $(PR)'s preview; exit 0 on promotion, 1 on rollback
canary-watch:
	go run . canary watch --pr $(PR) --service $(SERVICE)
