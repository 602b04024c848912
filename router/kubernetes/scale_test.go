package kubernetes_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/harness/cluster"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/internal/testskip"
	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func pmService(t testing.TB) conf.Service { return catalogService(t, "pm") }

// catalogService is the shipped catalog's service, pinned to a made-up
// digest (kwok runs no image).
func catalogService(t testing.TB, name string) conf.Service {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	cat, err := conf.LoadCatalog(filepath.Join(filepath.Dir(file), "..", "..", "conf", "catalog.json"))
	if err != nil {
		t.Fatal(err)
	}
	pm, ok := cat.Lookup(name)
	if !ok {
		t.Fatalf("the catalog has no %s", name)
	}
	pm.Digest = "sha256:" + strings.Repeat("cd", 32)
	return pm
}

func spec(s conf.Service, id router.ID, user string) router.Spec {
	return router.Spec{ID: id, Service: s.Name, User: user, Image: s.Image, Digest: s.Digest, Port: s.Port,
		Health: s.Health, Env: s.Env, Resources: s.Resources, Volumes: s.Volumes}
}

func newIDs(n int) []router.ID {
	ids := make([]router.ID, n)
	for i := range ids {
		ids[i] = router.ID(randName("")[:8] + fmt.Sprintf("%04x", i))
	}
	return ids
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkClusterKwokLaunch launches UPC_SCALE_N (default 1000) PM
// instances (pod, NodePort Service, claim bound to a volume) on kwok's
// simulated nodes, UPC_SCALE_CONCURRENCY (default 100) at a time; then the
// same launches of the count service, which has no per-user volume, to
// separate the router's own rate from the volume controller's binding. A
// launch returns when its pod is Ready (watched), so the wall time is the
// time to all Ready. Run with -benchtime=1x.
func BenchmarkClusterKwokLaunch(b *testing.B) {
	c := needCluster(b)
	sel := needNodes(b, c, "fake")
	n, conc := envInt("UPC_SCALE_N", 1000), envInt("UPC_SCALE_CONCURRENCY", 100)
	pm := pmService(b)
	for _, svc := range []conf.Service{pm, catalogService(b, "count")} {
		b.Run("service="+svc.Name, func(b *testing.B) { kwokLaunches(b, c, sel, svc, n, conc) })
	}
}

func kwokLaunches(b *testing.B, c testCluster, sel map[string]string, pm conf.Service, n, conc int) {
	for b.Loop() {
		ns := namespace(b, c)
		be := newBackend(b, c, upck8s.Options{Namespace: ns, NodeSelector: sel, ReadyTimeout: 5 * time.Minute})
		runtime.GC()
		ids := newIDs(n)
		lat := make([]time.Duration, n)
		errs := make([]error, n)
		sem := make(chan struct{}, conc)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				t0 := time.Now()
				_, errs[i] = be.Launch(context.Background(), spec(pm, ids[i], fmt.Sprintf("user%05d", i)))
				lat[i] = time.Since(t0)
			})
		}
		wg.Wait()
		wall := time.Since(start)
		for i, err := range errs {
			if err != nil {
				b.Fatalf("launch %d: %v", i, err)
			}
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		all, err := be.List(context.Background())
		if err != nil || len(all) != n {
			b.Fatalf("list after launches: %d instances, %v", len(all), err)
		}
		b.ReportMetric(float64(n)/wall.Seconds(), "launches/s")
		b.ReportMetric(wall.Seconds(), "s-all-ready")
		b.ReportMetric(float64(quantile(lat, 0.5).Milliseconds()), "ms-p50")
		b.ReportMetric(float64(quantile(lat, 0.99).Milliseconds()), "ms-p99")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "MB-heap")
		b.ReportMetric(rssMB(), "MB-rss")
		b.Logf("%d %s launches on kwok, %d at a time: %.1f launches/s, all Ready in %s, launch p50 %s p99 %s, heap %.0f MB, RSS %.0f MB",
			n, pm.Name, conc, float64(n)/wall.Seconds(), wall.Round(time.Millisecond), quantile(lat, 0.5).Round(time.Millisecond),
			quantile(lat, 0.99).Round(time.Millisecond), float64(ms.HeapInuse)/(1<<20), rssMB())
	}
}

// BenchmarkClusterRealLaunchToAnswer measures PM launch→answer on the real
// node through the router core (its health probe at node address + node
// port), one launch at a time, UPC_LATENCY_N (default 50) launches of new
// users, with no warm pool and with one of UPC_POOL (default 3) pods. It runs
// the PM image of build/images.json (make images). Run with -benchtime=1x.
func BenchmarkClusterRealLaunchToAnswer(b *testing.B) {
	c := needCluster(b)
	sel := needNodes(b, c, "real")
	pm := builtPM(b, c)
	n := envInt("UPC_LATENCY_N", 50)
	cat := &conf.Catalog{Services: []conf.Service{pm}}
	for _, pool := range []int{0, envInt("UPC_POOL", 3)} {
		b.Run(fmt.Sprintf("pool=%d", pool), func(b *testing.B) {
			for b.Loop() {
				ns := namespace(b, c)
				be := newBackend(b, c, upck8s.Options{Namespace: ns, NodeSelector: sel, ImageByID: c.local != "",
					WarmPool: map[string]int{pm.Name: pool}, Catalog: cat})
				r, err := router.New(router.Options{Backend: be, Catalog: cat, HealthTimeout: time.Minute,
					HTTPClient: &http.Client{Timeout: time.Second}, PlainHTTP: true})
				if err != nil {
					b.Fatal(err)
				}
				var lat []time.Duration
				for i := range n {
					if pool > 0 {
						ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
						if err := be.WaitPool(ctx); err != nil {
							b.Fatal(err)
						}
						cancel()
					}
					t0 := time.Now()
					in, err := r.Launch(context.Background(), pm.Name, fmt.Sprintf("user%03d", i))
					if err != nil {
						b.Fatalf("launch %d: %v", i, err)
					}
					lat = append(lat, time.Since(t0))
					if err := r.Delete(context.Background(), in.ID); err != nil {
						b.Fatalf("delete %d: %v", i, err)
					}
				}
				b.ReportMetric(float64(quantile(lat, 0.5).Milliseconds()), "ms-p50")
				b.ReportMetric(float64(quantile(lat, 0.99).Milliseconds()), "ms-p99")
				b.Logf("real node, warm pool %d: %d PM launches, launch→answer p50 %s p99 %s (min %s, max %s)", pool, n,
					quantile(lat, 0.5).Round(time.Millisecond), quantile(lat, 0.99).Round(time.Millisecond),
					slices.Min(lat).Round(time.Millisecond), slices.Max(lat).Round(time.Millisecond))
			}
		})
	}
}

// builtPM is the catalog's PM pinned to the image make images built, loaded
// into the local cluster's node.
func builtPM(b testing.TB, c testCluster) conf.Service {
	b.Helper()
	_, file, _, _ := runtime.Caller(0)
	m, err := images.LoadManifest(filepath.Join(filepath.Dir(file), "..", "..", "build", "images.json"))
	if err != nil {
		testskip.Skipf(b, "needs the PM image: make images (%v)", err)
	}
	pm := pmService(b)
	cat := &conf.Catalog{Services: []conf.Service{pm}}
	if unpinned := m.Pin(cat); len(unpinned) > 0 {
		testskip.Skipf(b, "build/images.json has no %v: make images", unpinned)
	}
	pm = cat.Services[0]
	if c.local != "" {
		if err := cluster.LoadImages(context.Background(), discard{}, c.local, pm.Image); err != nil {
			b.Fatal(err)
		}
	}
	return pm
}
