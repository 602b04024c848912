#!/usr/bin/env bash
# make tools: the Pulumi engine, the Kubernetes provider plugin and UPC's own
# provider plugin, for `upc infra` (bin/upc-infra) and the infra tests.
#
# An installed `pulumi` (on PATH) and installed plugins are used as they are.
# Otherwise each is built from the Go module proxy into a versioned cache,
# $UPC_TOOLS (default ~/.cache/upc-tools), and a build is skipped when its
# output is there already. Cold, on 2 cores: the engine ~7 min (2.3 GB of
# memory), the Kubernetes provider ~10 min (5.3 GB); see docs/infrastructure.md "Tools".
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${UPC_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/upc-tools}
ENGINE_VERSION=v3.274.1
K8S_VERSION=4.32.0
K8S_PROVIDER_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4
UPC_PROVIDER_VERSION=0.1.0 # infra/provider.Version

ENGINE_ROOT=$TOOLS/pulumi-$ENGINE_VERSION
K8S_BIN=$TOOLS/kubernetes-v$K8S_VERSION/bin/pulumi-resource-kubernetes
UPC_BIN=$TOOLS/upc-provider/bin/pulumi-resource-upc

export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export CGO_ENABLED=0
mkdir -p "$TOOLS"

say() { printf 'tools: %s\n' "$*" >&2; }

# timed NAME CMD...: run CMD, report its wall time.
timed() {
	local name=$1 start=$SECONDS
	shift
	"$@"
	say "$name took $((SECONDS - start)) s"
}

# The engine.
if [[ -x $ENGINE_ROOT/bin/pulumi ]]; then
	PULUMI=$ENGINE_ROOT/bin/pulumi
	say "engine $ENGINE_VERSION: cached at $PULUMI"
elif command -v pulumi >/dev/null; then
	PULUMI=$(command -v pulumi)
	say "engine: using the installed $PULUMI ($("$PULUMI" version))"
else
	say "engine $ENGINE_VERSION: building from the module proxy (about 7 min cold)"
	mkdir -p "$ENGINE_ROOT/bin"
	(cd "$ROOT/scripts/tools/pulumi" && timed "engine build" go build -trimpath \
		-ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$ENGINE_VERSION" \
		-o "$ENGINE_ROOT/bin/pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
	mv "$ENGINE_ROOT/bin/pulumi.tmp" "$ENGINE_ROOT/bin/pulumi"
	PULUMI=$ENGINE_ROOT/bin/pulumi
fi

# The Go language host, which `pulumi up` on Pulumi.yaml (runtime: go) needs.
# An installed engine comes with the real one; the module proxy here does not
# serve it, so beside an engine built here goes a small stand-in
# (infra/cmd/pulumi-language-go), rebuilt every time so it follows the tree.
# The engine finds a language host beside its own executable first.
if [[ $PULUMI == "$ENGINE_ROOT/bin/pulumi" ]]; then
	(cd "$ROOT/infra" && timed "go language host (stand-in) build" go build -trimpath \
		-o "$ENGINE_ROOT/bin/pulumi-language-go.tmp" ./cmd/pulumi-language-go)
	mv "$ENGINE_ROOT/bin/pulumi-language-go.tmp" "$ENGINE_ROOT/bin/pulumi-language-go"
	say "go language host: the stand-in at $ENGINE_ROOT/bin/pulumi-language-go"
else
	say "go language host: the installed engine's own"
fi

installed() { # installed NAME VERSION
	"$PULUMI" plugin ls 2>/dev/null | awk -v n="$1" -v v="$2" '$1 == n && $3 == v { found = 1 } END { exit !found }'
}

# The Kubernetes provider plugin.
if installed kubernetes "$K8S_VERSION"; then
	say "kubernetes provider $K8S_VERSION: installed"
else
	if [[ ! -x $K8S_BIN ]]; then
		say "kubernetes provider $K8S_VERSION: building from the module proxy (about 10 min cold, 5.3 GB)"
		mkdir -p "$(dirname "$K8S_BIN")"
		(
			cd "$ROOT/scripts/tools/kubernetes"
			go mod download "$K8S_PROVIDER_MODULE"
			src=$(go list -m -f '{{.Dir}}' "$K8S_PROVIDER_MODULE")/cmd/pulumi-resource-kubernetes
			go run ./gen "$src" "$K8S_VERSION" .
			timed "kubernetes provider build" go build -trimpath \
				-ldflags "-s -w -X $K8S_PROVIDER_MODULE/pkg/version.Version=$K8S_VERSION" \
				-o "$K8S_BIN.tmp" .
		)
		mv "$K8S_BIN.tmp" "$K8S_BIN"
	fi
	"$PULUMI" plugin install resource kubernetes "$K8S_VERSION" --file "$K8S_BIN" --reinstall
	say "kubernetes provider $K8S_VERSION: installed from $K8S_BIN"
fi

# UPC's provider plugin: small, rebuilt every time so it follows the tree.
mkdir -p "$(dirname "$UPC_BIN")"
# It is a package of the infra module (infra/go.mod), built from there.
(cd "$ROOT/infra" && timed "upc provider build" go build -trimpath -o "$UPC_BIN" ./provider)
"$PULUMI" plugin install resource upc "$UPC_PROVIDER_VERSION" --file "$UPC_BIN" --reinstall
say "upc provider $UPC_PROVIDER_VERSION: installed"

say "ready: UPC_PULUMI_ROOT=$(dirname "$(dirname "$PULUMI")")"
