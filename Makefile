# UPC: User Private Clouds for e-mission. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/e-mission/upc/internal/version.Version=$(VERSION)
BIN := bin
# Images built FROM scratch from these static binaries (cmd/upc-<name>).
IMAGES ?= pm pipeline metrics count router agent
MODE ?= docker
RESULTS ?= results

# testcontainers-go cannot pull its reaper here and, seeing /.dockerenv, would
# dial the default gateway: both settings are the project's, not the user's.
export TESTCONTAINERS_RYUK_DISABLED := true
export TESTCONTAINERS_HOST_OVERRIDE := 127.0.0.1
export CGO_ENABLED := 0

.PHONY: help build images test unit e2e bench lint clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## compile every binary into bin/
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

images: build ## build the FROM scratch service images and record their digests in build/images.json
	$(GO) run ./cmd/upc images build --bin $(BIN) --version $(VERSION) --out build/images.json $(IMAGES)

test: images ## vet, then run every test (unit and real Docker engine)
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...

e2e: images ## stand UPC up on the local Docker engine, run the default scenario, write the report to results/
	$(GO) run ./cmd/upc e2e --mode $(MODE) --images build/images.json --results $(RESULTS)

bench: images ## run the benchmarks and print the figures (see docs/BENCHMARKS.md)
	@mkdir -p $(RESULTS)
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 40m ./... | tee $(RESULTS)/bench.txt

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...

clean: ## remove build outputs and untagged (superseded) UPC images
	rm -rf $(BIN) build
	-docker image prune -f --filter label=upc.image
