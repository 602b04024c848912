package router_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/router"
)

// idleCatalog: the PM pauses after 30m idle and is deleted after 24h; count
// is only deleted, after 1h; metrics has no policy.
var idleCatalog = &conf.Catalog{Services: []conf.Service{
	{Name: "pm", Image: "upc/pm", Port: 8080, Health: "/healthz",
		Volumes: []conf.Volume{{Name: "data", Path: "/data", PerUser: true}},
		Idle:    conf.Idle{PauseAfter: conf.Duration(30 * time.Minute), DeleteAfter: conf.Duration(24 * time.Hour)}},
	{Name: "count", Image: "upc/count", Port: 8080, Health: "/healthz",
		Idle: conf.Idle{DeleteAfter: conf.Duration(time.Hour)}},
	{Name: "metrics", Image: "upc/metrics", Port: 8080, Health: "/healthz"},
}}

// clock is a settable time for the router's idle policy.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// TestSweep drives the idle policy with an injected clock over the fake
// backend, whose instances report the idle time the test sets: an idle PM is
// paused, then deleted once its idle time (running on from its pause) passes
// delete_after; count is deleted without a pause; a service with no policy
// and an instance that reports no idle time are left alone; a resume is use
// (a frozen instance's own count ran on); after a restart a paused instance
// counts from the restart.
func TestSweep(t *testing.T) {
	ctx := context.Background()
	f := newFake(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &clock{t: t0}
	var logs strings.Builder
	var mu sync.Mutex
	newRouter := func() *router.Router {
		r, err := router.New(router.Options{Backend: f, Catalog: idleCatalog, PlainHTTP: true, Now: clk.Now,
			Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := newRouter()
	launch := func(svc, user string) router.ID {
		in, err := r.Launch(ctx, svc, user)
		if err != nil {
			t.Fatal(err)
		}
		return in.ID
	}
	pm, count, metrics := launch("pm", "alice"), launch("count", "alice"), launch("metrics", "alice")
	silent := launch("count", "bob") // its /healthz reports no idle time
	setIdle := func(id router.ID, d time.Duration) {
		f.mu.Lock()
		f.idle[id] = d
		f.mu.Unlock()
	}
	state := func(id router.ID) router.State {
		t.Helper()
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.specs[id]; !ok {
			return "deleted"
		}
		in, err := r.Get(id)
		if err != nil {
			t.Fatalf("%s is in the backend but not in the router's view: %v", id, err)
		}
		if in.State != f.state[id] {
			t.Fatalf("%s: router says %s, backend %s", id, in.State, f.state[id])
		}
		return in.State
	}
	sweep := func(at time.Duration, want router.SweepResult) {
		t.Helper()
		clk.Set(t0.Add(at))
		if got := r.Sweep(ctx); got != want {
			t.Fatalf("sweep at +%s: %+v, want %+v", at, got, want)
		}
	}
	check := func(want map[router.ID]router.State) {
		t.Helper()
		for id, st := range want {
			if got := state(id); got != st {
				t.Errorf("%s: %s, want %s", id, got, st)
			}
		}
	}

	setIdle(pm, 10*time.Minute)
	setIdle(count, 10*time.Minute)
	setIdle(metrics, 1000*time.Hour)
	sweep(10*time.Minute, router.SweepResult{Unknown: 1})
	check(map[router.ID]router.State{pm: router.StateRunning, count: router.StateRunning, metrics: router.StateRunning, silent: router.StateRunning})

	// Past pause_after: the PM is paused (at +31m, idle since +1m as it
	// reports).
	setIdle(pm, 30*time.Minute)
	setIdle(count, 30*time.Minute)
	sweep(31*time.Minute, router.SweepResult{Paused: 1, Unknown: 1})
	check(map[router.ID]router.State{pm: router.StatePaused, count: router.StateRunning})

	// count, idle past delete_after, is deleted; the paused PM, 23h59m
	// idle, stays paused.
	setIdle(count, 61*time.Minute)
	sweep(24*time.Hour, router.SweepResult{Deleted: 1, Unknown: 1})
	check(map[router.ID]router.State{pm: router.StatePaused, count: "deleted", metrics: router.StateRunning})

	// Its owner resumes it: the PM's own count ran on while frozen, but a
	// resume is use.
	if err := r.Resume(ctx, pm); err != nil {
		t.Fatal(err)
	}
	setIdle(pm, 25*time.Hour)
	sweep(24*time.Hour+29*time.Minute, router.SweepResult{Unknown: 1})
	check(map[router.ID]router.State{pm: router.StateRunning})
	sweep(24*time.Hour+31*time.Minute, router.SweepResult{Paused: 1, Unknown: 1})
	check(map[router.ID]router.State{pm: router.StatePaused})

	// A restarted router counts the paused PM's idle time from its restart.
	restart := 30 * time.Hour
	clk.Set(t0.Add(restart))
	r = newRouter()
	if err := r.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	sweep(restart+23*time.Hour, router.SweepResult{Unknown: 1})
	check(map[router.ID]router.State{pm: router.StatePaused})
	sweep(restart+24*time.Hour, router.SweepResult{Deleted: 1, Unknown: 1})
	check(map[router.ID]router.State{pm: "deleted", metrics: router.StateRunning, silent: router.StateRunning})

	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{
		`msg="pausing idle instance" instance=` + string(pm) + ` service=pm user=alice idle=30m0s pause_after=30m0s`,
		`msg="deleting idle instance" instance=` + string(count) + ` service=count user=alice state=running idle=1h1m0s delete_after=1h0m0s`,
		`msg="deleting idle instance" instance=` + string(pm) + ` service=pm user=alice state=paused idle=24h0m0s delete_after=24h0m0s`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestPausedInstanceSaysResume: the router's answer for a paused instance
// tells its owner how to have it answer again; a running one has no hint.
func TestPausedInstanceSaysResume(t *testing.T) {
	ctx := context.Background()
	e := newAccessEnv(t, false)
	in, err := e.alice.Launch(ctx, "count", "")
	if err != nil {
		t.Fatal(err)
	}
	if in.Hint != "" {
		t.Errorf("running instance has a hint: %q", in.Hint)
	}
	if _, err := e.alice.Pause(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	got, err := e.alice.Get(ctx, in.ID)
	want := "paused: resume it with POST /v1/instances/" + in.ID + "/resume"
	if err != nil || got.State != "paused" || got.Hint != want {
		t.Fatalf("paused instance: %+v, %v; want hint %q", got, err, want)
	}
	if _, err := e.alice.Resume(ctx, in.ID); err != nil {
		t.Fatalf("the owner resumes it: %v", err)
	}
	if got, err := e.alice.Get(ctx, in.ID); err != nil || got.State != "running" || got.Hint != "" {
		t.Fatalf("resumed instance: %+v, %v", got, err)
	}
}

// TestSweepIdleLoop: the loop sweeps every interval until its context ends,
// and returns at once when no service has an idle policy.
func TestSweepIdleLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFake(t)
	off, err := router.New(router.Options{Backend: f, Catalog: testCatalog, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { off.SweepIdle(ctx, time.Millisecond); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("SweepIdle with no idle policy did not return")
	}

	r, err := router.New(router.Options{Backend: f, Catalog: idleCatalog, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	in, err := r.Launch(ctx, "count", "alice")
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.idle[in.ID] = 2 * time.Hour
	f.mu.Unlock()
	// A router that adopted it (no launch here to count as use) deletes it.
	r2, err := router.New(router.Options{Backend: f, Catalog: idleCatalog, PlainHTTP: true, IdleInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	go func() { r2.SweepIdle(ctx, 0); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		_, alive := f.specs[in.ID]
		f.mu.Unlock()
		if !alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop did not delete an instance idle past delete_after")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("SweepIdle did not return when its context ended")
	}
}
