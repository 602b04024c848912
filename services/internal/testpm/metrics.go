package testpm

import (
	"net/http"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/obs/obstest"
)

// Scrape checks who may read the /metrics of a service at base whose
// callers bear ServiceSecret: no credential 401, another secret or a grant
// 403 (three refusals, counted as such), and anyone its /readyz. It returns
// what the service's own secret scrapes.
func Scrape(t testing.TB, base, grant string) obstest.Families {
	t.Helper()
	c := http.DefaultClient
	for _, r := range []struct {
		who, token string
		want       int
	}{
		{"no credential", "", http.StatusUnauthorized},
		{"another secret", access.NewToken(access.PrefixInstance), http.StatusForbidden},
		{"a grant", grant, http.StatusForbidden},
	} {
		if code, body := obstest.Get(t, c, base+"/metrics", r.token); code != r.want {
			t.Errorf("metrics with %s: %d %s, want %d", r.who, code, body, r.want)
		}
	}
	if code, body := obstest.Get(t, c, base+"/readyz", ""); code != http.StatusOK || body != `{"status":"ready"}`+"\n" {
		t.Errorf("readyz: %d %q", code, body)
	}
	f := obstest.Scrape(t, c, base+"/metrics", ServiceSecret)
	if got := f.Value("upc_http_requests_total", "route", "/metrics", "code", "401"); got != 1 {
		t.Errorf("refused scrapes without a credential counted %v times, want 1", got)
	}
	if got := f.Value("upc_http_requests_total", "route", "/metrics", "code", "403"); got != 2 {
		t.Errorf("refused scrapes with a wrong credential counted %v times, want 2", got)
	}
	return f
}
