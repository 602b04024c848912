# UPC: User Private Clouds for e-mission. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/e-mission/upc/internal/version.Version=$(VERSION)
BIN := bin
# Images built FROM scratch from these static binaries (cmd/upc-<name>).
IMAGES ?= pm pipeline metrics count router agent aggregator
MODE ?= docker
# Local Kubernetes tiers for cluster-up: fake (kwok), real (kubelet + containerd) or both.
NODES ?= both
RESULTS ?= results
SCENARIO ?= scenarios/default.yaml

export CGO_ENABLED := 0

.PHONY: help build images test unit e2e bench fuzz lint clean cluster-deps cluster-up cluster-down test-kubernetes

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## compile the root module's binaries into bin/ (no Pulumi; bin/upc-infra is infra-build's)
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

images: build ## build the FROM scratch service images and record their digests in build/images.json
	$(GO) run ./cmd/upc images build --bin $(BIN) --version $(VERSION) --out build/images.json $(IMAGES)

test: images ## vet, then run every test (unit and real Docker engine; the TestCluster* ones are test-kubernetes'), then infra-test
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m -skip '^TestCluster' ./...
	@$(MAKE) --no-print-directory infra-test

e2e: images $(if $(filter kubernetes,$(MODE)),cluster-deps) ## stand UPC up (MODE=docker: the local engine; MODE=kubernetes: the local cluster), run SCENARIO (default scenarios/default.yaml), report to results/
	$(if $(filter kubernetes,$(MODE)),$(GO) run ./cmd/upc cluster up --nodes $(NODES) --reuse --images build/images.json)
	$(GO) run ./cmd/upc e2e --mode $(MODE) --scenario $(SCENARIO) --images build/images.json --results $(RESULTS)

# The real node's CNI plugins come from Debian (containerd comes with Docker).
cluster-deps: ## install the local cluster's Debian packages when missing (containerd, containernetworking-plugins)
	@if [ ! -x /usr/lib/cni/bridge ] || ! command -v containerd >/dev/null; then \
	  echo 'cluster-deps: installing containerd and containernetworking-plugins from Debian'; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd containernetworking-plugins; \
	fi

cluster-up: images cluster-deps ## build (cached) and start the local Kubernetes (NODES=fake|real|both) with our images on its node
	$(GO) run ./cmd/upc cluster up --nodes $(NODES) --reuse --images build/images.json

cluster-down: ## stop the local Kubernetes and remove every process, chain, network and file it made
	$(GO) run ./cmd/upc cluster down

test-kubernetes: images cluster-deps ## Kubernetes mode on a fresh local cluster: conformance (kwok and real node), e2e, then cluster-down
	$(GO) run ./cmd/upc cluster down
	@mkdir -p $(RESULTS)
	# The real node's runtime alone (containerd, networks, Down), before the cluster takes its network.
	CI=true $(GO) test -count=1 -timeout 10m -run '^TestClusterNodeRuntime$$' -v ./harness/cluster/ 2>&1 | tee $(RESULTS)/test-node-runtime.txt; exit $${PIPESTATUS[0]}
	$(GO) run ./cmd/upc cluster up --nodes both --images build/images.json
	set -o pipefail; trap '$(GO) run ./cmd/upc cluster down' EXIT; \
	  CI=true $(GO) test -count=1 -timeout 30m -run '^TestCluster' -v ./router/kubernetes/ 2>&1 | tee $(RESULTS)/test-kubernetes.txt; t=$$?; \
	  $(GO) run ./cmd/upc e2e --mode kubernetes --images build/images.json --results $(RESULTS); e=$$?; \
	  exit $$(( t || e ))

fuzz: ## run every fuzz target for FUZZTIME each (default 20s); crashers land in testdata/fuzz/ and become regression cases
	GO=$(GO) FUZZTIME=$(or $(FUZZTIME),20s) scripts/fuzz.sh

bench: images ## run the benchmarks and print the figures (see docs/BENCHMARKS.md)
	@mkdir -p $(RESULTS)
	set -o pipefail; $(GO) test -run '^$$' -bench . -skip '^(BenchmarkCluster|BenchmarkYearInContainer)' -benchmem -count 1 -timeout 40m ./... | tee $(RESULTS)/bench.txt
	set -o pipefail; $(GO) test -run '^$$' -bench YearInContainer -benchtime 1x -timeout 60m ./cmd/upc-pm/ | tee -a $(RESULTS)/bench.txt

lint: ## gofmt (every Go file) and go vet (the root module and infra/)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...
	cd infra && $(GO) vet ./...

clean: ## remove build outputs and untagged (superseded) UPC images
	rm -rf $(BIN) build
	-docker image prune -f --filter label=upc.image

# Pulumi (Pulumi.yaml, infra/): a Go module of its own (infra/go.mod), so that
# nothing above compiles Pulumi. `upc infra ...` runs bin/upc-infra (beside
# upc, else on PATH). The engine and the provider plugins are used where
# installed, else built from the Go module proxy into ~/.cache/upc-tools.
INFRA_NODES ?= real
.PHONY: infra-build tools infra-test test-infra

infra-build: ## compile upc-infra (the infra module's command, which `upc infra` runs) into bin/ (compiles Pulumi: minutes cold)
	@mkdir -p $(BIN)
	cd infra && $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(abspath $(BIN))/ ./cmd/upc-infra

tools: ## the Pulumi engine (with a stand-in Go language host where none is installed) and the kubernetes and upc provider plugins (cached; cold build ~20 min, 5.3 GB)
	./scripts/tools.sh

infra-test: ## vet infra/, then its tests with Pulumi's mocks (every stack; no engine, no cluster; the integration tests are test-infra's)
	cd infra && $(GO) vet ./...
	cd infra && $(GO) test -count=1 -skip '^TestIntegration' ./...

test-infra: tools images infra-build cluster-deps ## bin/upc infra (bin/upc-infra) up/destroy --stack existing, then `pulumi up`/`destroy --stack existing` with the CLI from the root, on the local real-node cluster (started if needed); the kind stack where it can run
	$(GO) run ./cmd/upc cluster up --nodes $(INFRA_NODES) --reuse --images build/images.json
	cd infra && UPC_TEST_INFRA=1 UPC_TEST_UPC_BIN=$(abspath $(BIN))/upc $(GO) test -count=1 -timeout 30m -run '^TestIntegrationInfra' -v ./cmd/upc-infra/
