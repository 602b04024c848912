package gctune

import (
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"
)

func TestTune(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	var stopped atomic.Bool // the re-tuning each case starts ends with the test
	defer stopped.Store(true)
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	pm := Settings{MinPercent: 25, Headroom: 8 << 20}
	for _, tc := range []struct {
		name      string
		env       map[string]string
		memoryMax string
		gogc      int
		limit     int64
	}{
		{"catalog limit", nil, "268435456\n", 25, 201326592},
		{"no limit", nil, "max\n", 25, 0},
		{"no limit, cgroup v1", nil, "9223372036854771712\n", 25, 0},
		{"no cgroup file", nil, "", 25, 0},
		{"garbage", nil, "lots", 25, 0},
		{"environment wins", map[string]string{"GOGC": "100", "GOMEMLIMIT": "1GiB"}, "268435456", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gogc, limit := tune(env(tc.env), tc.memoryMax, pm, stopped.Load)
			if gogc != tc.gogc || limit != tc.limit {
				t.Errorf("set GOGC %d, limit %d; want %d, %d", gogc, limit, tc.gogc, tc.limit)
			}
			if tc.limit > 0 && debug.SetMemoryLimit(-1) != tc.limit {
				t.Errorf("the runtime's limit is not %d", tc.limit)
			}
		})
	}
}

func TestPercentFor(t *testing.T) {
	const mib = 1 << 20
	s := Settings{MinPercent: 25, Headroom: 8 * mib}
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, 25},
		{2 * mib, 200},     // a fresh PM: 8 MiB of headroom would be 400%, but the least goal is 4 MiB × 2
		{4 * mib, 200},     // 8 MiB over 4
		{16 * mib, 50},     // 8 MiB over 16
		{33 * mib / 2, 48}, // rounds down
		{30 * mib, 26},     // 26.6 → 26
		{31 * mib, 25},     // 25.8 → 25
		{32 * mib, 25},     // the headroom is 25% here
		{40 * mib, 25},     // a year's index: 25% as before
		{1 << 40, 25},      // huge
		{1024, 200},        // capped
	} {
		if got := PercentFor(tc.live, s); got != tc.want {
			t.Errorf("PercentFor(%d) = %d, want %d", tc.live, got, tc.want)
		}
	}
	// A service's: 100% at least, 32 MiB of headroom, so at most 800%.
	svc := Settings{MinPercent: 100, Headroom: 32 * mib}
	for live, want := range map[uint64]int{1024: 800, 8 * mib: 400, 64 * mib: 100} {
		if got := PercentFor(live, svc); got != want {
			t.Errorf("service: PercentFor(%d) = %d, want %d", live, got, want)
		}
	}
}

// TestKeepHeadroom: on this test's small heap, the collector is re-tuned
// after a collection to let it grow by the headroom, not by 25%.
func TestKeepHeadroom(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	var stopped atomic.Bool
	defer stopped.Store(true)
	KeepHeadroom(Settings{MinPercent: 25, Headroom: 64 << 20}, stopped.Load)
	deadline := time.Now().Add(30 * time.Second)
	for {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // the finalizer runs after the cycle
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		if p > 100 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is still %d after collections of a small heap", p)
		}
	}
}
