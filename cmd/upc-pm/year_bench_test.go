package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	upcclient "github.com/e-mission/upc/client"
	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/harness/synth"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// BenchmarkYearInContainer builds a PM holding a year of one user's data and
// measures it where it runs: the upc/pm image on the real engine, with the
// catalog's limits (CPU, memory) and the agent's confinement. Day i of the
// year is a real day moved in time (synth.Apply) to 2025-01-01 + i days, so
// the year holds about 366,000 entries. It reports:
//
//   - upload of the first 30 days by `upc client upload`'s old path (one
//     request and one fsync per entry) into one PM and by the new one
//     (1,000 upserts per bulk update) into another, and the ratio;
//   - the whole year's upload by the new path, the file's size;
//   - the anonymous memory of the PM's cgroup (sampled every half second), peak
//     per phase, and whether the engine killed it for memory;
//   - unsealing after a restart, a month's find, the latest-entry find
//     (sorted on data.ts descending, limit 1), and the memory after.
//
// UPC_YEAR_DAYS (default 365) makes it smaller. Run as docs/BENCHMARKS.md says:
//
//	go test -run '^$' -bench YearInContainer -benchtime 1x -timeout 60m ./cmd/upc-pm/
func BenchmarkYearInContainer(b *testing.B) {
	days := 365
	if s := os.Getenv("UPC_YEAR_DAYS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 3660 {
			b.Fatalf("UPC_YEAR_DAYS=%q: want a number of days from 1 to 3660", s)
		}
		days = n
	}
	ctx := context.Background()
	cat, err := conf.DefaultCatalog()
	if err != nil {
		b.Fatal(err)
	}
	pmSvc, ok := cat.Lookup("pm")
	if !ok {
		b.Fatal("no pm in the catalog")
	}
	limits := func(hc *container.HostConfig) {
		// As the agent runs a catalog service (router/docker/agent).
		hc.Resources.NanoCPUs = int64(pmSvc.Resources.CPUMillis) * 1_000_000
		hc.Resources.Memory = int64(pmSvc.Resources.MemoryMB) << 20
		pids := int64(agent.DefaultPidsLimit)
		hc.Resources.PidsLimit = &pids
		hc.ReadonlyRootfs = true
		hc.Tmpfs = map[string]string{"/tmp": agent.TmpfsOptions}
		hc.CapDrop = []string{"ALL"}
		hc.SecurityOpt = []string{"no-new-privileges"}
	}
	docker, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatal(err)
	}
	defer docker.Close()
	year, err := newYear(realdata.DirT(b), days)
	if err != nil {
		b.Fatal(err)
	}
	key := "ab" + fmt.Sprintf("%062x", time.Now().UnixNano())
	start := func() (*pmContainer, *upcclient.Client, string) {
		pc := startPMContainer(b, "1.0", limits)
		pm := pc.client()
		if err := pm.UnsealRandom(ctx, key); err != nil {
			b.Fatal(err)
		}
		return pc, &upcclient.Client{User: "year-user", PMSecret: pc.owner, HTTP: pc.ca.Client(10 * time.Minute)}, pm.BaseURL()
	}
	upload := func(c *upcclient.Client, addr string, from, to int) time.Duration {
		t0 := time.Now()
		for d := from; d < to; d++ {
			entries, err := year.day(d)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Upload(ctx, addr, entries); err != nil {
				b.Fatalf("day %d: %v", d, err)
			}
		}
		return time.Since(t0)
	}
	first := min(30, days)

	// The old path, into a PM of its own.
	oldPC, oldC, oldAddr := start()
	oldC.UploadBatch = 1
	tOld := upload(oldC, oldAddr, 0, first)
	if err := oldPC.c.Terminate(ctx); err != nil {
		b.Fatal(err)
	}

	pc, c, addr := start()
	c.UploadBatch = upcclient.DefaultUploadBatch
	mem := &sampler{docker: docker, id: pc.c.GetContainerID(), peak: map[string]int64{}}
	stop := mem.run(ctx, "upload")
	tNew := upload(c, addr, 0, first)
	tYear := tNew + upload(c, addr, first, days)
	mem.phase(ctx, "restart")
	fi, err := os.Stat(filepath.Join(pc.data, store.FileName))
	if err != nil {
		b.Fatal(err)
	}

	grace := 30 * time.Second
	if err := pc.c.Stop(ctx, &grace); err != nil {
		b.Fatal(err)
	}
	if err := pc.c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	mem.phase(ctx, "unseal")
	pm := pc.client()
	t0 := time.Now()
	if err := pm.UnsealRandom(ctx, key); err != nil {
		b.Fatal(err)
	}
	tUnseal := time.Since(t0)

	mem.phase(ctx, "queries")
	uc := api.Usercache
	// A month (June, or the last 30 days of a shorter run) of the state
	// machine's transitions, as the pipeline reads them.
	m0 := year.base.AddDate(0, 5, 0)
	if days < 181 {
		m0 = year.base.AddDate(0, 0, max(0, days-30))
	}
	m1 := m0.AddDate(0, 1, 0)
	month := pmclient.FindRequest{StageName: uc, Filter: map[string]any{"metadata.key": "statemachine/transition",
		"data.ts": map[string]any{"$gte": m0.Unix(), "$lt": m1.Unix()}}}
	var monthDocs int
	tMonth := median(5, func() {
		docs, err := pm.Find(ctx, month)
		if err != nil {
			b.Fatal(err)
		}
		monthDocs = len(docs)
	})
	latest := func(filter map[string]any) func() {
		return func() {
			docs, err := pm.Find(ctx, pmclient.FindRequest{StageName: uc, Filter: filter,
				Sort: []api.SortField{{Field: "data.ts", Dir: -1}}, Limit: 1})
			if err != nil {
				b.Fatal(err)
			}
			if len(docs) != 1 {
				b.Fatalf("latest entry: %d documents", len(docs))
			}
			var ts float64
			switch v := docs[0]["data"].(map[string]any)["ts"].(type) {
			case json.Number:
				ts, _ = v.Float64()
			case float64:
				ts = v
			}
			if want := year.maxTs(filter); ts != want {
				b.Fatalf("latest entry of %v: data.ts %v, want %v", filter, ts, want)
			}
		}
	}
	tLatest := median(5, latest(map[string]any{}))
	tLatestKey := median(5, latest(map[string]any{"metadata.key": "background/location"}))
	mem.phase(ctx, "after queries")
	time.Sleep(2 * time.Second) // two more samples
	stop()
	st, err := pc.c.State(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if st.OOMKilled || !st.Running {
		b.Errorf("the PM container: OOM killed %v, running %v", st.OOMKilled, st.Running)
	}

	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	b.Logf("%d days, %d entries; catalog limits %d millicores, %d MiB", days, year.entries, pmSvc.Resources.CPUMillis, pmSvc.Resources.MemoryMB)
	b.Logf("upload of %d days: old path %.1f s, new path %.1f s (%.1fx); the year: %.1f s", first, tOld.Seconds(), tNew.Seconds(), tOld.Seconds()/tNew.Seconds(), tYear.Seconds())
	b.Logf("file %.0f MiB; unseal after restart %.2f s; month find %.1f ms (%d docs); latest entry %.2f ms, of one stream %.2f ms",
		mib(fi.Size()), tUnseal.Seconds(), ms(tMonth), monthDocs, ms(tLatest), ms(tLatestKey))
	for _, p := range []string{"upload", "restart", "unseal", "queries", "after queries"} {
		b.Logf("anonymous memory, %s: peak %.1f MiB (%d samples)", p, mib(mem.peak[p]), mem.samples[p])
	}
	b.ReportMetric(float64(year.entries), "entries")
	b.ReportMetric(tOld.Seconds(), "upload-30d-old-s")
	b.ReportMetric(tNew.Seconds(), "upload-30d-new-s")
	b.ReportMetric(tOld.Seconds()/tNew.Seconds(), "upload-speedup-x")
	b.ReportMetric(tYear.Seconds(), "upload-year-s")
	b.ReportMetric(mib(fi.Size()), "file-MiB")
	b.ReportMetric(mib(slices.Max([]int64{mem.peak["upload"], mem.peak["unseal"], mem.peak["queries"]})), "peak-anon-MiB")
	b.ReportMetric(tUnseal.Seconds(), "unseal-s")
	b.ReportMetric(ms(tMonth), "month-find-ms")
	b.ReportMetric(ms(tLatest), "latest-find-ms")
	b.ReportMetric(ms(tLatestKey), "latest-stream-find-ms")
	b.ReportMetric(mib(mem.peak["after queries"]), "anon-after-MiB")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// median runs f n times and returns the median duration.
func median(n int, f func()) time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		t0 := time.Now()
		f()
		ds[i] = time.Since(t0)
	}
	slices.Sort(ds)
	return ds[n/2]
}

