#!/usr/bin/env bash
# engine-floor.sh [N]: the container engine's own cost of N PM lifecycles as
# the Docker backend runs them (a network of its own, a published loopback
# port, a per-user volume, the catalog's limits; 4 at a time): create, start,
# remove with the volume. Prints the CPU split (scripts/cpu-split.sh). Needs
# make images. Every user of an aggregator run pays at least this.
set -euo pipefail
n=${1:-32}
image=${UPC_PM_IMAGE:-$(sed -n 's/.*"ref": "\(upc\/pm:[^"]*\)".*/\1/p' "$(dirname "$0")/../build/images.json")}
net=upc-floor-$$
docker network create "$net" >/dev/null
trap 'docker network rm "$net" >/dev/null 2>&1 || true' EXIT
one() {
	id=$(docker run -d --network "$2" -p 127.0.0.1::8080 --cpus 0.5 -m 256m -v "$2-$1:/data" "$3")
	docker rm -f -v "$id" >/dev/null
	docker volume rm "$2-$1" >/dev/null
}
export -f one
"$(dirname "$0")/cpu-split.sh" bash -c "seq 1 $n | xargs -P 4 -I{} bash -c 'one {} $net $image'"
echo "per container: divide the busy CPU (less the docker CLI's share, 'command') by $n" >&2
