package client_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/client/clienttest"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router/api"
	pmapi "github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// BenchmarkSoakDocker holds a router (in process, TLS on every hop) and
// UPC_SOAK_USERS users' real PM containers (default 8) under load for
// UPC_SOAK_DURATION (default 1m): each user launches a PM, then, until the
// time is up, uploads the next 100 entries of a real day, asks for the
// latest entry (sorted, limit 1), for an hour's range and for a count, and
// asks the router for its instance; then deletes it. It reports requests,
// errors (those a limit caused apart), p50 and p99 latency per kind, and the
// process's resident memory before and after (the router and the test's
// clients share it). A run is once (-benchtime=1x):
//
//	UPC_SOAK_USERS=8 UPC_SOAK_DURATION=2m go test -run '^$' -bench BenchmarkSoakDocker -benchtime=1x ./client/
func BenchmarkSoakDocker(b *testing.B) {
	users := envInt(b, "UPC_SOAK_USERS", 8)
	dur := envDuration(b, "UPC_SOAK_DURATION", time.Minute)
	tr := clienttest.StartRouter(b, "pm")
	admin := tr.Admin(b)
	day, err := client.LoadDay(filepath.Join(realdata.DirT(b), "shankari_2015-08-23"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	rssBefore := rssKiB(b)
	var mu sync.Mutex
	lat := map[string][]time.Duration{}
	errs := map[string]int{}
	record := func(kind string, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		lat[kind] = append(lat[kind], d)
		if err != nil {
			var se *httpx.StatusError
			if errors.As(err, &se) && (se.Code == 429 || se.Code == 413) {
				errs["limit"]++
			} else {
				errs[kind]++
				b.Logf("%s: %v", kind, err)
			}
		}
	}
	timed := func(kind string, f func() error) error {
		start := time.Now()
		err := f()
		record(kind, time.Since(start), err)
		return err
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() {
			name := fmt.Sprintf("soak-%d-%d", i, time.Now().UnixNano()%1e6)
			rc := tr.Client(b, tr.AddUser(b, name, api.RoleUser))
			c := &client.Client{Router: client.NewRouter(rc), User: name, HTTP: tr.HTTP()}
			var inst api.Instance
			if timed("launch", func() (err error) { inst, err = c.LaunchPM(ctx, "soak key "+name); return err }) != nil {
				return
			}
			pm := c.PM(inst.Address)
			for n := 0; time.Since(start) < dur; n++ {
				lo := (n * 100) % len(day)
				chunk := day[lo:min(lo+100, len(day))]
				timed("upload", func() error { _, err := c.Upload(ctx, inst.Address, chunk); return err })
				timed("find latest", func() error {
					_, err := pm.Find(ctx, pmclient.FindRequest{Collection: pmapi.Timeseries, Filter: map[string]any{"metadata.key": "background/location"},
						Sort: []pmapi.SortField{pmapi.Desc("data.ts")}, Limit: 1})
					return err
				})
				timed("find range", func() error {
					_, err := pm.Find(ctx, pmclient.FindRequest{Collection: pmapi.Timeseries, Filter: map[string]any{"data.ts": map[string]any{"$gte": 1440316800.0, "$lt": 1440320400.0}}})
					return err
				})
				timed("count", func() error { _, err := pm.Count(ctx, pmclient.FindRequest{Collection: pmapi.Timeseries, Filter: map[string]any{}}); return err })
				timed("router get", func() error { _, err := rc.Get(ctx, inst.ID); return err })
			}
			timed("delete", func() error { return c.Delete(ctx, inst.ID) })
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.GC()
	rssAfter := rssKiB(b)
	left, err := admin.List(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	total, failed := 0, 0
	var rows []string
	for _, k := range slices.Sorted(maps.Keys(lat)) {
		d := lat[k]
		slices.Sort(d)
		total += len(d)
		failed += errs[k]
		rows = append(rows, fmt.Sprintf("| %s | %d | %d | %.1f | %.1f |", k, len(d), errs[k], ms(d[len(d)/2]), ms(d[min(len(d)-1, len(d)*99/100)])))
	}
	b.Logf("soak: %d users for %s (ran %s): %d requests, %d errors, %d refused by a limit; RSS %d → %d KiB; instances left %d\n| kind | requests | errors | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|\n%s",
		users, dur, elapsed.Round(time.Second), total, failed, errs["limit"], rssBefore, rssAfter, len(left), strings.Join(rows, "\n"))
	b.ReportMetric(float64(total), "requests")
	b.ReportMetric(float64(failed), "errors")
	b.ReportMetric(float64(total)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(rssAfter-rssBefore), "rss-growth-KiB")
	if failed > 0 {
		b.Errorf("%d requests failed without a limit to blame", failed)
	}
	if len(left) > 0 {
		b.Errorf("%d instances left running", len(left))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func envInt(b *testing.B, k string, def int) int {
	v := os.Getenv(k)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a whole number ≥ 1", k, v)
	}
	return n
}

func envDuration(b *testing.B, k string, def time.Duration) time.Duration {
	v := os.Getenv(k)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("%s=%q: want a duration such as 2m", k, v)
	}
	return d
}

// rssKiB is this process's resident set (VmRSS).
func rssKiB(b *testing.B) int {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
