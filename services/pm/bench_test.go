package pm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/pmtest"
	"github.com/e-mission/upc/services/pm/query"
	"github.com/e-mission/upc/services/pm/store"
)

const benchDay = "shankari_2015-aug-27"

func loadBenchDay(b *testing.B) []map[string]any {
	return pmtest.LoadDay(b, filepath.Join(pmtest.RealExamplesDir(b), benchDay))
}

// BenchmarkInsertDay: one real day (1482 entries) through POST /data/insert
// (is_many) into a fresh, fsynced PM, and the same day entry by entry as the
// original upload_data.py sends it (one upsert each).
func BenchmarkInsertDay(b *testing.B) {
	day := loadBenchDay(b)
	ctx := context.Background()
	b.Run("insert_many", func(b *testing.B) {
		cpu := 0.0
		for b.Loop() {
			b.StopTimer()
			p := unsealedPM(b)
			docs := cloneDocs(b, day)
			b.StartTimer()
			c0 := cpuSeconds()
			if _, err := p.c.Insert(ctx, api.DefaultDatabase, api.Timeseries, docs...); err != nil {
				b.Fatal(err)
			}
			cpu += cpuSeconds() - c0
			b.StopTimer()
			p.stop()
			b.StartTimer()
		}
		b.ReportMetric(float64(len(day)*b.N)/b.Elapsed().Seconds(), "docs/s")
		b.ReportMetric(cpu*1000/float64(b.N), "cpu-ms/op")
	})
	b.Run("upsert_each_like_upload_data.py", func(b *testing.B) {
		cpu := 0.0
		for b.Loop() {
			b.StopTimer()
			p := unsealedPM(b)
			docs := cloneDocs(b, day)
			b.StartTimer()
			c0 := cpuSeconds()
			uploadLikeTheScript(b, p, "bench-user", docs)
			cpu += cpuSeconds() - c0
			b.StopTimer()
			p.stop()
			b.StartTimer()
		}
		b.ReportMetric(float64(len(day)*b.N)/b.Elapsed().Seconds(), "docs/s")
		b.ReportMetric(cpu*1000/float64(b.N), "cpu-ms/op")
	})
}

// BenchmarkFindDay: reads over HTTP from a PM holding one real day: the
// whole day of one stream sorted by data.ts, a one-hour window of two streams
// (e-mission's find_entries), and a filter no index serves (full scan).
func BenchmarkFindDay(b *testing.B) {
	day := loadBenchDay(b)
	ctx := context.Background()
	p := unsealedPM(b)
	if _, err := p.c.Insert(ctx, api.DefaultDatabase, api.Timeseries, day...); err != nil {
		b.Fatal(err)
	}
	t0, _ := query.Number(day[0]["data"].(map[string]any)["ts"])
	cases := []struct {
		name string
		req  pmclient.FindRequest
	}{
		{"one_stream_whole_day", pmclient.FindRequest{Collection: api.Timeseries,
			Filter: map[string]any{"metadata.key": "background/location"}, Sort: []api.SortField{api.Asc("data.ts")}}},
		{"two_streams_one_hour", pmclient.FindRequest{Collection: api.Timeseries,
			Filter: map[string]any{"metadata.key": map[string]any{"$in": []any{"background/filtered_location", "background/motion_activity"}},
				"data.ts": map[string]any{"$gte": t0 + 3*3600, "$lte": t0 + 4*3600}}, Sort: []api.SortField{api.Asc("data.ts")}}},
		{"full_scan_whole_day", pmclient.FindRequest{Collection: api.Timeseries, Filter: map[string]any{"data.accuracy": map[string]any{"$gte": 0}}}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			n := 0
			c0 := cpuSeconds()
			for b.Loop() {
				docs, err := p.c.Find(ctx, tc.req)
				if err != nil || len(docs) == 0 {
					b.Fatal(len(docs), err)
				}
				n += len(docs)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "docs/s")
			b.ReportMetric(float64(n)/float64(b.N), "docs/op")
			b.ReportMetric((cpuSeconds()-c0)*1000/float64(b.N), "cpu-ms/op")
		})
	}
}

