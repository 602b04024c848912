package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
)

// Where a container's memory limit is read: cgroup v2, else v1.
const (
	cgroupMemoryMax   = "/sys/fs/cgroup/memory.max"
	cgroupV1MemoryMax = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
)

// minGCPercent is the least growth over the live heap that the collector
// waits for (GOGC), and heapHeadroom the least it waits for in bytes.
const (
	minGCPercent = 25
	heapHeadroom = 8 << 20
)

// tuneMemory sets the garbage collector for a PM in a container of a few
// hundred MiB holding a year of data: collect at 25% growth over the live
// heap rather than 100% (GOGC=25), but never before the heap has grown by
// 8 MiB (keepHeadroom), and collect harder as the heap nears 3/4 of the
// container's limit (GOMEMLIMIT; cgroup v2 or v1), leaving the rest to the
// mapped file and the kernel. GOGC or GOMEMLIMIT in the environment win. It
// returns what it set, for the log.
func tuneMemory(getenv func(string) string, memoryMax string) (gogc int, limit int64) {
	if getenv("GOGC") == "" {
		gogc = minGCPercent
		debug.SetGCPercent(gogc)
		keepHeadroom(minGCPercent, heapHeadroom, nil)
	}
	if getenv("GOMEMLIMIT") == "" {
		if max := parseMemoryMax(memoryMax); max > 0 {
			limit = max / 4 * 3
			debug.SetMemoryLimit(limit)
		}
	}
	return gogc, limit
}

// parseMemoryMax reads memory.max: a number of bytes, or "max" (no limit:
// 0); cgroup v1 says "no limit" with a number near 2^63.
func parseMemoryMax(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0
	}
	return n
}

func readMemoryMax() string {
	for _, f := range []string{cgroupMemoryMax, cgroupV1MemoryMax} {
		if b, err := os.ReadFile(f); err == nil {
			return string(b)
		}
	}
	return ""
}

// gcPercentFor is the GOGC that lets a heap of live bytes grow by at least
// headroom bytes, and by at least minPercent, before the next collection.
func gcPercentFor(live uint64, minPercent int, headroom uint64) int {
	if live == 0 {
		return minPercent
	}
	return max(minPercent, int(min(headroom*100/live, 10_000)))
}

// keepHeadroom re-tunes GOGC after every collection (a finalizer re-armed
// each cycle) to gcPercentFor the live heap. 25% of a year's index (about
// 40 MiB) is what keeps the PM in its memory; 25% of a fresh PM's 2 MiB
// made it collect after every 0.5 MiB allocated, about thirty collections
// for one day's upload and pipeline run, and doubled the CPU they cost.
// It stops once stop, when not nil, returns true.
func keepHeadroom(minPercent int, headroom uint64, stop func() bool) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	current := minPercent
	type sentinel struct{ _ *int }
	var arm func()
	arm = func() {
		runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
			if stop != nil && stop() {
				return
			}
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 {
				// A change of less than a fifth is not worth the
				// stop-the-world that SetGCPercent makes.
				if p := gcPercentFor(sample[0].Value.Uint64(), minPercent, headroom); p*5 < current*4 || p*4 > current*5 {
					debug.SetGCPercent(p)
					current = p
				}
			}
			arm()
		})
	}
	arm()
}
