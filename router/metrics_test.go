package router_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/obs/obstest"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/routerclient"
)

// TestMetricsScrape: the router's /metrics answers admins and monitors only
// (none or an unknown token: 401; a user or a researcher: 403); after some
// launches, refusals, a pause and requests of every kind, a scrape shows the
// launch histogram, the refusals by reason, the view by service and state,
// and requests by route and code, and no label names a user, an instance
// or a token.
func TestMetricsScrape(t *testing.T) {
	e := newAccessEnv(t, false)
	ctx := context.Background()
	mon, err := e.users.Add("prom", api.RoleMonitor)
	if err != nil {
		t.Fatal(err)
	}
	url := e.srv.URL + "/metrics"
	c := e.srv.Client()

	for _, tc := range []struct {
		who, token string
		want       int
	}{
		{"no credential", "", http.StatusUnauthorized},
		{"an unknown token", "upcu_nobody", http.StatusUnauthorized},
		{"a user", e.aliceTok, http.StatusForbidden},
		{"a researcher", e.rexTok, http.StatusForbidden},
	} {
		if code, body := obstest.Get(t, c, url, tc.token); code != tc.want {
			t.Errorf("metrics with %s: %d %s, want %d", tc.who, code, body, tc.want)
		}
	}

	a, err := e.alice.Launch(ctx, "pm", "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.bob.Launch(ctx, "count", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.alice.Pause(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.alice.Launch(ctx, "pm", ""); code(err) != http.StatusConflict {
		t.Fatalf("alice's second PM: %v, want 409", err)
	}
	if _, err := e.rex.Launch(ctx, "pm", "alice"); code(err) != http.StatusForbidden {
		t.Fatalf("a researcher's PM: %v, want 403", err)
	}
	if _, err := e.bob.Launch(ctx, "nosuch", ""); code(err) != http.StatusBadRequest {
		t.Fatalf("an unknown service: %v, want 400", err)
	}
	if _, err := e.bob.Get(ctx, a.ID); code(err) != http.StatusForbidden {
		t.Fatalf("bob gets alice's: %v, want 403", err)
	}

	f := obstest.Scrape(t, c, url, mon.Token)
	for _, w := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"upc_router_launch_duration_seconds", []string{"service", "pm", "outcome", "ok"}, 1},
		{"upc_router_launch_duration_seconds", []string{"service", "count", "outcome", "ok"}, 1},
		{"upc_router_launch_duration_seconds", []string{"outcome", "failed"}, 0},
		{"upc_router_launches_refused_total", []string{"reason", "conflict"}, 1},
		{"upc_router_launches_refused_total", []string{"reason", "forbidden"}, 1},
		{"upc_router_launches_refused_total", []string{"reason", "unknown_service"}, 1},
		{"upc_router_launches_refused_total", []string{"reason", "limit"}, 0},
		{"upc_router_instances", []string{"service", "pm", "state", "paused"}, 1},
		{"upc_router_instances", []string{"service", "pm", "state", "running"}, 0},
		{"upc_router_instances", []string{"service", "count", "state", "running"}, 1},
		{"upc_router_instances", []string{"service", "metrics"}, 0},
		{"upc_router_view_rebuilt", nil, 0},
		{"upc_http_requests_total", []string{"method", "post", "route", "/v1/instances", "code", "201"}, 2},
		{"upc_http_requests_total", []string{"method", "post", "route", "/v1/instances", "code", "409"}, 1},
		{"upc_http_requests_total", []string{"method", "post", "route", "/v1/instances", "code", "403"}, 1},
		{"upc_http_requests_total", []string{"method", "post", "route", "/v1/instances", "code", "400"}, 1},
		{"upc_http_requests_total", []string{"method", "get", "route", "/v1/instances/{id}", "code", "403"}, 1},
		{"upc_http_requests_total", []string{"method", "post", "route", "/v1/instances/{id}/pause", "code", "200"}, 1},
		{"upc_http_requests_total", []string{"route", "/metrics", "code", "401"}, 2},
		{"upc_http_requests_total", []string{"route", "/metrics", "code", "403"}, 2},
	} {
		if got := f.Value(w.name, w.labels...); got != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.want)
		}
	}
	if f.Has("upc_router_warm_pool_ready") {
		t.Error("a backend without a warm pool reports one")
	}
	secrets := []string{"alice", "bob", "rex", "prom", a.ID, b.ID, a.Secret, e.aliceTok, mon.Token}
	for name, mf := range f {
		for _, m := range mf.Metric {
			for _, lp := range m.Label {
				for _, s := range secrets {
					if strings.Contains(lp.GetValue(), s) {
						t.Errorf("%s has label %s=%q, naming %q", name, lp.GetName(), lp.GetValue(), s)
					}
				}
			}
		}
	}
	// An admin scrapes too.
	if code, _ := obstest.Get(t, c, url, e.adminTok); code != http.StatusOK {
		t.Fatalf("admin scrape: %d", code)
	}
}

