package obs_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/obs"
	"github.com/e-mission/upc/internal/obs/obstest"
)

// TestInstrumentCountsByRoutePattern: requests are counted by method, the
// pattern they matched (never their own path) and status code; paths no
// pattern matches and unknown methods share one label value each, so no
// caller can grow the series.
func TestInstrumentCountsByRoutePattern(t *testing.T) {
	m := obs.New()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "missing" {
			http.Error(w, "no", http.StatusNotFound)
		}
	})
	mux.HandleFunc("POST /v1/things", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	mux.Handle("GET "+obs.MetricsPath, m.Handler())
	srv := httptest.NewServer(m.Instrument(mux, mux))
	defer srv.Close()

	send := func(method, path string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	send("GET", "/v1/things/a1")
	send("GET", "/v1/things/b2")
	send("GET", "/v1/things/missing")
	send("POST", "/v1/things")
	send("GET", "/nowhere/secret-token-in-path")
	send("PUT", "/v1/things")
	send("BREW", "/v1/things/c3")

	f := obstest.Scrape(t, srv.Client(), srv.URL+obs.MetricsPath, "")
	const n = "upc_http_requests_total"
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"method", "get", "route", "/v1/things/{id}", "code", "200"}, 2},
		{[]string{"method", "get", "route", "/v1/things/{id}", "code", "404"}, 1},
		{[]string{"method", "post", "route", "/v1/things", "code", "201"}, 1},
		{[]string{"route", obs.Unmatched, "code", "404"}, 1},
		{[]string{"method", "put", "route", obs.Unmatched, "code", "405"}, 1},
		{[]string{"method", "unknown"}, 1},
	} {
		if got := f.Value(n, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", n, c.labels, got, c.want)
		}
	}
	for _, r := range f.LabelValues(n, "route") {
		if strings.Contains(r, "a1") || strings.Contains(r, "secret") {
			t.Errorf("a request's own path became a label: %q", r)
		}
	}
	if got := f.Value("upc_http_request_duration_seconds", "route", "/v1/things/{id}"); got != 3 {
		t.Errorf("durations observed for /v1/things/{id}: %v, want 3", got)
	}
	if !f.Has("go_goroutines") || !f.Has("process_start_time_seconds") {
		t.Error("no runtime or process metrics")
	}
}

// TestRegistriesAreTheirOwn: two servers in one process count apart (no
// global registry).
func TestRegistriesAreTheirOwn(t *testing.T) {
	a, b := obs.New(), obs.New()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /x", func(http.ResponseWriter, *http.Request) {})
	sa := httptest.NewServer(a.Instrument(mux, mux))
	defer sa.Close()
	resp, err := sa.Client().Get(sa.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mb := http.NewServeMux()
	mb.Handle("GET /metrics", b.Handler())
	sb := httptest.NewServer(mb)
	defer sb.Close()
	if got := obstest.Scrape(t, sb.Client(), sb.URL+"/metrics", "").Value("upc_http_requests_total"); got != 0 {
		t.Fatalf("server b counted a's request: %v", got)
	}
}

func TestReady(t *testing.T) {
	var notYet error = errors.New("the view is not rebuilt yet")
	h := obs.Ready(func(context.Context) error { return notYet })
	srv := httptest.NewServer(h)
	defer srv.Close()
	if code, body := obstest.Get(t, srv.Client(), srv.URL, ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "not rebuilt") {
		t.Fatalf("not ready: %d %s", code, body)
	}
	notYet = nil
	if code, body := obstest.Get(t, srv.Client(), srv.URL, ""); code != http.StatusOK || !strings.Contains(body, `"ready"`) {
		t.Fatalf("ready: %d %s", code, body)
	}
}

func TestRoute(t *testing.T) {
	for in, want := range map[string]string{
		"":                         obs.Unmatched,
		"GET /healthz":             "/healthz",
		"POST /v1/instances/{id}/": "/v1/instances/{id}/",
		"/legacy":                  "/legacy",
	} {
		if got := obs.Route(in); got != want {
			t.Errorf("Route(%q) = %q, want %q", in, got, want)
		}
	}
}
