package docker_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/obs/obstest"
	"github.com/e-mission/upc/router/api"
)

// TestMetricsDocker: a router over two agents on the real engine launches,
// pauses, resumes and deletes instances; a scrape of the router (by a
// monitor) and of each agent (by the agent token) shows each step once:
// launches by service and outcome, the view by state, the agents'
// container operations and requests by route and code. The agents refuse a
// scrape without the token (401) or with another (403), and say they are
// ready to anyone. Needs Docker.
func TestMetricsDocker(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 1, 1)
	mon, err := s.rc.AddUser(ctx, "prom", api.RoleMonitor)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, user := range []string{"ann", "ben"} {
		in, err := s.rc.Launch(ctx, "test", user)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, in.ID)
	}
	if _, err := s.rc.Pause(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	r := obstest.Scrape(t, s.srv.Client(), s.srv.URL+"/metrics", mon.Token)
	for _, w := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"upc_router_launch_duration_seconds", []string{"service", "test", "outcome", "ok"}, 2},
		{"upc_router_instances", []string{"service", "test", "state", "paused"}, 1},
		{"upc_router_instances", []string{"service", "test", "state", "running"}, 1},
	} {
		if got := r.Value(w.name, w.labels...); got != w.want {
			t.Errorf("router: %s%v = %v, want %v", w.name, w.labels, got, w.want)
		}
	}
	if r.Sum("upc_router_launch_duration_seconds", "outcome", "ok") <= 0 {
		t.Error("router: launches took no time")
	}

	if _, err := s.rc.Resume(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := s.rc.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	var ops, creates float64
	want := map[string]float64{"launch": 2, "pause": 1, "unpause": 1, "remove": 2}
	got := map[string]float64{}
	for _, a := range []string{s.agentA.URL, s.agentB.URL} {
		c := http.DefaultClient
		if code, body := obstest.Get(t, c, a+"/metrics", ""); code != http.StatusUnauthorized {
			t.Errorf("agent scrape without a token: %d %s", code, body)
		}
		if code, body := obstest.Get(t, c, a+"/metrics", access.NewToken(access.PrefixAgent)); code != http.StatusForbidden {
			t.Errorf("agent scrape with another token: %d %s", code, body)
		}
		if code, body := obstest.Get(t, c, a+"/readyz", ""); code != http.StatusOK || body != `{"status":"ready"}`+"\n" {
			t.Errorf("agent readyz: %d %q", code, body)
		}
		f := obstest.Scrape(t, c, a+"/metrics", agentToken)
		for op := range want {
			got[op] += f.Value("upc_agent_container_operation_duration_seconds", "op", op, "outcome", "ok")
		}
		ops += f.Value("upc_agent_container_operation_duration_seconds")
		creates += f.Value("upc_http_requests_total", "method", "post", "route", "/v1/containers", "code", "201")
		if n := f.Value("upc_http_requests_total", "route", "/metrics", "code", "401") + f.Value("upc_http_requests_total", "route", "/metrics", "code", "403"); n != 2 {
			t.Errorf("agent: %v refused scrapes counted, want 2", n)
		}
	}
	for op, n := range want {
		if got[op] != n {
			t.Errorf("agents: %v %s operations ok, want %v", got[op], op, n)
		}
	}
	if ops != 6 || creates != 2 {
		t.Errorf("agents: %v operations in all, %v containers created; want 6 and 2", ops, creates)
	}
	r = obstest.Scrape(t, s.srv.Client(), s.srv.URL+"/metrics", mon.Token)
	if n := r.Value("upc_router_instances"); n != 0 {
		t.Errorf("router: %v instances after deleting all", n)
	}
}