// TestMonitorReadsMetricsOnly: a monitor's token opens /metrics and whoami,
// and every other endpoint answers it 403, with nothing launched.
func TestMonitorReadsMetricsOnly(t *testing.T) {
	e := newAccessEnv(t, false)
	ctx := context.Background()
	mon, err := e.users.Add("prom", api.RoleMonitor)
	if err != nil {
		t.Fatal(err)
	}
	in, err := e.alice.Launch(ctx, "pm", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range endpoints(in.ID) {
		want := http.StatusForbidden
		if ep[1] == "/metrics" || ep[1] == "/v1/whoami" {
			want = http.StatusOK
		}
		if c, body := e.do(t, ep[0], ep[1], mon.Token, ep[2]); c != want {
			t.Errorf("monitor %s %s: %d %s, want %d", ep[0], ep[1], c, body, want)
		}
	}
	if l, _ := e.admin.List(ctx, ""); len(l) != 1 {
		t.Fatalf("after the monitor's calls the router has %+v", l)
	}
	if _, err := e.users.Add("prom2", "scraper"); err == nil {
		t.Fatal("an unknown role was accepted")
	}
}

// TestReadyz: /readyz needs no credential, says 503 until the view is
// rebuilt from the backend and 200 after, and names nothing but that.
func TestReadyz(t *testing.T) {
	e := newAccessEnv(t, false)
	ctx := context.Background()
	if _, err := e.alice.Launch(ctx, "pm", ""); err != nil {
		t.Fatal(err)
	}
	c, body := e.do(t, "GET", "/readyz", "", "")
	if c != http.StatusServiceUnavailable || !strings.Contains(body, "not rebuilt") {
		t.Fatalf("readyz before a rebuild: %d %s", c, body)
	}
	if err := e.core.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	c, body = e.do(t, "GET", "/readyz", "", "")
	if c != http.StatusOK || body != `{"status":"ready"}`+"\n" {
		t.Fatalf("readyz after a rebuild: %d %q", c, body)
	}
	if err := e.core.Ready(); err != nil {
		t.Fatal(err)
	}
	if c, _ := e.do(t, "POST", "/readyz", "", ""); c != http.StatusUnauthorized {
		t.Fatalf("POST /readyz: %d, want 401 (only GET is open)", c)
	}
}

// failingBackend is fakeBackend whose launches fail with err.
type failingBackend struct {
	*fakeBackend
	err error
}

func (f *failingBackend) Launch(context.Context, router.Spec) (router.Instance, error) {
	return router.Instance{}, f.err
}

// TestMetricsFailedLaunches: a launch the backend cannot start is a failed
// launch in the histogram; one the backend refuses (a swapped image: 403)
// is also a refusal, by reason.
func TestMetricsFailedLaunches(t *testing.T) {
	fb := &failingBackend{fakeBackend: newFake(t)}
	admin := strings.Repeat("a", 40)
	users, err := router.OpenUsers("", admin)
	if err != nil {
		t.Fatal(err)
	}
	core, err := router.New(router.Options{Backend: fb, Catalog: testCatalog, Users: users, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(router.Handler(core, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	rc, err := routerclient.New(srv.URL, routerclient.WithToken(admin))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fb.err = fmt.Errorf("%w: image upc/count now resolves to another image", router.ErrForbidden)
	if _, err := rc.Launch(ctx, "count", "alice"); code(err) != http.StatusForbidden {
		t.Fatalf("a launch the backend refuses: %v, want 403", err)
	}
	fb.err = errors.New("the engine fell over")
	if _, err := rc.Launch(ctx, "count", "alice"); code(err) != http.StatusInternalServerError {
		t.Fatalf("a launch the backend fails: %v, want 500", err)
	}
	f := obstest.Scrape(t, srv.Client(), srv.URL+"/metrics", admin)
	for _, w := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"upc_router_launch_duration_seconds", []string{"service", "count", "outcome", "failed"}, 2},
		{"upc_router_launch_duration_seconds", []string{"outcome", "ok"}, 0},
		{"upc_router_launches_refused_total", []string{"reason", "forbidden"}, 1},
		{"upc_router_launches_refused_total", nil, 1},
		{"upc_router_instances", []string{"service", "count"}, 0},
	} {
		if got := f.Value(w.name, w.labels...); got != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.want)
		}
	}
}
