package clienttest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/router/api"
	pmapi "github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// SoakResult is what a soak measured.
type SoakResult struct {
	Users     int
	Duration  time.Duration // asked for
	Elapsed   time.Duration // taken, the last round and deletes included
	Requests  int
	Errors    int // failed requests no limit refused
	Limited   int // refused by a limit (429, 413)
	RSSBefore int // KiB, this process (the router in process and the clients)
	RSSAfter  int
	Left      int // instances left running
	Table     string
}

// Soak holds r under load: users users each launch a PM, then, until dur has
// passed, upload the next 100 entries of day, ask for the latest location
// (sorted, limit 1), an hour's range and a count, and ask the router for
// their instance; then delete it. Every request is timed.
func Soak(t testing.TB, r Router, users int, dur time.Duration, day []client.Entry) SoakResult {
	t.Helper()
	ctx := context.Background()
	res := SoakResult{Users: users, Duration: dur, RSSBefore: RSSKiB(t)}
	var mu sync.Mutex
	lat := map[string][]time.Duration{}
	errs := map[string]int{}
	timed := func(kind string, f func() error) error {
		start := time.Now()
		err := f()
		d := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		lat[kind] = append(lat[kind], d)
		if err != nil {
			var se *httpx.StatusError
			if errors.As(err, &se) && (se.Code == 429 || se.Code == 413) {
				res.Limited++
			} else {
				errs[kind]++
				t.Logf("%s: %v", kind, err)
			}
		}
		return err
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() {
			name := fmt.Sprintf("soak-%d-%d", i, time.Now().UnixNano()%1e6)
			rc := r.Client(t, r.AddUser(t, name, api.RoleUser))
			c := &client.Client{Router: client.NewRouter(rc), User: name, HTTP: r.HTTP()}
			var inst api.Instance
			if timed("launch", func() (err error) { inst, err = c.LaunchPM(ctx, "soak key "+name); return err }) != nil {
				return
			}
			pm := c.PM(inst.Address)
			for n := 0; time.Since(start) < dur; n++ {
				lo := (n * 100) % len(day)
				chunk := day[lo:min(lo+100, len(day))]
				timed("upload 100 entries", func() error { _, err := c.Upload(ctx, inst.Address, chunk); return err })
				timed("find latest", func() error {
					_, err := pm.Find(ctx, pmclient.FindRequest{Collection: pmapi.Timeseries, Filter: map[string]any{"metadata.key": "background/location"},
						Sort: []pmapi.SortField{pmapi.Desc("data.ts")}, Limit: 1})
					return err
				})
				timed("find an hour", func() error {
					_, err := pm.Find(ctx, pmclient.FindRequest{Collection: pmapi.Timeseries, Filter: map[string]any{"data.ts": map[string]any{"$gte": 1440316800.0, "$lt": 1440320400.0}}})
					return err
				})
				timed("count", func() error {
					_, err := pm.Count(ctx, pmclient.FindRequest{Collection: pmapi.Timeseries, Filter: map[string]any{}})
					return err
				})
				timed("router get", func() error { _, err := rc.Get(ctx, inst.ID); return err })
			}
			timed("delete", func() error { return c.Delete(ctx, inst.ID) })
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.RSSAfter = RSSKiB(t)
	left, err := r.Admin(t).List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	res.Left = len(left)
	rows := []string{"| kind | requests | errors | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"}
	for _, k := range slices.Sorted(maps.Keys(lat)) {
		d := lat[k]
		slices.Sort(d)
		res.Requests += len(d)
		res.Errors += errs[k]
		rows = append(rows, fmt.Sprintf("| %s | %d | %d | %.1f | %.1f |", k, len(d), errs[k], ms(d[len(d)/2]), ms(d[min(len(d)-1, len(d)*99/100)])))
	}
	res.Table = strings.Join(rows, "\n")
	return res
}

// Report logs the result and fails t for any error no limit caused and any
// instance left running.
func (s SoakResult) Report(t testing.TB) {
	t.Helper()
	// Printed, not logged: a benchmark's log keeps only its first lines.
	fmt.Printf("soak: %d users for %s (ran %s): %d requests, %d errors, %d refused by a limit; RSS %d → %d KiB; instances left %d\n%s\n",
		s.Users, s.Duration, s.Elapsed.Round(time.Second), s.Requests, s.Errors, s.Limited, s.RSSBefore, s.RSSAfter, s.Left, s.Table)
	if s.Errors > 0 {
		t.Errorf("%d requests failed without a limit to blame", s.Errors)
	}
	if s.Left > 0 {
		t.Errorf("%d instances left running", s.Left)
	}
}

// Metrics reports the soak's totals as b's metrics.
func (s SoakResult) Metrics(b *testing.B) {
	b.ReportMetric(float64(s.Requests), "requests")
	b.ReportMetric(float64(s.Errors), "errors")
	b.ReportMetric(float64(s.Requests)/s.Elapsed.Seconds(), "req/s")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// SoakSize reads the soak's users and duration from UPC_SOAK_USERS and
// UPC_SOAK_DURATION, with defaults.
func SoakSize(t testing.TB, users int, dur time.Duration) (int, time.Duration) {
	t.Helper()
	if v := os.Getenv("UPC_SOAK_USERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("UPC_SOAK_USERS=%q: want a whole number ≥ 1", v)
		}
		users = n
	}
	if v := os.Getenv("UPC_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("UPC_SOAK_DURATION=%q: want a duration such as 2m", v)
		}
		dur = d
	}
	return users, dur
}

// RSSKiB is this process's resident set (VmRSS).
func RSSKiB(t testing.TB) int {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
