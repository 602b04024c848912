// Package gctune sets Go's garbage collector for a service in a container
// with a memory limit: a least growth in percent (GOGC) and in bytes before
// each collection, and a soft limit at 3/4 of the container's memory.
package gctune

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

// Settings are a service's collector settings.
type Settings struct {
	// MinPercent is the least growth over the live heap before a
	// collection (GOGC); Headroom the least growth in bytes. A small heap
	// grown by only MinPercent would be collected after every few hundred
	// KiB allocated: for a PM at GOGC=25 that was some thirty collections
	// for one day's upload and pipeline run, and twice the CPU.
	MinPercent int
	Headroom   uint64
}

// Tune applies s unless GOGC is set in the environment, and a soft memory
// limit of 3/4 of memoryMax (the container's memory.max; ReadMemoryMax)
// unless GOMEMLIMIT is, leaving the rest to mapped files and the kernel. It
// returns what it set, for the log (0: left to the environment or no limit).
func Tune(getenv func(string) string, memoryMax string, s Settings) (gogc int, limit int64) {
	if getenv("GOGC") == "" {
		gogc = s.MinPercent
		debug.SetGCPercent(gogc)
		KeepHeadroom(s, nil)
	}
	if getenv("GOMEMLIMIT") == "" {
		if max := ParseMemoryMax(memoryMax); max > 0 {
			limit = max / 4 * 3
			debug.SetMemoryLimit(limit)
		}
	}
	return gogc, limit
}

// PercentFor is the GOGC that lets a heap of live bytes grow by at least
// s.Headroom bytes, and by at least s.MinPercent, before the next collection.
func PercentFor(live uint64, s Settings) int {
	if live == 0 {
		return s.MinPercent
	}
	return max(s.MinPercent, int(min(s.Headroom*100/live, 10_000)))
}

// KeepHeadroom re-tunes GOGC after every collection (a finalizer re-armed
// each cycle) to PercentFor the live heap. It stops once stop, when not nil,
// returns true.
func KeepHeadroom(s Settings, stop func() bool) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	current := s.MinPercent
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
				if p := PercentFor(sample[0].Value.Uint64(), s); p*5 < current*4 || p*4 > current*5 {
					debug.SetGCPercent(p)
					current = p
				}
			}
			arm()
		})
	}
	arm()
}

// ParseMemoryMax reads memory.max: a number of bytes, or "max" (no limit:
// 0); cgroup v1 says "no limit" with a number near 2^63.
func ParseMemoryMax(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0
	}
	return n
}

// ReadMemoryMax is this container's memory limit file's text ("" outside
// one).
func ReadMemoryMax() string {
	for _, f := range []string{cgroupMemoryMax, cgroupV1MemoryMax} {
		if b, err := os.ReadFile(f); err == nil {
			return string(b)
		}
	}
	return ""
}
