# Thin aliases; the work lives in Go (pipelines/, services/) and scripts/.
export GOTOOLCHAIN := go1.27.3

.PHONY: test build-all bench-build services lint

## test: install what the tests need, then gofmt, go vet and every test (the README's test command)
test:
	scripts/test.sh

## build-all: the main job: build every image into dist/ (go run . build-all $(ARGS));
## air-gapped: make build-all ARGS="--base skeleton --vuln-db DIR" (a prepared Trivy DB; see the README)
build-all:
	go run . build-all $(ARGS)

## bench-build: build-all vs ko vs go build, cold and warm, sizes and reproducibility (installs ko from the module proxy into ~/.cache)
bench-build:
	go run ./bench/buildbench

## services: build the four service binaries into bin/
services:
	cd services && CGO_ENABLED=0 go build -trimpath -o ../bin/ ./cmd/...

## lint: gofmt and go vet only
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet ./... && (cd services && go vet ./...) && (cd policy && go vet ./...)
