#!/usr/bin/env bash
# Runs every fuzz target of the root module (func Fuzz* in a _test.go file)
# for FUZZTIME each, one after another. A crasher is written by go test to
# the package's testdata/fuzz/<Target>/ and is replayed by every later
# `go test` (commit it with the fix): that is how a crasher becomes a
# regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-20s}
go=${GO:-go}
mapfile -t hits < <(grep -rlE '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' --include='*_test.go' . | grep -v '^./infra/' | sort)
targets=()
for file in "${hits[@]}"; do
	pkg=./$(dirname "${file#./}")
	while read -r name; do
		targets+=("$pkg $name")
	done < <(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(f \*testing\.F\).*/\1/p' "$file")
done
if ((${#targets[@]} == 0)); then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} targets, $fuzztime each"
failed=()
i=0
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	i=$((i + 1))
	printf 'fuzz: [%d/%d] %s %s\n' "$i" "${#targets[@]}" "$pkg" "$name"
	corpus=$pkg/testdata/fuzz/$name
	before=$(ls "$corpus" 2>/dev/null | sort || true)
	if ! "$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" >"${TMPDIR:-/tmp}/upc-fuzz.log" 2>&1; then
		after=$(ls "$corpus" 2>/dev/null | sort || true)
		if [[ $before == "$after" ]] && grep -q 'context deadline exceeded' "${TMPDIR:-/tmp}/upc-fuzz.log"; then
			# Go 1.26's fuzz coordinator can report its own -fuzztime deadline
			# as a failure (golang/go#75804, fixed in Go 1.27): no input failed
			# and none was written, so the target held.
			echo "fuzz: $name: the coordinator's deadline race (golang/go#75804), no failing input; counted as held"
			continue
		fi
		cat "${TMPDIR:-/tmp}/upc-fuzz.log"
		failed+=("$pkg $name")
	else
		grep -E '^fuzz: elapsed' "${TMPDIR:-/tmp}/upc-fuzz.log" | tail -1
	fi
done
if ((${#failed[@]} > 0)); then
	printf 'fuzz: FAILED: %s\n' "${failed[@]}" >&2
	echo "fuzz: the failing inputs are in the packages' testdata/fuzz/; go test replays them" >&2
	exit 1
fi
echo "fuzz: every target held"
