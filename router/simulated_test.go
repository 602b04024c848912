package router_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/api"
)

// simBackend is a mock backend (unit test only): every instance's address
// is one TCP listener that counts the connections made to it and answers
// none, and it reports instances Simulated when told to, as the Kubernetes
// backend does for a pod on a kwok node with simulated nodes accepted.
type simBackend struct {
	addr      string
	conns     *atomic.Int32
	simulated bool

	mu    sync.Mutex
	insts map[router.ID]router.Instance
}

func newSimBackend(t *testing.T, simulated bool) *simBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	b := &simBackend{addr: "https://" + ln.Addr().String(), conns: &atomic.Int32{}, simulated: simulated, insts: map[router.ID]router.Instance{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.conns.Add(1)
			c.Close()
		}
	}()
	return b
}

func (b *simBackend) Launch(_ context.Context, s router.Spec) (router.Instance, error) {
	in := router.Instance{ID: s.ID, Service: s.Service, User: s.User, Owner: s.Owner, PM: s.PM, Machine: "kwok-0",
		Address: b.addr, Image: s.Image, State: router.StateRunning, Created: time.Now(), Simulated: b.simulated}
	b.mu.Lock()
	b.insts[s.ID] = in
	b.mu.Unlock()
	return in, nil
}

func (b *simBackend) set(id router.ID, st router.State) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	in, ok := b.insts[id]
	if !ok {
		return fmt.Errorf("%w: %s", router.ErrNotFound, id)
	}
	in.State = st
	b.insts[id] = in
	return nil
}

func (b *simBackend) Pause(_ context.Context, id router.ID) error {
	return b.set(id, router.StatePaused)
}
func (b *simBackend) Resume(_ context.Context, id router.ID) error {
	return b.set(id, router.StateRunning)
}
func (b *simBackend) Destroy(_ context.Context, id router.ID) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.insts[id]; !ok {
		return fmt.Errorf("%w: %s", router.ErrNotFound, id)
	}
	delete(b.insts, id)
	return nil
}

func (b *simBackend) List(context.Context) ([]router.Instance, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := []router.Instance{}
	for _, in := range b.insts {
		out = append(out, in)
	}
	return out, nil
}

func (b *simBackend) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.insts)
}

var simCatalog = &conf.Catalog{Services: []conf.Service{
	{Name: "pm", Image: "upc/pm", Port: 8080, Health: "/healthz",
		Volumes: []conf.Volume{{Name: "data", Path: "/data", PerUser: true}},
		Idle:    conf.Idle{PauseAfter: conf.Duration(time.Minute)}},
	{Name: "count", Image: "upc/count", Port: 8080, Health: "/healthz"},
}}

func simRouter(t *testing.T, b router.Backend, health time.Duration) *router.Router {
	r, err := router.New(router.Options{Backend: b, Catalog: simCatalog, CA: certstest.New(t).CA,
		HealthTimeout: health, ClaimGrace: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSimulatedInstanceIsNeverProbed: an instance its backend reports
// Simulated (a pod on a kwok node, which runs no process) launches with no
// health wait, and nothing else the router does calls it: not the
// unclaimed-PM check of a second launch, not the idle sweep, not the
// certificate renewal (at resume or all at once), not a bound launch's grant
// check. Its address accepts connections and answers none, so any call
// would be counted (and a launch that waited would fail).
func TestSimulatedInstanceIsNeverProbed(t *testing.T) {
	b := newSimBackend(t, true)
	r := simRouter(t, b, time.Hour)
	ctx := context.Background()
	in, err := r.Launch(ctx, "pm", "alice")
	if err != nil {
		t.Fatalf("launch of a simulated instance: %v", err)
	}
	if !in.Simulated {
		t.Error("the launched instance is not reported Simulated")
	}
	// The user's PM runs and its secret was never used: a second launch
	// would ask it whether it was claimed, were it not simulated.
	if _, err := r.Launch(ctx, "pm", "alice"); !errors.Is(err, router.ErrConflict) {
		t.Errorf("second PM for alice: %v, want ErrConflict (the simulated PM kept)", err)
	}
	if res := r.Sweep(ctx); res.Unknown != 1 || res.Paused != 0 {
		t.Errorf("idle sweep: %+v, want the simulated PM's idle time unknown", res)
	}
	if n, failed := r.RenewAll(ctx); n != 0 || failed != 0 {
		t.Errorf("RenewAll: %d renewed, %d failed, want the simulated PM skipped", n, failed)
	}
	if _, err := r.LaunchAs(ctx, router.Identity{Name: "admin", Role: api.RoleAdmin},
		api.LaunchRequest{Service: "count", PM: string(in.ID), Grant: access.PrefixGrant + "x"}); !errors.Is(err, router.ErrPMUnreachable) {
		t.Errorf("bound launch on the simulated PM: %v, want ErrPMUnreachable", err)
	}
	if err := r.Pause(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.Resume(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if n := b.conns.Load(); n != 0 {
		t.Errorf("the router connected to the simulated instance %d times, want never", n)
	}
}

// TestSilentInstanceStillWaits: the same silent instance, not reported
// Simulated, is probed and, never answering, refused after the health
// timeout and removed: accepting a pod's Ready status is the backend's
// decision, never a default.
func TestSilentInstanceStillWaits(t *testing.T) {
	b := newSimBackend(t, false)
	r := simRouter(t, b, 200*time.Millisecond)
	_, err := r.Launch(context.Background(), "pm", "alice")
	if !errors.Is(err, router.ErrUnhealthy) {
		t.Fatalf("launch of a silent instance: %v, want ErrUnhealthy", err)
	}
	if b.conns.Load() == 0 {
		t.Error("the router never probed the instance")
	}
	if n := b.len(); n != 0 {
		t.Errorf("%d instances left, want the silent one removed", n)
	}
}
