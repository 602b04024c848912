package router

import (
	"cmp"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/e-mission/upc/conf"
)

// The idle policy (the catalog's idle: {pause_after, delete_after}). The
// router does not see instances' traffic: each instance reports in its
// /healthz how long since it last served an authenticated request
// (access.Health.IdleSeconds), and Sweep asks every running instance of a
// service with a policy. A paused instance answers nothing: its idle time
// runs on from when it was paused, a time the router keeps (after a restart,
// the restart's time).

// idleProbes bounds how many instances one sweep asks at once.
const idleProbes = 8

// DefaultIdleInterval is how often SweepIdle sweeps when Options give no
// interval and the shortest policy is long.
const DefaultIdleInterval = time.Minute

// SweepResult says what one sweep did.
type SweepResult struct {
	Paused, Deleted int
	// Unknown counts running instances with a policy whose idle time could
	// not be read (no answer, or an image that does not report it): left
	// as they are.
	Unknown int
}

// SweepIdle calls Sweep every interval until ctx ends; interval 0 is the
// Options' IdleInterval, else a quarter of the shortest idle duration in
// the catalog, between 1s and DefaultIdleInterval. With no service under
// an idle policy it returns at once.
func (r *Router) SweepIdle(ctx context.Context, interval time.Duration) {
	shortest := time.Duration(0)
	for _, s := range r.catalog.Services {
		for _, d := range []conf.Duration{s.Idle.PauseAfter, s.Idle.DeleteAfter} {
			if d > 0 && (shortest == 0 || d.D() < shortest) {
				shortest = d.D()
			}
		}
	}
	if shortest == 0 {
		return
	}
	interval = cmp.Or(interval, r.idleInterval)
	if interval <= 0 {
		interval = min(max(shortest/4, time.Second), DefaultIdleInterval)
	}
	r.logger.Info("idle policy on", "interval", interval)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res := r.Sweep(ctx)
		if res.Paused+res.Deleted+res.Unknown > 0 {
			r.logger.Info("idle sweep", "paused", res.Paused, "deleted", res.Deleted, "unknown", res.Unknown)
		}
	}
}

// Sweep applies the catalog's idle policies once, at the Options' clock:
// it pauses the running instances idle for pause_after and deletes those
// (running or paused) idle for delete_after. Per-user volumes stay. Every
// action is logged; a failed one is logged and left to the next sweep.
func (r *Router) Sweep(ctx context.Context) SweepResult {
	r.mu.RLock()
	var todo []Instance
	for _, in := range r.instances {
		if svc, ok := r.catalog.Lookup(in.Service); ok && svc.Idle.Enabled() {
			todo = append(todo, in)
		}
	}
	r.mu.RUnlock()
	var paused, deleted, unknown atomic.Int32
	sem := make(chan struct{}, idleProbes)
	var wg sync.WaitGroup
	for _, in := range todo {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			switch r.sweepOne(ctx, in) {
			case "pause":
				paused.Add(1)
			case "delete":
				deleted.Add(1)
			case "unknown":
				unknown.Add(1)
			}
		})
	}
	wg.Wait()
	return SweepResult{Paused: int(paused.Load()), Deleted: int(deleted.Load()), Unknown: int(unknown.Load())}
}

// sweepOne applies in's policy and says what it did: "pause", "delete",
// "unknown" (idle time unread) or "".
func (r *Router) sweepOne(ctx context.Context, in Instance) string {
	svc, _ := r.catalog.Lookup(in.Service)
	pol := svc.Idle
	now := r.now()
	var idle time.Duration
	switch in.State {
	case StatePaused:
		r.mu.Lock()
		since, ok := r.idleSince[in.ID]
		if !ok {
			// Paused before this router knew it: count from now.
			since = now
			r.idleSince[in.ID] = now
		}
		r.mu.Unlock()
		idle = now.Sub(since)
	case StateRunning:
		if in.Simulated { // runs no process: nothing to ask
			return "unknown"
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		h, err := r.health(pctx, in.ID, in.Address+svc.Health)
		cancel()
		if err != nil || h.IdleSeconds == nil {
			r.logger.Debug("idle time unknown", "instance", in.ID, "service", in.Service, "err", err)
			return "unknown"
		}
		idle = time.Duration(*h.IdleSeconds) * time.Second
		// The instance's clock ran while it was paused (a frozen Docker
		// container's does): a launch or a resume here is use too.
		r.mu.RLock()
		at, ok := r.used[in.ID]
		r.mu.RUnlock()
		if ok {
			idle = min(idle, max(0, now.Sub(at)))
		}
	default:
		return ""
	}
	switch {
	case pol.DeleteAfter > 0 && idle >= pol.DeleteAfter.D():
		r.logger.Info("deleting idle instance", "instance", in.ID, "service", in.Service, "user", in.User,
			"state", in.State, "idle", idle, "delete_after", pol.DeleteAfter.D())
		if err := r.Delete(ctx, in.ID); err != nil {
			r.logger.Warn("could not delete idle instance", "instance", in.ID, "err", err.Error())
			return ""
		}
		return "delete"
	case in.State == StateRunning && pol.PauseAfter > 0 && idle >= pol.PauseAfter.D():
		r.logger.Info("pausing idle instance", "instance", in.ID, "service", in.Service, "user", in.User,
			"idle", idle, "pause_after", pol.PauseAfter.D())
		if err := r.pause(ctx, in.ID, now.Add(-idle)); err != nil {
			r.logger.Warn("could not pause idle instance", "instance", in.ID, "err", err.Error())
			return ""
		}
		return "pause"
	}
	return ""
}
