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
	return tune(getenv, memoryMax, s, nil)
}

// tune is Tune with KeepHeadroom's stop (a test's, so that its re-tuning
// ends with it).
func tune(getenv func(string) string, memoryMax string, s Settings, stop func() bool) (gogc int, limit int64) {
	if getenv("GOGC") == "" {
		gogc = s.MinPercent
		debug.SetGCPercent(gogc)
		KeepHeadroom(s, stop)
	}
	if getenv("GOMEMLIMIT") == "" {
		if max := ParseMemoryMax(memoryMax); max > 0 {
			limit = max / 4 * 3
			debug.SetMemoryLimit(limit)
		}
	}
	return gogc, limit
}

// PercentFor is the GOGC that lets a heap grow by at least s.Headroom
// bytes, and by at least s.MinPercent, before the next collection. Since Go
// 1.18 GOGC applies to the live heap and the GC roots (goroutine stacks and
// globals) together: base is their sum, what the runtime multiplies. The
// runtime's least heap goal is 4 MiB scaled by GOGC/100, so GOGC stays at
// most what makes that least goal the headroom: higher, a PM just started
// (a few hundred KiB live) would not collect before 40 MiB, and its year's
// index, built at unseal, peaked at 70 MiB instead of 50.
func PercentFor(base uint64, s Settings) int {
	most := max(s.MinPercent, int(s.Headroom*100/runtimeMinHeap))
	if base == 0 {
		return s.MinPercent
	}
	return max(s.MinPercent, int(min(s.Headroom*100/base, uint64(most))))
}

// runtimeMinHeap is the Go runtime's least heap goal at GOGC=100.
const runtimeMinHeap = 4 << 20

// KeepHeadroom re-tunes GOGC after every collection (a finalizer re-armed
// each cycle) to PercentFor the live heap. It stops once stop, when not nil,
// returns true.
func KeepHeadroom(s Settings, stop func() bool) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	current := s.MinPercent
	type sentinel struct{ _ *int }
	var arm func()
	arm = func() {
		runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
			if stop != nil && stop() {
				return
			}
			metrics.Read(sample)
			var base uint64
			for _, x := range sample {
				if x.Value.Kind() == metrics.KindUint64 {
					base += x.Value.Uint64()
				}
			}
			if p := PercentFor(base, s); p != current {
				debug.SetGCPercent(p)
				current = p
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
