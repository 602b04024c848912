// Package routertest is the conformance suite every router backend must
// pass (Docker now, Kubernetes later): the same script, run against a real
// engine or cluster, through the Backend interface and through the router
// core on top of it.
//
// The suite's instances run the test server of router/docker/testimage (or
// an equivalent image): port 8080; GET /healthz 200 (503 forever when
// UPC_TEST_NEVER_HEALTHY is set); GET / → {"hostname": ...}; GET /fetch?url=;
// POST /write and GET /read of a file under /data.
package routertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/testskip"
	"github.com/e-mission/upc/router"
)

// Env is one isolated deployment on the backend under test.
type Env struct {
	// Open returns a backend over the deployment; calling it twice gives two
	// backends over the same instances (a router restart).
	Open func() router.Backend
	// Image and Digest name the test server image.
	Image, Digest string
	// HTTP, when set, is the client the suite and its routers reach
	// instances with (default: 500 ms timeout).
	HTTP *http.Client
	// NoProcess says the backend's instances run no process (simulated
	// Kubernetes nodes): HTTP's transport answers from pod status, and the
	// checks that need a process to write, read or call out are skipped.
	NoProcess bool
	// Leftovers, when set, reads what the engine or cluster itself still
	// holds of user's stored data (volumes or claims labelled for the user,
	// files they kept), bypassing the backend under test: after an erase it
	// must be nothing.
	Leftovers func(t *testing.T, user string) []string
}

func (e Env) client() *http.Client {
	if e.HTTP != nil {
		return e.HTTP
	}
	return quick
}

func (e Env) needProcess(t *testing.T) {
	t.Helper()
	if e.NoProcess {
		testskip.Skip(t, "instances on this backend run no process (simulated nodes): nothing can write, read or call out")
	}
}

