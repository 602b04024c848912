package metrics

import (
	"syscall"
	"testing"
	"time"
)

// cpuTime is this process's user+system CPU time. Benchmarks report it per
// operation (cpu-µs/op) because wall times on a shared machine mostly measure
// the other tenants.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU runs loop (the b.Loop body driver) and reports CPU per op.
func reportCPU(b *testing.B, loop func()) {
	start := cpuTime()
	n := 0
	for b.Loop() {
		loop()
		n++
	}
	b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(n), "cpu-µs/op")
}
