package router_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/e-mission/upc/router"
)

// The router replaces a user's running PM when they launch again only if
// the PM says its secret was never used and the secret cannot still be on
// its way (adopted after a restart, or launched here past the claim grace).
// Everything else keeps the 409. The backend is the in-memory fake (a unit
// test); TestRouterKilledMidLaunchDocker does it with the real router
// process, PM and engine.
func TestUnclaimedPMReplaced(t *testing.T) {
	ctx := context.Background()
	f := newFake(t)
	open := func(grace time.Duration) *router.Router {
		r, err := router.New(router.Options{Backend: f, Catalog: testCatalog, PlainHTTP: true, ClaimGrace: grace, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Rebuild(ctx); err != nil {
			t.Fatal(err)
		}
		return r
	}
	setClaim := func(id router.ID, c bool) {
		f.mu.Lock()
		f.claimed[id] = c
		f.mu.Unlock()
	}
	conflict := func(r *router.Router, user string) {
		t.Helper()
		if _, err := r.Launch(ctx, "pm", user); !errors.Is(err, router.ErrConflict) {
			t.Fatalf("%s launching again: %v, want a conflict", user, err)
		}
	}
	replaced := func(r *router.Router, user string, old router.ID) {
		t.Helper()
		in, err := r.Launch(ctx, "pm", user)
		if err != nil {
			t.Fatalf("%s launching again: %v, want the unclaimed %s replaced", user, err, old)
		}
		if _, err := r.Get(old); !errors.Is(err, router.ErrNotFound) {
			t.Fatalf("the replaced %s is still known: %v", old, err)
		}
		if f.spec(string(old)).ID != "" {
			t.Fatalf("the replaced %s still runs", old)
		}
		if in.ID == old {
			t.Fatal("the same instance came back")
		}
	}

	r1 := open(time.Hour)
	pms := map[string]router.ID{}
	for _, u := range []string{"fresh", "used", "paused", "plain"} {
		in, err := r1.Launch(ctx, "pm", u)
		if err != nil {
			t.Fatal(err)
		}
		pms[u] = in.ID
	}
	for _, u := range []string{"fresh", "paused"} {
		setClaim(pms[u], false)
	}
	setClaim(pms["used"], true)
	// Launched here, within the grace: its caller may be about to use it.
	conflict(r1, "fresh")
	conflict(r1, "used")

	// A restarted router: what it adopted and is unclaimed goes at once;
	// a claimed PM, a paused one, one that says nothing of claims do not.
	r2 := open(time.Hour)
	if err := r2.Pause(ctx, pms["paused"]); err != nil {
		t.Fatal(err)
	}
	replaced(r2, "fresh", pms["fresh"])
	conflict(r2, "used")
	conflict(r2, "paused")
	conflict(r2, "plain")

	// Launched here past the grace and never used: replaced.
	r3 := open(time.Nanosecond)
	in, err := r3.Launch(ctx, "pm", "late")
	if err != nil {
		t.Fatal(err)
	}
	setClaim(in.ID, false)
	replaced(r3, "late", in.ID)
	conflict(r3, "used")
}
