package agent

import (
	"net/http"
	"testing"

	"github.com/e-mission/upc/internal/obs/obstest"
)

// TestMetricsCountRefusals: launches the agent refuses (outside its
// catalog) count as refused launches, and requests by route and code
// include them and the refused scrapes; only the token scrapes (the real
// engine's successes are router/docker's TestMetricsDocker, a monitor's
// certificate cmd/upc-agent's TestAgentServesMutualTLS).
func TestMetricsCountRefusals(t *testing.T) {
	srv, fd, _ := newTestAgent(t, "upc", HandlerOptions{Token: testToken, Images: []Image{{Ref: catalogRef, Digest: catalogID}}})
	for range 2 {
		if code, msg := call(t, "POST", srv.URL+"/v1/containers", "Bearer "+testToken, attack); code != http.StatusForbidden {
			t.Fatalf("a launch outside the catalog: %d %q", code, msg)
		}
	}
	if code, _ := call(t, "POST", srv.URL+"/v1/containers", "", catalogLaunch); code != http.StatusUnauthorized {
		t.Fatalf("a launch without the token: %d", code)
	}
	if code, _ := obstest.Get(t, srv.Client(), srv.URL+"/metrics", ""); code != http.StatusUnauthorized {
		t.Fatalf("a scrape without the token: %d", code)
	}
	if code, _ := obstest.Get(t, srv.Client(), srv.URL+"/metrics", "upca_wrong"); code != http.StatusForbidden {
		t.Fatalf("a scrape with another token: %d", code)
	}
	f := obstest.Scrape(t, srv.Client(), srv.URL+"/metrics", testToken)
	for _, w := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"upc_agent_container_operation_duration_seconds", []string{"op", "launch", "outcome", "refused"}, 2},
		{"upc_agent_container_operation_duration_seconds", []string{"outcome", "ok"}, 0},
		{"upc_http_requests_total", []string{"method", "post", "route", "/v1/containers", "code", "403"}, 2},
		{"upc_http_requests_total", []string{"method", "post", "route", "/v1/containers", "code", "401"}, 1},
		{"upc_http_requests_total", []string{"route", "/metrics", "code", "401"}, 1},
		{"upc_http_requests_total", []string{"route", "/metrics", "code", "403"}, 1},
	} {
		if got := f.Value(w.name, w.labels...); got != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.want)
		}
	}
	if ch := fd.Changes(); len(ch) > 0 {
		t.Errorf("refused launches reached Docker: %q", ch)
	}
}
