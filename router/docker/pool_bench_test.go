package docker_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/routerclient"
)

// poolRounds: paired samples of each of the three launches per iteration.
const poolRounds = 20

// BenchmarkLaunchWarmPoolDocker measures a new user's PM launch from the
// warm pool (router HTTP API → claim at the agent → provision over TLS)
// against the usual launch of the same PM by a router with the same CA and
// no pool, and against raw Docker (create, start and first answer of the
// same container through the Docker API, no router), round by round in one
// run over one agent and engine. Each launch starts with the pool full and
// nothing refilling, so none pays for another's work. Metrics: p50 and p90
// in ms, pool/raw and pool/usual ratios of the p50s (target: pool p50 ≤ 30
// ms).
func BenchmarkLaunchWarmPoolDocker(b *testing.B) {
	ctx := context.Background()
	cat, pm, d, be := pmBenchAgent(b)
	gw := gateway(b, d.network)
	ca := certstest.New(b)
	const size = 2
	start := func(pool int) (*router.Router, *routerclient.Client) {
		users, err := router.OpenUsers("", adminToken)
		if err != nil {
			b.Fatal(err)
		}
		core, err := router.New(router.Options{Backend: be, Catalog: cat, HealthTimeout: 30 * time.Second, Users: users, CA: ca.CA, WarmPool: pool})
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(router.Handler(core, slog.New(slog.DiscardHandler)))
		b.Cleanup(srv.Close)
		rc, _ := routerclient.New(srv.URL, routerclient.WithToken(adminToken))
		return core, rc
	}
	pooled, poolRC := start(size)
	_, usualRC := start(0)
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); pooled.RunPool(pctx) }()
	b.Cleanup(func() { cancel(); <-done })
	full := func() {
		deadline := time.Now().Add(2 * time.Minute)
		for ready, _ := pooled.PoolReady(); ready < size; ready, _ = pooled.PoolReady() {
			if time.Now().After(deadline) {
				b.Fatalf("the warm pool holds %d of %d after 2 min", ready, size)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	launch := func(rc *routerclient.Client, user string) time.Duration {
		t0 := time.Now()
		in, err := rc.Launch(ctx, pm.Name, user)
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(t0)
		if err := rc.Delete(ctx, in.ID); err != nil {
			b.Fatal(err)
		}
		return took
	}
	var fromPool, usual, raw []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := range poolRounds {
			full()
			fromPool = append(fromPool, launch(poolRC, "pool"+strconv.Itoa(i)+"-"+strconv.Itoa(r)))
			full()
			usual = append(usual, launch(usualRC, "usual"+strconv.Itoa(i)+"-"+strconv.Itoa(r)))
			// The same PM as the router runs it: its own certificate, a
			// secret's hash, answering over TLS.
			env := ca.InstanceEnv("raw" + strconv.Itoa(r))
			env[access.EnvSHA256] = access.Hash(access.NewToken(access.PrefixInstance))
			dt, _, _ := launchDirectWith(b, pm, d.network, gw, r, env, ca.Client(2*time.Second), "https")
			raw = append(raw, dt)
		}
	}
	b.StopTimer()
	p50, p90 := percentile(fromPool, 50), percentile(fromPool, 90)
	u50, u90 := percentile(usual, 50), percentile(usual, 90)
	r50, r90 := percentile(raw, 50), percentile(raw, 90)
	b.ReportMetric(ms(p50), "pool-p50-ms")
	b.ReportMetric(ms(p90), "pool-p90-ms")
	b.ReportMetric(ms(u50), "usual-p50-ms")
	b.ReportMetric(ms(u90), "usual-p90-ms")
	b.ReportMetric(ms(r50), "raw-p50-ms")
	b.ReportMetric(ms(r90), "raw-p90-ms")
	b.ReportMetric(float64(p50)/float64(r50), "pool/raw")
	b.ReportMetric(float64(p50)/float64(u50), "pool/usual")
	b.Logf("%d samples each, launch→answer of a new user's PM: from the pool p50 %.1f ms p90 %.1f ms (min %.1f, max %.1f); "+
		"usual launch (TLS, no pool) p50 %.1f ms p90 %.1f ms; raw Docker create+start+first answer p50 %.1f ms p90 %.1f ms; "+
		"p50 ratios pool/raw %.3f, pool/usual %.3f",
		len(fromPool), ms(p50), ms(p90), ms(slices.Min(fromPool)), ms(slices.Max(fromPool)), ms(u50), ms(u90), ms(r50), ms(r90),
		float64(p50)/float64(r50), float64(p50)/float64(u50))
}

// percentile is the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}
