package router_test

import (
	"context"
	"strings"
	"testing"

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