// year makes day i of one user's year from the real days, round robin,
// moved to base + i days.
type year struct {
	dir     string
	sources []string
	base    time.Time
	entries int
	max     map[string]float64 // the largest data.ts per stream, "" for all
}

func newYear(dir string, days int) (*year, error) {
	sources, err := synth.RealDays(dir)
	if err != nil {
		return nil, err
	}
	y := &year{dir: dir, sources: sources, base: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), max: map[string]float64{}}
	// Count the entries and find the latest data.ts ahead, so the upload
	// phases measure the upload alone.
	for d := range days {
		entries, err := y.day(d)
		if err != nil {
			return nil, err
		}
		y.entries += len(entries)
		for _, e := range entries {
			ts, ok := e["data"].(map[string]any)["ts"].(float64)
			if !ok {
				continue
			}
			key, _ := e["metadata"].(map[string]any)["key"].(string)
			y.max[""] = math.Max(y.max[""], ts)
			y.max[key] = math.Max(y.max[key], ts)
		}
	}
	return y, nil
}

func (y *year) maxTs(filter map[string]any) float64 {
	k, _ := filter["metadata.key"].(string)
	return y.max[k]
}

func (y *year) day(i int) ([]upcclient.Entry, error) {
	src := y.sources[i%len(y.sources)]
	entries, err := upcclient.LoadDay(filepath.Join(y.dir, src))
	if err != nil {
		return nil, err
	}
	// The source's day, from its first entry's write time (seconds or ms).
	w, _ := entries[0]["metadata"].(map[string]any)["write_ts"].(float64)
	if w >= 1e11 {
		w /= 1000
	}
	srcDay := time.Unix(int64(w), 0).UTC().Truncate(24 * time.Hour)
	shift := synth.Shift{Days: int(y.base.AddDate(0, 0, i).Sub(srcDay).Hours() / 24)}
	for _, e := range entries {
		if err := synth.Apply(map[string]any(e), shift); err != nil {
			return nil, fmt.Errorf("day %d from %s: %w", i, src, err)
		}
		if _, err := upcclient.Prepare(e, "year-user"); err != nil {
			return nil, fmt.Errorf("day %d from %s: %w", i, src, err)
		}
	}
	return entries, nil
}

