package router_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/routerclient"
)

// limitsEnv is a router over the fake backend with small limits, its
// admin and a user alice.
func limitsEnv(t *testing.T, o router.Options) (admin, alice *routerclient.Client, srvURL, aliceTok string) {
	t.Helper()
	users, err := router.OpenUsers("", strings.Repeat("z", 40))
	if err != nil {
		t.Fatal(err)
	}
	o.Backend, o.Catalog, o.Users, o.PlainHTTP = newFake(t), testCatalog, users, true
	r, err := router.New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(router.Handler(r, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	u, err := users.Add("alice", api.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	admin, _ = routerclient.New(srv.URL, routerclient.WithToken(strings.Repeat("z", 40)))
	alice, _ = routerclient.New(srv.URL, routerclient.WithToken(u.Token))
	return admin, alice, srv.URL, u.Token
}

func statusOf(err error) int {
	var se *httpx.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// A user's PM runs once: a second launch is 409 at once, naming the
// running instance, and concurrent launches let exactly one through.
func TestSecondPMConflicts(t *testing.T) {
	ctx := context.Background()
	admin, alice, _, _ := limitsEnv(t, router.Options{})
	pm, err := alice.Launch(ctx, "pm", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Launch(ctx, "pm", "alice"); statusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), pm.ID) {
		t.Fatalf("second PM: %v, want 409 naming %s", err, pm.ID)
	}
	if err := alice.Delete(ctx, pm.ID); err != nil {
		t.Fatal(err)
	}
	// Deleted: launching again is fine; at the same time, one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := admin.Launch(ctx, "pm", "bob")
			mu.Lock()
			codes[statusOf(err)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[0] != 1 || codes[http.StatusConflict] != 4 {
		t.Errorf("5 concurrent PM launches for bob: %v, want one launched and 4 conflicts", codes)
	}
}

// A user's live instances are capped (429 without Retry-After: waiting
// does not help); deleting one makes room.
func TestInstancesPerUserCapped(t *testing.T) {
	ctx := context.Background()
	admin, _, _, _ := limitsEnv(t, router.Options{MaxInstancesPerUser: 3})
	var ids []string
	for i := range 3 {
		in, err := admin.Launch(ctx, "count", "carol")
		if err != nil {
			t.Fatalf("launch %d: %v", i, err)
		}
		ids = append(ids, in.ID)
	}
	_, err := admin.Launch(ctx, "count", "carol")
	if statusOf(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), "max_instances_per_user") {
		t.Fatalf("fourth instance: %v, want 429 naming the limit", err)
	}
	if _, err := admin.Launch(ctx, "count", "dave"); err != nil {
		t.Errorf("another user is not held by carol's cap: %v", err)
	}
	if err := admin.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Launch(ctx, "count", "carol"); err != nil {
		t.Errorf("after a delete: %v", err)
	}
}

// A user's launches are rate-limited: past the burst, 429 with a
// Retry-After; the admin is not limited.
func TestLaunchRateLimited(t *testing.T) {
	ctx := context.Background()
	admin, alice, url, tok := limitsEnv(t, router.Options{LaunchRate: 0.01, LaunchBurst: 2})
	pm, err := alice.Launch(ctx, "pm", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Delete(ctx, pm.ID); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/instances", strings.NewReader(`{"service": "pm", "user": "alice"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("second launch within the burst: %s", resp.Status)
	}
	req, _ = http.NewRequest(http.MethodPost, url+"/v1/instances", strings.NewReader(`{"service": "pm", "user": "alice"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != http.StatusTooManyRequests || ra < 1 {
		t.Fatalf("third launch past the burst: %s, Retry-After %q; want 429 with a Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	for i := range 5 {
		if _, err := admin.Launch(ctx, "count", "erin"+strconv.Itoa(i)); err != nil {
			t.Errorf("admin launch %d: %v", i, err)
		}
	}
}