func (e Env) get(address, path string) (int, string, error) {
	resp, err := e.client().Get(address + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (e Env) answers(address string) error {
	code, _, err := e.get(address, "/healthz")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("status %d", code)
	}
	return nil
}

// NewEnv makes a fresh Env for one subtest and registers its cleanup.
type NewEnv func(t *testing.T) Env

// Catalog is the suite's catalog: "test" (with a per-user volume at /data)
// and "sick", the same image that never turns healthy.
func (e Env) Catalog() *conf.Catalog {
	return &conf.Catalog{Services: []conf.Service{
		{Name: "test", Aliases: []string{"Test"}, Image: e.Image, Digest: e.Digest, Port: 8080, Health: "/healthz",
			Env:     map[string]string{"UPC_TEST_USER": "yes"},
			Volumes: []conf.Volume{{Name: "data", Path: "/data", PerUser: true, SizeMB: 16}}},
		{Name: "sick", Image: e.Image, Digest: e.Digest, Port: 8080, Health: "/healthz",
			Env: map[string]string{"UPC_TEST_NEVER_HEALTHY": "1"}},
	}}
}

// Router builds a router core over b with the suite's catalog.
func (e Env) Router(t *testing.T, b router.Backend) *router.Router {
	t.Helper()
	// The suite's test image serves plain HTTP: it checks backends'
	// lifecycles; instances' TLS is tested with the real services.
	r, err := router.New(router.Options{Backend: b, Catalog: e.Catalog(), HealthTimeout: 15 * time.Second, HTTPClient: e.HTTP, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e Env) spec(id router.ID, user string) router.Spec {
	s := e.Catalog().Services[0]
	return router.Spec{ID: id, Service: s.Name, User: user, Owner: "owner-of-" + user, Image: s.Image, Digest: s.Digest, Port: s.Port,
		Health: s.Health, Env: s.Env, Volumes: s.Volumes}
}

// quick bounds each request of the suite and each of the router's health
// probes, with room for a loaded machine.
var quick = &http.Client{Timeout: 2 * time.Second}

// Get fetches address+path and returns status and body.
func Get(address, path string) (int, string, error) {
	resp, err := quick.Get(address + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Eventually polls f (bounded) until it returns nil.
func Eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func find(t *testing.T, b router.Backend, id router.ID) (router.Instance, bool) {
	t.Helper()
	all, err := b.List(context.Background())
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	i := slices.IndexFunc(all, func(in router.Instance) bool { return in.ID == id })
	if i < 0 {
		return router.Instance{}, false
	}
	return all[i], true
}

// Run runs the suite; newEnv is called once per subtest.
func Run(t *testing.T, newEnv NewEnv) {
	ctx := context.Background()

	t.Run("BackendLifecycle", func(t *testing.T) {
		env := newEnv(t)
		b := env.Open()
		in, err := b.Launch(ctx, env.spec("a1b2c3d4e5f6", "alice"))
		if err != nil {
			t.Fatalf("launch: %v", err)
		}
		if in.ID != "a1b2c3d4e5f6" || in.User != "alice" || in.Service != "test" || !strings.HasPrefix(in.Address, "http") {
			t.Fatalf("launch returned %+v", in)
		}
		if !strings.HasPrefix(in.Digest, "sha256:") || (env.Digest != "" && in.Digest != env.Digest) {
			t.Fatalf("digest %q, want the image ID %q", in.Digest, env.Digest)
		}
		Eventually(t, "new instance answers", func() error { return env.answers(in.Address) })
		got, ok := find(t, b, in.ID)
		if !ok || got.State != router.StateRunning || got.Address != in.Address || got.User != "alice" {
			t.Fatalf("list has %+v (found %v), want running at %s", got, ok, in.Address)
		}
		// The owner lives in the backend's labels: access control after a
		// router restart depends on it.
		if got.Owner != "owner-of-alice" || in.Owner != "owner-of-alice" {
			t.Fatalf("owner %q (launch said %q), want owner-of-alice", got.Owner, in.Owner)
		}

		if err := b.Pause(ctx, in.ID); err != nil {
			t.Fatalf("pause: %v", err)
		}
		if got, _ := find(t, b, in.ID); got.State != router.StatePaused {
			t.Fatalf("after pause, state %q", got.State)
		}
		if err := env.answers(in.Address); err == nil {
			t.Fatal("a paused instance answered")
		}
		if err := b.Resume(ctx, in.ID); err != nil {
			t.Fatalf("resume: %v", err)
		}
		Eventually(t, "resumed instance answers", func() error { return env.answers(in.Address) })

		if err := b.Destroy(ctx, in.ID); err != nil {
			t.Fatalf("destroy: %v", err)
		}
		if _, ok := find(t, b, in.ID); ok {
			t.Fatal("destroyed instance still listed")
		}
		if err := env.answers(in.Address); err == nil {
			t.Fatal("a destroyed instance answered")
		}
		for name, op := range map[string]func(context.Context, router.ID) error{"pause": b.Pause, "resume": b.Resume, "destroy": b.Destroy} {
			if err := op(ctx, in.ID); !errors.Is(err, router.ErrNotFound) {
				t.Errorf("%s of a destroyed instance: %v, want ErrNotFound", name, err)
			}
		}
	})

	t.Run("RouterLaunchAnswersAndUnhealthyIsRemoved", func(t *testing.T) {
		env := newEnv(t)
		b := env.Open()
		r := env.Router(t, b)
		in, err := r.Launch(ctx, "Test", "bob")
		if err != nil {
			t.Fatalf("launch: %v", err)
		}
		// Each launch has a secret of its own, which the router keeps no
		// copy of.
		if !strings.HasPrefix(in.Secret, "upcs_") || in.Owner != "bob" {
			t.Fatalf("launch answered secret %q, owner %q", in.Secret, in.Owner)
		}
		if got, _ := r.Get(in.ID); got.Secret != "" {
			t.Fatal("the router keeps the instance's secret")
		}
		// Launch returns only once the instance answers: no polling here.
		if err := env.answers(in.Address); err != nil {
			t.Fatalf("launched instance does not answer at once: %v", err)
		}
		if env.NoProcess {
			t.Log("no process answers 503 on simulated nodes: the never-healthy launch is not checked")
			return
		}
		_, err = r.Launch(ctx, "sick", "bob")
		if !errors.Is(err, router.ErrUnhealthy) || !strings.Contains(err.Error(), "503") {
			t.Fatalf("launching a never-healthy service: %v, want ErrUnhealthy naming the 503", err)
		}
		all, err := b.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 1 || all[0].ID != in.ID {
			t.Fatalf("after a failed launch the backend holds %+v, want only %s", all, in.ID)
		}
	})

	t.Run("InstanceReachesAnother", func(t *testing.T) {
		env := newEnv(t)
		env.needProcess(t)
		r := env.Router(t, env.Open())
		a, err := r.Launch(ctx, "test", "carol")
		if err != nil {
			t.Fatal(err)
		}
		bIn, err := r.Launch(ctx, "test", "dave")
		if err != nil {
			t.Fatal(err)
		}
		// From inside a's container, call b's address as the router gave it.
		code, body, err := env.get(a.Address, "/fetch?url="+bIn.Address+"/")
		if err != nil || code != http.StatusOK {
			t.Fatalf("instance %s fetching %s: %d %q %v", a.ID, bIn.Address, code, body, err)
		}
		var who struct{ Hostname string }
		if err := json.Unmarshal([]byte(body), &who); err != nil || who.Hostname == "" {
			t.Fatalf("answer %q is not the other instance's: %v", body, err)
		}
	})

	t.Run("PerUserVolumeOutlivesInstance", func(t *testing.T) {
		env := newEnv(t)
		env.needProcess(t)
		r := env.Router(t, env.Open())
		first, err := r.Launch(ctx, "test", "erin")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := quick.Post(first.Address+"/write", "text/plain", strings.NewReader("erin's note"))
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("write: %v %v", resp, err)
		}
		resp.Body.Close()
		if err := r.Pause(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		if err := r.Resume(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		if err := r.Delete(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		second, err := r.Launch(ctx, "test", "erin")
		if err != nil {
			t.Fatal(err)
		}
		if code, body, err := env.get(second.Address, "/read"); err != nil || code != 200 || body != "erin's note" {
			t.Fatalf("read after relaunch: %d %q %v", code, body, err)
		}
		other, err := r.Launch(ctx, "test", "frank")
		if err != nil {
			t.Fatal(err)
		}
		if code, body, _ := env.get(other.Address, "/read"); code == 200 {
			t.Fatalf("another user reads erin's data: %q", body)
		}
	})

	t.Run("StorageOutlivesInstancesUntilErased", func(t *testing.T) {
		env := newEnv(t)
		env.needProcess(t)
		b := env.Open()
		if _, ok := b.(router.Storage); !ok {
			testskip.Skip(t, "backend has no Storage: stored data cannot be found or erased through it")
		}
		r := env.Router(t, b)
		first, err := r.Launch(ctx, "test", "gwen")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := env.client().Post(first.Address+"/write", "text/plain", strings.NewReader("gwen's note"))
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("write: %v %v", resp, err)
		}
		resp.Body.Close()
		vs, err := r.StoredVolumes(ctx, "gwen")
		if err != nil || len(vs) != 1 || vs[0].Volume != "data" || vs[0].Name == "" {
			t.Fatalf("gwen's stored volumes: %+v %v, want her one data volume", vs, err)
		}
		if env.Leftovers != nil {
			left := env.Leftovers(t, "gwen")
			if len(left) == 0 {
				t.Fatal("the engine shows nothing of gwen's data before the erase: the check would prove nothing")
			}
			t.Logf("before the erase: %q", left)
		}
		// Refused while her instance runs, and while it is paused.
		if _, err := r.Erase(ctx, "gwen"); !errors.Is(err, router.ErrConflict) || !strings.Contains(err.Error(), string(first.ID)) {
			t.Fatalf("erase while her instance runs: %v, want ErrConflict naming %s", err, first.ID)
		}
		if err := r.Pause(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Erase(ctx, "gwen"); !errors.Is(err, router.ErrConflict) {
			t.Fatalf("erase while her instance is paused: %v, want ErrConflict", err)
		}
		if err := r.Delete(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		// The backend refuses too, for an instance the router does not
		// know of (another router's, a launch cut short by a crash).
		spec := env.spec("57a7c0000001", "gwen")
		if _, ok := b.(router.Machines); ok {
			spec.Machine = first.Machine // where her volume is
		}
		stray, err := b.Launch(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Erase(ctx, "gwen"); !errors.Is(err, router.ErrConflict) {
			t.Fatalf("erase while an instance unknown to the router mounts her volume: %v, want ErrConflict", err)
		}
		if err := b.Destroy(ctx, stray.ID); err != nil {
			t.Fatal(err)
		}
		if vs, err := r.StoredVolumes(ctx, "gwen"); err != nil || len(vs) != 1 {
			t.Fatalf("after the refused erases gwen's volumes are %+v %v", vs, err)
		}

		// A router restarted over a new backend finds her data and erases it.
		r2 := env.Router(t, env.Open())
		if err := r2.Rebuild(ctx); err != nil {
			t.Fatal(err)
		}
		removed, err := r2.Erase(ctx, "gwen")
		if err != nil || len(removed) != 1 || removed[0].Name != vs[0].Name {
			t.Fatalf("erase: removed %+v, %v; want %s", removed, err, vs[0].Name)
		}
		if vs, err := r2.StoredVolumes(ctx, "gwen"); err != nil || len(vs) != 0 {
			t.Fatalf("after the erase gwen's volumes are %+v %v", vs, err)
		}
		if env.Leftovers != nil {
			if left := env.Leftovers(t, "gwen"); len(left) > 0 {
				t.Fatalf("after the erase the engine still holds %q", left)
			}
		}
		if removed, err := r2.Erase(ctx, "gwen"); err != nil || len(removed) != 0 {
			t.Fatalf("a second erase: %+v %v, want nothing to do", removed, err)
		}
		// Her next instance starts on a new, empty volume.
		again, err := r2.Launch(ctx, "test", "gwen")
		if err != nil {
			t.Fatal(err)
		}
		if code, body, err := env.get(again.Address, "/read"); err != nil || code != http.StatusNotFound {
			t.Fatalf("read after the erase: %d %q %v, want 404 (nothing)", code, body, err)
		}
	})

	t.Run("RestartLosesNoInstance", func(t *testing.T) {
		env := newEnv(t)
		r1 := env.Router(t, env.Open())
		var launched []router.Instance
		for _, u := range []string{"gina", "hank", "ivan"} {
			in, err := r1.Launch(ctx, "test", u)
			if err != nil {
				t.Fatal(err)
			}
			launched = append(launched, in)
		}
		if err := r1.Pause(ctx, launched[1].ID); err != nil {
			t.Fatal(err)
		}
		// A new router over a new backend: it knows nothing until it rebuilds.
		r2 := env.Router(t, env.Open())
		if err := r2.Rebuild(ctx); err != nil {
			t.Fatalf("rebuild: %v", err)
		}
		got, _ := r2.List("")
		if len(got) != len(launched) {
			t.Fatalf("after restart the router knows %d instances, want %d: %+v", len(got), len(launched), got)
		}
		for _, want := range launched {
			in, err := r2.Get(want.ID)
			if err != nil {
				t.Fatalf("after restart: %v", err)
			}
			if in.Address != want.Address || in.User != want.User || in.Service != want.Service || in.Digest != want.Digest || in.Owner != want.Owner || in.Owner == "" {
				t.Errorf("after restart %+v, want %+v", in, want)
			}
			if _, err := r2.ByAddress(want.Address); err != nil {
				t.Errorf("after restart, address lookup: %v", err)
			}
		}
		if in, _ := r2.Get(launched[1].ID); in.State != router.StatePaused {
			t.Errorf("paused instance rebuilt as %q", in.State)
		}
		if err := r2.Resume(ctx, launched[1].ID); err != nil {
			t.Fatal(err)
		}
		Eventually(t, "resumed after restart", func() error { return env.answers(launched[1].Address) })
		if err := r2.Delete(ctx, launched[0].ID); err != nil {
			t.Fatalf("delete after restart: %v", err)
		}
	})

	t.Run("Clear", func(t *testing.T) {
		env := newEnv(t)
		b := env.Open()
		if _, ok := b.(router.Clearer); !ok {
			testskip.Skip(t, "backend has no Clear; the router destroys instances one by one")
		}
		r := env.Router(t, b)
		for _, u := range []string{"jo", "kim"} {
			if _, err := r.Launch(ctx, "test", u); err != nil {
				t.Fatal(err)
			}
		}
		n, err := r.Clear(ctx)
		if err != nil || n != 2 {
			t.Fatalf("clear: removed %d, %v; want 2", n, err)
		}
		if all, err := b.List(ctx); err != nil || len(all) != 0 {
			t.Fatalf("after clear: %+v %v", all, err)
		}
	})
}