// sampler reads the container's anonymous memory from the engine every
// half second and at the end of each phase, keeping the peak of each.
type sampler struct {
	docker *client.Client
	id     string

	mu      sync.Mutex
	cur     string
	peak    map[string]int64
	samples map[string]int
}

// phase samples once more for the phase ending, then starts p.
func (s *sampler) phase(ctx context.Context, p string) {
	s.sample(ctx)
	s.mu.Lock()
	s.cur = p
	s.mu.Unlock()
}

func (s *sampler) sample(ctx context.Context) {
	if anon, ok := s.anon(ctx); ok {
		s.mu.Lock()
		s.peak[s.cur] = max(s.peak[s.cur], anon)
		s.samples[s.cur]++
		s.mu.Unlock()
	}
}

func (s *sampler) run(ctx context.Context, first string) (stop func()) {
	s.cur, s.samples = first, map[string]int{}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			s.sample(ctx)
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return func() { cancel(); <-done }
}

// anon is the cgroup's anonymous memory: memory.stat's anon (cgroup v2) or
// total_rss (v1). ok is false while the container is stopped.
func (s *sampler) anon(ctx context.Context) (int64, bool) {
	res, err := s.docker.ContainerStats(ctx, s.id, client.ContainerStatsOptions{})
	if err != nil {
		return 0, false
	}
	defer res.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return 0, false
	}
	for _, k := range []string{"anon", "total_rss", "rss"} {
		if v, ok := st.MemoryStats.Stats[k]; ok {
			return int64(v), true
		}
	}
	return 0, false
}
