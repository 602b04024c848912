package pm_test

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/obs/obstest"
	"github.com/e-mission/upc/services/pm"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// TestMetricsScrape: a PM's /metrics answers its owner (none: 401, a wrong
// secret or a grant: 403). After reads, spends of every outcome by the
// owner and a grant, and refusals, a scrape shows ε charged by payer,
// spends by outcome and requests by route and code; no label names a
// grant, a stream or a service.
func TestMetricsScrape(t *testing.T) {
	p, _ := ownedPM(t)
	ctx := context.Background()
	url := p.srv.URL + "/metrics"
	g, gc := p.grant(t, api.GrantRequest{Service: "count", Read: []string{streamA}, Spend: 0.3})

	for _, c := range []struct {
		who, token string
		want       int
	}{
		{"no credential", "", http.StatusUnauthorized},
		{"a wrong secret", access.NewToken(access.PrefixInstance), http.StatusForbidden},
		{"a grant", g.Token, http.StatusForbidden},
	} {
		if code, body := obstest.Get(t, p.srv.Client(), url, c.token); code != c.want {
			t.Errorf("metrics with %s: %d %s, want %d", c.who, code, body, c.want)
		}
	}

	if _, err := gc.Find(ctx, pmclient.FindRequest{Collection: api.Timeseries}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.client("").Find(ctx, pmclient.FindRequest{Collection: api.Timeseries}); code(err) != 401 {
		t.Fatalf("find without a credential: %v", err)
	}
	q := digest(t, "q-1")
	if r, err := gc.Spend(ctx, api.SpendRequest{PrivacyCost: 0.2, QueryID: "q-1", Question: q}); err != nil || !r.Success {
		t.Fatalf("grant spend: %+v %v", r, err)
	}
	if r, err := gc.Spend(ctx, api.SpendRequest{PrivacyCost: 0.2, QueryID: "q-1", Question: q}); err != nil || !r.Replayed {
		t.Fatalf("grant replay: %+v %v", r, err)
	}
	if _, err := gc.Spend(ctx, api.SpendRequest{PrivacyCost: 0.2, QueryID: "q-2", Question: digest(t, "q-2")}); code(err) != 403 {
		t.Fatalf("grant over its cap: %v", err)
	}
	if ok, err := p.c.SpendBudget(ctx, 0.5); !ok || err != nil {
		t.Fatalf("owner spend: %v %v", ok, err)
	}
	if ok, err := p.c.SpendBudget(ctx, 0.5); ok || err != nil {
		t.Fatalf("owner spend past the balance: %v %v, want refused", ok, err)
	}

	f := obstest.Scrape(t, p.srv.Client(), url, p.owner)
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if got := f.Value("upc_pm_budget_spent_epsilon_total", "payer", "grant"); !near(got, 0.2) {
		t.Errorf("ε spent by grants: %v, want 0.2", got)
	}
	if got := f.Value("upc_pm_budget_spent_epsilon_total", "payer", "owner"); !near(got, 0.5) {
		t.Errorf("ε spent by the owner: %v, want 0.5", got)
	}
	for _, w := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"upc_pm_budget_spends_total", []string{"outcome", "charged"}, 2},
		{"upc_pm_budget_spends_total", []string{"outcome", "replayed"}, 1},
		{"upc_pm_budget_spends_total", []string{"outcome", "refused_grant_cap"}, 1},
		{"upc_pm_budget_spends_total", []string{"outcome", "refused_budget"}, 1},
		{"upc_http_requests_total", []string{"method", "post", "route", api.PathFind, "code", "200"}, 1},
		{"upc_http_requests_total", []string{"method", "post", "route", api.PathFind, "code", "401"}, 1},
		{"upc_http_requests_total", []string{"method", "post", "route", api.PathBudget, "code", "200"}, 4},
		{"upc_http_requests_total", []string{"method", "post", "route", api.PathBudget, "code", "403"}, 1},
		{"upc_http_requests_total", []string{"route", "/metrics", "code", "401"}, 1},
		{"upc_http_requests_total", []string{"route", "/metrics", "code", "403"}, 2},
	} {
		if got := f.Value(w.name, w.labels...); got != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.want)
		}
	}
	for name, mf := range f {
		for _, m := range mf.Metric {
			for _, lp := range m.Label {
				for _, s := range []string{g.ID, streamA, "count", "q-1", p.owner, g.Token} {
					if strings.Contains(lp.GetValue(), s) {
						t.Errorf("%s has label %s=%q, naming %q", name, lp.GetName(), lp.GetValue(), s)
					}
				}
			}
		}
	}
}

// TestMetricsMonitorAndReadyz: over TLS, a client certificate of the PM's
// CA naming monitor.upc (or router.upc) reads /metrics and nothing else;
// /readyz answers anyone, ready while the store is open.
func TestMetricsMonitorAndReadyz(t *testing.T) {
	ca := certstest.New(t)
	owner := access.NewToken(access.PrefixInstance)
	st, err := store.Open(t.TempDir(), store.Options{KDF: testKDF, InitialBudget: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv := ca.InstanceServer(t, pm.New(st, slog.New(slog.DiscardHandler), pm.Options{Access: access.Instance{SHA256: access.Hash(owner)}}).Handler())

	monitor := ca.ClientAs(t, certs.MonitorName, 10*time.Second)
	f := obstest.Scrape(t, monitor, srv.URL+"/metrics", "")
	if !f.Has("upc_pm_budget_spent_epsilon_total") {
		t.Fatal("a monitor's scrape lacks the budget")
	}
	obstest.Scrape(t, ca.ClientAs(t, certs.RouterName, 10*time.Second), srv.URL+"/metrics", "")
	mc := pmclient.New(srv.URL, monitor)
	if err := mc.Unseal(context.Background(), secret); code(err) != 401 {
		t.Fatalf("a monitor claims the PM: %v, want 401", err)
	}
	if _, err := mc.Status(context.Background()); code(err) != 401 {
		t.Fatalf("a monitor reads the status: %v, want 401", err)
	}
	if code, _ := obstest.Get(t, ca.ClientAs(t, "mallory.upc", 10*time.Second), srv.URL+"/metrics", ""); code != 401 {
		t.Fatalf("another client certificate: %d, want 401", code)
	}

	anon := ca.Client(10 * time.Second)
	if code, body := obstest.Get(t, anon, srv.URL+"/readyz", ""); code != 200 || body != `{"status":"ready"}`+"\n" {
		t.Fatalf("readyz: %d %q", code, body)
	}
	st.Close()
	if code, body := obstest.Get(t, anon, srv.URL+"/readyz", ""); code != 503 || !strings.Contains(body, "closed") {
		t.Fatalf("readyz with the store closed: %d %s", code, body)
	}
}
