#!/usr/bin/env bash
# engine-floor.sh [N] [MODE...]: the container engine's own cost of N PM
# lifecycles as the Docker backend runs them (a per-user volume, the
# catalog's limits; 4 at a time): create, start, remove with the volume.
# MODE is how the instance is reached (default bridge):
#   bridge  a network of its own and a published loopback port (Docker's
#           endpoint, iptables rules and docker-proxy per container)
#   host    the host's network, listening on a port given in UPC_LISTEN
#           (docker.network_mode: host)
# Several modes run one after the other, ROUNDS times (default 1) in turn,
# so their figures come from the same run. Prints each mode's CPU split
# (scripts/cpu-split.sh) and a summary line per mode and round: wall time,
# and the engine's CPU per lifecycle: dockerd's and containerd's with their
# reaped children (holds on a loaded machine), and the machine's busy CPU
# less the containers' own and the docker CLI's (only on an idle one).
# Needs make images.
set -euo pipefail
n=${1:-32}
shift || true
modes=("${@:-bridge}")
rounds=${ROUNDS:-1}
here=$(dirname "$0")
image=${UPC_PM_IMAGE:-$(sed -n 's/.*"ref": "\(upc\/pm:[^"]*\)".*/\1/p' "$here/../build/images.json")}
base=${FLOOR_PORT_BASE:-21000}
tag=upc-floor-$$
net=$tag
docker network create "$net" >/dev/null
trap 'docker network rm "$net" >/dev/null 2>&1 || true' EXIT
# The PM runs (no access control, plain HTTP: nothing calls it) until removed.
one() { # i mode net image port-base tag
	local vol="$6-$2-$1" netargs
	if [ "$2" = host ]; then
		netargs=(--network host -e "UPC_LISTEN=127.0.0.1:$(($5 + $1))")
	else
		netargs=(--network "$3" -p 127.0.0.1::8080)
	fi
	id=$(docker run -d "${netargs[@]}" -e UPC_INSECURE_LEGACY=1 --cpus 0.5 -m 256m -v "$vol:/data" "$4")
	docker rm -f -v "$id" >/dev/null
	docker volume rm "$vol" >/dev/null
}
export -f one
summary=()
for r in $(seq 1 "$rounds"); do
	for m in "${modes[@]}"; do
		case $m in bridge | host) ;; *) echo "engine-floor.sh: mode $m is not bridge or host" >&2; exit 2 ;; esac
		echo "== $m, round $r: $n lifecycles" >&2
		out=$("$here/cpu-split.sh" bash -c "seq 1 $n | xargs -P 4 -I{} bash -c 'one {} $m $net $image $base $tag'" 2>&1)
		echo "$out" >&2
		summary+=("$(awk -v m="$m" -v r="$r" -v n="$n" '
			/^wall/ {w=$2} /^busy/ {b=$3} /^containers/ {c=$2} /^command/ {k=$2} /^dockerd/ {d=$2} /^containerd/ {ct=$2}
			END {printf "%-6s round %d: wall %6.1f s (%5.2f s per lifecycle); per lifecycle: dockerd+containerd %5.2f CPU-s, all but the containers and the CLI %5.2f CPU-s (idle machine only)\n", m, r, w, w/n, (d+ct)/n, (b-c-k)/n}' <<<"$out")")
	done
done
printf '%s\n' "${summary[@]}"
