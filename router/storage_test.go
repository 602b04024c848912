package router_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/routerclient"
)

// TestAccessStorage: a user's stored data (the volumes their PM leaves
// behind) is reached by that user and admins only; anyone else gets 403,
// whether there is any or not. An erase is refused (409, naming the
// instance) while the user's PM runs or is paused, and a PM launch is
// refused while an erase runs. Erasing leaves nothing; a second erase finds
// nothing to do.
func TestAccessStorage(t *testing.T) {
	e := newAccessEnv(t, false)
	ctx := context.Background()
	pm, err := e.alice.Launch(ctx, "pm", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.alice.Launch(ctx, "count", ""); err != nil {
		t.Fatal(err)
	}
	st, err := e.alice.Storage(ctx, "alice")
	if err != nil || st.User != "alice" || len(st.Volumes) != 1 || st.Volumes[0].Volume != "data" {
		t.Fatalf("alice's storage: %+v %v", st, err)
	}
	if st, err := e.admin.Storage(ctx, "alice"); err != nil || len(st.Volumes) != 1 {
		t.Fatalf("admin's view of alice's storage: %+v %v", st, err)
	}
	if st, err := e.bob.Storage(ctx, "bob"); err != nil || len(st.Volumes) != 0 || st.Volumes == nil {
		t.Fatalf("bob's own, empty storage: %+v %v (want an empty list)", st, err)
	}

	// Nobody else reaches it, whether it exists or not.
	for _, c := range []struct {
		name string
		c    *routerclient.Client
		user string
	}{{"bob", e.bob, "alice"}, {"bob", e.bob, "nobody"}, {"rex", e.rex, "alice"}, {"rex", e.rex, "rex"}} {
		if _, err := c.c.Storage(ctx, c.user); code(err) != http.StatusForbidden {
			t.Errorf("%s lists %s's storage: %v, want 403", c.name, c.user, err)
		}
		if _, err := c.c.Erase(ctx, c.user); code(err) != http.StatusForbidden || !strings.Contains(err.Error(), "only "+c.user+" (or an admin)") {
			t.Errorf("%s erases %s's storage: %v, want 403", c.name, c.user, err)
		}
	}
	if !strings.Contains(e.logs.String(), "identity=bob") || !strings.Contains(e.logs.String(), "path=/v1/storage/alice") {
		t.Error("storage refusals are not logged with the caller's identity")
	}
	if _, err := e.alice.Storage(ctx, "-alice"); code(err) != http.StatusBadRequest {
		t.Errorf("a malformed user: %v, want 400", err)
	}
	if c, body := e.do(t, "DELETE", "/v1/storage/alice", e.aliceTok, `{"force": true}`); c != http.StatusBadRequest {
		t.Errorf("erase with a body: %d %s, want 400", c, body)
	}

	// Refused while the PM runs, and while it is paused; the count
	// service holds no data and does not stop it.
	for _, state := range []string{"running", "paused"} {
		if state == "paused" {
			if _, err := e.alice.Pause(ctx, pm.ID); err != nil {
				t.Fatal(err)
			}
		}
		_, err := e.alice.Erase(ctx, "alice")
		if code(err) != http.StatusConflict || !strings.Contains(err.Error(), "pm "+pm.ID+" ("+state+")") {
			t.Errorf("erase while alice's PM is %s: %v, want 409 naming it", state, err)
		}
	}
	if st, _ := e.alice.Storage(ctx, "alice"); len(st.Volumes) != 1 {
		t.Fatalf("a refused erase removed %+v", st)
	}
	if err := e.alice.Delete(ctx, pm.ID); err != nil {
		t.Fatal(err)
	}

	// While an erase runs, a PM launch for that user is refused.
	e.fake.mu.Lock()
	e.fake.erasing, e.fake.erasures = make(chan struct{}), make(chan string, 1)
	e.fake.mu.Unlock()
	type result struct {
		st  api.Storage
		err error
	}
	done := make(chan result)
	go func() {
		st, err := e.alice.Erase(ctx, "alice")
		done <- result{st, err}
	}()
	select {
	case <-e.fake.erasures:
	case <-time.After(5 * time.Second):
		t.Fatal("the erase never reached the backend")
	}
	if _, err := e.alice.Launch(ctx, "pm", ""); code(err) != http.StatusConflict || !strings.Contains(err.Error(), "being erased") {
		t.Fatalf("a PM launch during an erase: %v, want 409 saying it is being erased", err)
	}
	if _, err := e.alice.Launch(ctx, "count", ""); err != nil {
		t.Errorf("a count launch during an erase: %v (it holds no data)", err)
	}
	if _, err := e.admin.Erase(ctx, "alice"); code(err) != http.StatusConflict {
		t.Errorf("a second erase at once: %v, want 409", err)
	}
	e.fake.mu.Lock()
	close(e.fake.erasing)
	e.fake.erasing, e.fake.erasures = nil, nil
	e.fake.mu.Unlock()
	res := <-done
	if res.err != nil || len(res.st.Volumes) != 1 || res.st.Volumes[0].Name != "vol-alice-data" {
		t.Fatalf("alice's erase: %+v %v", res.st, res.err)
	}
	if w := e.fake.wiped; len(w) != 1 || w[0].Service != "pm" || w[0].Image != "upc/pm" || w[0].User != "alice" || router.ValidID(string(w[0].ID)) != nil {
		t.Errorf("the backend was given wipe specs %+v, want the PM's image for alice", w)
	}
	if st, err := e.alice.Storage(ctx, "alice"); err != nil || len(st.Volumes) != 0 {
		t.Fatalf("after the erase: %+v %v", st, err)
	}
	if st, err := e.alice.Erase(ctx, "alice"); err != nil || len(st.Volumes) != 0 {
		t.Errorf("a second erase: %+v %v, want nothing removed", st, err)
	}
	// A fresh PM starts on an empty volume again.
	if _, err := e.alice.Launch(ctx, "pm", ""); err != nil {
		t.Fatalf("a launch after the erase: %v", err)
	}

	// The admin erases the data of a user it launched for.
	dora, err := e.admin.Launch(ctx, "pm", "dora")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.admin.Delete(ctx, dora.ID); err != nil {
		t.Fatal(err)
	}
	if st, err := e.admin.Erase(ctx, "dora"); err != nil || len(st.Volumes) != 1 {
		t.Errorf("admin erases dora's: %+v %v", st, err)
	}
}

// plainBackend has no Storage: the storage calls answer 501 saying so.
type plainBackend struct{ router.Backend }

func TestStorageUnsupported(t *testing.T) {
	r, err := router.New(router.Options{Backend: plainBackend{newFake(t)}, Catalog: testCatalog, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, f := range map[string]func() error{
		"storage": func() error { _, err := r.StoredVolumes(ctx, "alice"); return err },
		"erase":   func() error { _, err := r.Erase(ctx, "alice"); return err },
	} {
		if err := f(); !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "cannot find or erase") {
			t.Errorf("%s on a backend without storage: %v", name, err)
		}
	}
}
