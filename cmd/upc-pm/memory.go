package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Where a container's memory limit is read: cgroup v2, else v1.
const (
	cgroupMemoryMax   = "/sys/fs/cgroup/memory.max"
	cgroupV1MemoryMax = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
)

// tuneMemory sets the garbage collector for a PM in a container of a few
// hundred MiB holding a year of data: collect at 25% growth over the live
// heap rather than 100% (GOGC=25), and collect harder as the heap nears 3/4
// of the container's limit (GOMEMLIMIT; cgroup v2 or v1), leaving the rest to the mapped file
// and the kernel. GOGC or GOMEMLIMIT in the environment win. It returns what
// it set, for the log.
func tuneMemory(getenv func(string) string, memoryMax string) (gogc int, limit int64) {
	if getenv("GOGC") == "" {
		gogc = 25
		debug.SetGCPercent(gogc)
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
