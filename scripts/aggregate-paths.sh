#!/usr/bin/env bash
# aggregate-paths.sh OUT SIZES PATHS: the aggregate flow (upc aggregate count
# --local) over `upc synth --seed 1` users for each number of users of SIZES
# ("6 64 256") and each path of PATHS ("bridge host host+pool": the local
# router's network mode, +pool with a warm pool of as many PMs as users),
# each run wrapped in scripts/cpu-split.sh. Paths alternate: ROUNDS times
# (default 1; numbered from FIRST_ROUND, default 1, so that a later call adds
# rounds), each round taking them in the other order, so that each run's
# neighbours are the other paths under about the same load. Each run's
# result lands in OUT/rROUND-uUSERS-PATH/ (result.json, result.md, the
# figures, stderr.log, and cpu-split.txt: the split with the load average
# before and after); then
# `upc aggregate figure` compares them all into OUT/ (paths.md, wall.svg,
# phases.svg and their PDFs). Each size's query is a count over a 1 km box
# around its user-0001's first trip start, over all its users' days.
# Needs make images; UPC is bin/upc by default.
set -euo pipefail
out=$1 sizes=$2 paths=$3
rounds=${ROUNDS:-1} first=${FIRST_ROUND:-1}
here=$(dirname "$0")
upc=${UPC:-$here/../bin/upc}
images=${IMAGES:-$here/../build/images.json}
mkdir -p "$out"
declare -A args=([6]="--parallel 6" [64]="--parallel 16 --shared-services --shared-pipelines 4"
	[256]="--parallel 32 --shared-services --shared-pipelines 8")
for n in $sizes; do
	d=$out/users$n
	[ -f "$d/synth.json" ] || "$upc" synth --users "$n" --seed 1 --out "$d" >/dev/null
	# The box: ±0.0045° around user-0001's first start (≈ 1 km wide).
	python3 - "$d/synth.json" "$out/q$n.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
lon, lat = m["users"][0]["first_start"]
d = 0.0045
json.dump({"offset": 100, "alpha": 0.05,
           "start_ts": min(u["start_ts"] for u in m["users"]), "end_ts": max(u["end_ts"] for u in m["users"]),
           "sel_region": {"geometry": {"type": "MultiPolygon", "coordinates": [[[
               [lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d], [lon - d, lat - d]]]]}}},
          open(sys.argv[2], "w"))
EOF
done
read -ra ps <<<"$paths"
for r in $(seq "$first" $((first + rounds - 1))); do
	order=("${ps[@]}")
	if [ $((r % 2)) = 0 ]; then
		order=()
		for ((i = ${#ps[@]} - 1; i >= 0; i--)); do order+=("${ps[i]}"); done
	fi
	for n in $sizes; do
		for p in "${order[@]}"; do
			mode=${p%+pool} pool=()
			[ "$p" != "$mode" ] && pool=(--warm-pool "$n")
			dir=$out/r$r-u$n-$p
			mkdir -p "$dir"
			echo "== round $r, $n users, $p (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
			echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >"$dir/cpu-split.txt"
			# shellcheck disable=SC2086
			"$here/cpu-split.sh" "$upc" --log-level warn aggregate count --local --images "$images" --data "$out/users$n" \
				--query "$out/q$n.json" ${args[$n]} --network-mode "$mode" "${pool[@]}" --experiment-seed 1 --reveal-true-total \
				--out "$dir" >/dev/null 2>"$dir/stderr.log" || echo "run failed: see $dir/stderr.log" >&2
			grep -E '^(wall|busy CPU|containers|dockerd|containerd|command|rest) ' "$dir/stderr.log" >>"$dir/cpu-split.txt" || true
			echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$dir/cpu-split.txt"
			grep -E '^(wall|busy|dockerd)' "$dir/cpu-split.txt" >&2 || true
		done
	done
done
"$upc" aggregate figure --out "$out" "$out"/r*/result.json