// synthYear writes days of real data, day i being real day i%6 shifted by i
// whole days (data.ts and metadata.write_ts), one transaction per day.
func synthYear(b *testing.B, dir string, days int) int {
	b.Helper()
	files := pmtest.DayFiles(b)
	var sources [][]map[string]any
	for _, f := range files {
		sources = append(sources, pmtest.LoadDay(b, f))
	}
	st, err := store.Open(dir, store.Options{KDF: store.DefaultKDF, InitialBudget: 1, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := st.Unseal([]byte(secret)); err != nil {
		b.Fatal(err)
	}
	total := 0
	for i := 0; i < days; i++ {
		src := sources[i%len(sources)]
		docs := cloneDocs(b, src)
		shift := float64(i * 86400)
		for _, d := range docs {
			delete(d, "_id")
			for _, path := range []string{"data.ts", "metadata.write_ts"} {
				if v, ok := query.Get(d, path); ok {
					if f, ok := query.Number(v); ok {
						query.SetPath(d, path, json.Number(strconv.FormatFloat(f+shift, 'f', -1, 64)))
					}
				}
			}
		}
		if _, err := st.Insert(api.DefaultDatabase, api.Timeseries, docs); err != nil {
			b.Fatal(err)
		}
		total += len(docs)
	}
	return total
}

func heapMiB() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// BenchmarkUnsealYear: open a PM holding a year (365 synthesised days) and
// unseal it with the production Argon2id costs; reports the heap of the idle,
// unsealed PM, and the cost of a one-day query on the year.
func BenchmarkUnsealYear(b *testing.B) {
	dir := b.TempDir()
	start := time.Now()
	days := 365
	if v, err := strconv.Atoi(os.Getenv("UPC_PM_BENCH_DAYS")); err == nil && v > 0 {
		days = v // a shorter history for profiling
	}
	n := synthYear(b, dir, days)
	b.Logf("synthesised %d records in %v", n, time.Since(start))
	before := heapMiB()
	var st *store.Store
	c0 := cpuSeconds()
	for b.Loop() {
		if st != nil {
			st.Close()
		}
		var err error
		if st, err = store.Open(dir, store.Options{InitialBudget: 1}); err != nil {
			b.Fatal(err)
		}
		if err := st.Unseal([]byte(secret)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric((cpuSeconds()-c0)*1000/float64(b.N), "cpu-ms/op")
	defer st.Close()
	b.ReportMetric(float64(n), "records")
	b.ReportMetric(heapMiB()-before, "idle-heap-MiB")
	// One day of one stream out of the year: the index keeps it to that day.
	f, _ := query.Compile(map[string]any{"metadata.key": "background/filtered_location",
		"data.ts": map[string]any{"$gte": 1440633600.0 + 200*86400, "$lt": 1440633600.0 + 201*86400}})
	t := time.Now()
	docs, stats, err := st.Find(context.Background(), api.DefaultDatabase, api.Timeseries, f, store.FindOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(time.Since(t).Microseconds())/1000, "oneday-query-ms")
	b.Logf("one-day query on the year: %d documents, %d decrypted, full scan %v", len(docs), stats.Candidates, stats.Scanned)
	if stats.Scanned {
		b.Fatal("an indexed query scanned the whole year")
	}
}

// BenchmarkIdleMemory: heap of an unsealed PM holding one real day, and of an
// empty one, measured after garbage collection.
func BenchmarkIdleMemory(b *testing.B) {
	day := loadBenchDay(b)
	for _, tc := range []struct {
		name string
		docs []map[string]any
	}{{"empty", nil}, {"one_day", day}} {
		b.Run(tc.name, func(b *testing.B) {
			var total float64
			for b.Loop() {
				b.StopTimer()
				dir := b.TempDir()
				before := heapMiB()
				st, err := store.Open(dir, store.Options{KDF: testKDF, InitialBudget: 1})
				if err != nil {
					b.Fatal(err)
				}
				if err := st.Unseal([]byte(secret)); err != nil {
					b.Fatal(err)
				}
				if tc.docs != nil {
					if _, err := st.Insert(api.DefaultDatabase, api.Timeseries, cloneDocs(b, tc.docs)); err != nil {
						b.Fatal(err)
					}
				}
				total += heapMiB() - before
				st.Close()
				b.StartTimer()
			}
			b.ReportMetric(total/float64(b.N), "heap-MiB")
		})
	}
}

var _ = fmt.Sprint

// cpuSeconds is the process's user+system CPU time: on a shared machine it
// measures the work done, where wall time also counts waiting for a core.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
