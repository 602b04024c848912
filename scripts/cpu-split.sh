#!/usr/bin/env bash
# cpu-split.sh CMD...: run CMD and print where the machine's CPU went meanwhile:
# all of it (/proc/stat), the containers (Docker's cgroup), dockerd, containerd,
# CMD itself, and the rest (runc, shims, fuse-overlayfs, the kernel, and
# anything else running). dockerd and containerd include their reaped
# children (dockerd's re-executions, iptables, docker-proxy). Busy CPU and
# the rest mean something only on an otherwise idle machine.
set -uo pipefail
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# The oldest process of that name (dockerd re-executes itself per container),
# with the children it has reaped: dockerd's re-executions, iptables and
# docker-proxy; not the shims and runc, which are re-parented. Being per
# process, this much holds on a loaded machine too, unlike busy CPU.
proc() { local p; p=$(pgrep -o -x "$1"); [ -n "$p" ] && awk '{print $14+$15+$16+$17}' "/proc/$p/stat" || echo 0; }
containers() { # nanoseconds
	if [ -r /sys/fs/cgroup/cpuacct/docker/cpuacct.usage ]; then cat /sys/fs/cgroup/cpuacct/docker/cpuacct.usage
	elif [ -r /sys/fs/cgroup/docker/cpu.stat ]; then awk '/^usage_usec/{print $2*1000}' /sys/fs/cgroup/docker/cpu.stat
	else echo 0; fi
}
b0=$(busy) d0=$(proc dockerd) c0=$(proc containerd) g0=$(containers) t0=$(date +%s.%N)
self=$(mktemp)
/usr/bin/time -f '%U %S' -o "$self" "$@"
rc=$?
b1=$(busy) d1=$(proc dockerd) c1=$(proc containerd) g1=$(containers) t1=$(date +%s.%N)
read -r su ss < "$self"; rm -f "$self"
awk -v hz="$hz" -v b=$((b1 - b0)) -v d=$((d1 - d0)) -v c=$((c1 - c0)) -v g=$((g1 - g0)) \
	-v su="$su" -v ss="$ss" -v cores="$(nproc)" -v t0="$t0" -v t1="$t1" 'BEGIN {
	w = t1 - t0
	printf "wall        %7.1f s\nbusy CPU    %7.1f s (of %.1f on %d cores)\n", w, b/hz, w*cores, cores
	printf "containers  %7.1f s\ndockerd     %7.1f s (with its children)\ncontainerd  %7.1f s (with its children)\ncommand     %7.1f s\nrest        %7.1f s\n",
		g/1e9, d/hz, c/hz, su+ss, b/hz - g/1e9 - d/hz - c/hz - su - ss }' >&2
exit $rc
