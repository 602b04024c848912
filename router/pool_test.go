package router_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/router"
)

// poolFake is the fake backend with the warm pool's powers (none used
// here: New only checks that they are there).
type poolFake struct{ *fakeBackend }

func (poolFake) PoolLaunch(context.Context, router.Spec) (router.Instance, error) {
	return router.Instance{}, nil
}
func (poolFake) PoolClaim(context.Context, router.ID, string, string) (router.Instance, error) {
	return router.Instance{}, nil
}
func (poolFake) DrainPool(context.Context) (int, error) { return 0, nil }

// TestNewWarmPool: a router refuses a warm pool it cannot run, naming why.
func TestNewWarmPool(t *testing.T) {
	ca := certstest.New(t)
	noPM := &conf.Catalog{Services: []conf.Service{{Name: "count", Image: "upc/count", Port: 8080, Health: "/healthz"}}}
	for _, c := range []struct {
		name string
		opts router.Options
		want string
	}{
		{"negative", router.Options{Backend: poolFake{newFake(t)}, Catalog: testCatalog, CA: ca.CA, WarmPool: -1}, "warm pool size -1 is negative"},
		{"backend without a pool", router.Options{Backend: newFake(t), Catalog: testCatalog, CA: ca.CA, WarmPool: 2}, "keeps no warm pool"},
		{"no CA", router.Options{Backend: poolFake{newFake(t)}, Catalog: testCatalog, PlainHTTP: true, WarmPool: 2}, "no CA"},
		{"no pm", router.Options{Backend: poolFake{newFake(t)}, Catalog: noPM, CA: ca.CA, WarmPool: 2}, "the catalog has no pm"},
		{"fill parallelism negative", router.Options{Backend: poolFake{newFake(t)}, Catalog: testCatalog, CA: ca.CA, WarmPool: 2, PoolFillParallel: -1}, "fill parallelism -1 is not between 0 and 64"},
		{"fill parallelism too high", router.Options{Backend: poolFake{newFake(t)}, Catalog: testCatalog, CA: ca.CA, WarmPool: 2, PoolFillParallel: 65}, "fill parallelism 65 is not between 0 and 64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := router.New(c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, want an error saying %q", err, c.want)
			}
		})
	}
	r, err := router.New(router.Options{Backend: poolFake{newFake(t)}, Catalog: testCatalog, CA: ca.CA, WarmPool: 2})
	if err != nil {
		t.Fatal(err)
	}
	if ready, size := r.PoolReady(); ready != 0 || size != 2 {
		t.Fatalf("PoolReady before RunPool: %d of %d, want 0 of 2", ready, size)
	}
}

// gatePool is a pool backend whose PoolLaunch calls each wait until want of
// them are in flight together (or two seconds pass), then fail: the fill
// never reaches a health check, and most says how many ran at once.
type gatePool struct {
	poolFake
	want    int
	release chan struct{}
	once    sync.Once

	mu             sync.Mutex
	inFlight, most int
	calls          int
}

func (p *gatePool) PoolLaunch(ctx context.Context, _ router.Spec) (router.Instance, error) {
	p.mu.Lock()
	p.inFlight++
	p.most = max(p.most, p.inFlight)
	if p.inFlight == p.want {
		p.once.Do(func() { close(p.release) })
	}
	p.mu.Unlock()
	select {
	case <-p.release:
	case <-time.After(2 * time.Second):
	}
	p.mu.Lock()
	p.inFlight--
	p.calls++
	p.mu.Unlock()
	return router.Instance{}, errors.New("no engine here")
}

// TestPoolFillParallel: a fill starts PoolFillParallel pooled instances
// at once (never more than the pool lacks), and one at a time by default.
func TestPoolFillParallel(t *testing.T) {
	ca := certstest.New(t)
	for _, c := range []struct {
		name           string
		size, parallel int
		want           int
	}{
		{"default: one at a time", 8, 0, 1},
		{"four at once", 8, 4, 4},
		{"no more than the pool lacks", 3, 8, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := &gatePool{poolFake: poolFake{newFake(t)}, want: c.want, release: make(chan struct{})}
			r, err := router.New(router.Options{Backend: b, Catalog: testCatalog, CA: ca.CA, WarmPool: c.size, PoolFillParallel: c.parallel})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { r.RunPool(ctx); close(done) }()
			deadline := time.Now().Add(20 * time.Second)
			for {
				b.mu.Lock()
				calls := b.calls
				b.mu.Unlock()
				if calls >= c.want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d launches finished, want %d", calls, c.want)
				}
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			<-done
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.most != c.want {
				t.Errorf("%d pooled launches ran at once, want %d", b.most, c.want)
			}
		})
	}
}
