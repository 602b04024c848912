package main

import (
	"runtime/debug"
	"testing"
)

func TestTuneMemory(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
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
			gogc, limit := tuneMemory(env(tc.env), tc.memoryMax)
			if gogc != tc.gogc || limit != tc.limit {
				t.Errorf("set GOGC %d, limit %d; want %d, %d", gogc, limit, tc.gogc, tc.limit)
			}
			if tc.limit > 0 && debug.SetMemoryLimit(-1) != tc.limit {
				t.Errorf("the runtime's limit is not %d", tc.limit)
			}
		})
	}
}
