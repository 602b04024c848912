package docker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routertest"
	pmapi "github.com/e-mission/upc/services/pm/api"
)

// TestIdlePolicyDocker runs the idle policy for real, with short durations,
// on the real PM image: the PM reports its idle time in /healthz, an
// authenticated call resets it (a health probe does not), a sweep pauses
// the PM once idle for pause_after (its container frozen) and deletes it
// once idle for delete_after, counted on from the pause; the user's volume
// outlives it.
func TestIdlePolicyDocker(t *testing.T) {
	ctx := context.Background()
	m := imagestest.Require(t, "pm")
	cat, err := conf.DefaultCatalog()
	if err != nil {
		t.Fatal(err)
	}
	m.Pin(cat)
	const pauseAfter, deleteAfter = 2 * time.Second, 6 * time.Second
	for i := range cat.Services {
		if cat.Services[i].Name == "pm" {
			cat.Services[i].Idle = conf.Idle{PauseAfter: conf.Duration(pauseAfter), DeleteAfter: conf.Duration(deleteAfter)}
		}
	}
	d := newDeployment(t)
	b := backend(t, docker.Machine{Name: "local", Weight: 1, Driver: d.engine(t, "pm")})
	ca := certstest.New(t)
	r, err := router.New(router.Options{Backend: b, Catalog: cat, CA: ca.CA})
	if err != nil {
		t.Fatal(err)
	}
	in, err := r.Launch(ctx, "pm", "ida")
	if err != nil {
		t.Fatal(err)
	}
	// Only the router's certificate is told how long the PM has been idle;
	// any other caller gets the status alone.
	hc := ca.ClientAs(t, certs.RouterName, 2*time.Second)
	if resp, err := ca.Client(2 * time.Second).Get(in.Address + "/healthz"); err != nil {
		t.Fatal(err)
	} else {
		var h access.Health
		err := json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if err != nil || h.Status != "ok" || h.IdleSeconds != nil || h.Claimed != nil {
			t.Fatalf("healthz without the router's certificate: %+v, %v; want the status alone", h, err)
		}
	}
	idle := func() (time.Duration, error) {
		resp, err := hc.Get(in.Address + "/healthz")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var h access.Health
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || h.IdleSeconds == nil {
			return 0, fmt.Errorf("healthz body: %+v, %v", h, err)
		}
		return time.Duration(*h.IdleSeconds) * time.Second, nil
	}
	state := func() router.State {
		t.Helper()
		all, err := b.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range all {
			if x.ID == in.ID {
				return x.State
			}
		}
		return "gone"
	}

	// The owner calls at 1.5s: at 2.5s the PM is 1s idle, not paused.
	time.Sleep(1500 * time.Millisecond)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.Address+pmapi.PathStatus, nil)
	req.Header.Set("Authorization", "Bearer "+in.Secret)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("owner's status call: %s", resp.Status)
	}
	time.Sleep(time.Second)
	if got, err := idle(); err != nil || got >= pauseAfter {
		t.Fatalf("idle after the owner's call: %s, %v; want under %s", got, err, pauseAfter)
	}
	if res := r.Sweep(ctx); res != (router.SweepResult{}) {
		t.Fatalf("sweep of a PM used a second ago: %+v", res)
	}
	// Probes are not use: the idle time grows past pause_after.
	routertest.Eventually(t, "pm idle for pause_after", func() error {
		if got, err := idle(); err != nil || got < pauseAfter {
			return fmt.Errorf("idle %s, %v", got, err)
		}
		return nil
	})
	paused := time.Now()
	if res := r.Sweep(ctx); res != (router.SweepResult{Paused: 1}) {
		t.Fatalf("sweep of an idle PM: %+v, want it paused", res)
	}
	if st := state(); st != router.StatePaused {
		t.Fatalf("container %s after the sweep, want paused", st)
	}
	if resp, err := ca.Client(300 * time.Millisecond).Get(in.Address + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("paused pm answered")
	}
	// Paused at 2s idle: deleted once 6s idle, 4s after the pause.
	time.Sleep(time.Until(paused.Add(deleteAfter - pauseAfter - time.Second)))
	if res := r.Sweep(ctx); res != (router.SweepResult{}) || state() != router.StatePaused {
		t.Fatalf("sweep %s after the pause: %+v, %s; want it paused still", time.Since(paused), res, state())
	}
	time.Sleep(time.Until(paused.Add(deleteAfter - pauseAfter + 500*time.Millisecond)))
	if res := r.Sweep(ctx); res != (router.SweepResult{Deleted: 1}) {
		t.Fatalf("sweep %s after the pause: %+v, want it deleted", time.Since(paused), res)
	}
	if st := state(); st != "gone" {
		t.Fatalf("container %s after the sweep, want gone", st)
	}
	if _, err := r.Get(in.ID); err == nil {
		t.Error("the router still lists the deleted pm")
	}
	vol := agent.VolumeName(d.prefix+"-pm", "ida", "data")
	if _, err := cli.VolumeInspect(ctx, vol, client.VolumeInspectOptions{}); err != nil {
		t.Fatalf("the user's volume %s did not outlive the idle pm: %v", vol, err)
	}
}
