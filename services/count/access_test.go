package count

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/services/internal/testpm"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// Access control of the count service (docs/security.md): callers bear the
// service's secret; a bound service reaches only its PM; a shared one reaches
// a PM only with that PM's grant. Every refusal leaves the budgets as they
// were.

const accessQuery = `"query": {"offset": 100, "alpha": 0.05, "start_ts": 1440658800, "end_ts": 1440745200, "sel_region": null}`

func serveWith(t *testing.T, in access.Instance) string {
	t.Helper()
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), PMClients(nil))
	s.Access = in
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func remaining(t *testing.T, c *pmclient.Client) float64 {
	t.Helper()
	l, err := c.Ledger(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l.Remaining
}

func TestAccessServiceSecret(t *testing.T) {
	a := startPM(t, 1)
	for name, in := range map[string]access.Instance{"shared": testpm.Shared(), "bound": testpm.Bound(a.BaseURL(), testpm.GrantOf(t, a)), "zero": {}} {
		url := serveWith(t, in)
		body := `{` + pmFields(t, a) + `, "uuid": "u", ` + accessQuery + `}`
		for _, path := range []string{"/count_query", "/v1/count_query"} {
			if resp, b := testpm.Post(t, url+path, "", body); resp.StatusCode != 401 {
				t.Errorf("%s %s without a credential: %d %s", name, path, resp.StatusCode, b)
			}
			if resp, b := testpm.Post(t, url+path, access.NewToken(access.PrefixInstance), body); resp.StatusCode != 403 {
				t.Errorf("%s %s with a wrong credential: %d %s", name, path, resp.StatusCode, b)
			}
			// A grant is no service secret either.
			if resp, b := testpm.Post(t, url+path, testpm.GrantOf(t, a), body); resp.StatusCode != 403 {
				t.Errorf("%s %s with the PM's grant as credential: %d %s", name, path, resp.StatusCode, b)
			}
		}
		if in.SHA256 == "" {
			if resp, b := testpm.Post(t, url+"/count_query", testpm.ServiceSecret, body); resp.StatusCode != 403 {
				t.Errorf("zero access answered %d %s", resp.StatusCode, b)
			}
		}
	}
	if r := remaining(t, a); r != 1 {
		t.Errorf("budget after refused calls: %v", r)
	}
}

// User B's bound service, given user A's pm_address, is refused and charges
// nobody; its own PM (named or not) is answered and charged.
func TestAccessBoundToAnotherPM(t *testing.T) {
	a, b := startPM(t, 1), startPM(t, 1)
	url := serveWith(t, testpm.Bound(b.BaseURL(), testpm.GrantOf(t, b)))
	for _, f := range []string{
		`"pm_address": "` + a.BaseURL() + `"`,
		`"pm_address": "` + a.BaseURL() + `", "grant": "` + testpm.GrantOf(t, a) + `"`, // even with A's own grant
		`"pm_address": "` + strings.TrimPrefix(a.BaseURL(), "http://") + `"`,
	} {
		code, got := postJSON(t, url+"/v1/count_query", `{`+f+`, "uuid": "u", `+accessQuery+`}`)
		if code != 403 || !strings.Contains(got, "bound to another PM") {
			t.Errorf("%s: %d %s", f, code, got)
		}
	}
	if r := remaining(t, a); r != 1 {
		t.Errorf("A's budget: %v", r)
	}
	if r := remaining(t, b); r != 1 {
		t.Errorf("B's budget after refusals: %v", r)
	}
	for _, f := range []string{`"pm_address": "` + b.BaseURL() + `"`, `"pm_address": "` + strings.TrimPrefix(b.BaseURL(), "http://") + `/"`, `"uuid": "u"`} {
		code, got := postJSON(t, url+"/v1/count_query", `{`+f+`, "uuid": "u", `+accessQuery+`}`)
		if code != 200 || !strings.Contains(got, `"success":true`) {
			t.Errorf("own PM (%s): %d %s", f, code, got)
		}
	}
	if r := remaining(t, b); r >= 1 {
		t.Errorf("B's budget was not charged: %v", r)
	}
}

// A shared service bearing B's grant toward A's PM is refused by A's PM
// (403); without a grant the request is incomplete (400); a grant that may
// not spend is refused too.
func TestAccessSharedWrongGrant(t *testing.T) {
	a, b := startPM(t, 1), startPM(t, 1)
	url := serveWith(t, testpm.Shared())
	code, got := postJSON(t, url+"/v1/count_query", `{"pm_address": "`+a.BaseURL()+`", "grant": "`+testpm.GrantOf(t, b)+`", "uuid": "u", `+accessQuery+`}`)
	if code != 403 || !strings.Contains(got, "wrong credential") {
		t.Errorf("B's grant at A's PM: %d %s", code, got)
	}
	code, got = postJSON(t, url+"/v1/count_query", `{"pm_address": "`+a.BaseURL()+`", "uuid": "u", `+accessQuery+`}`)
	if code != 400 || !strings.Contains(got, "grant is required") {
		t.Errorf("no grant: %d %s", code, got)
	}
	code, got = postJSON(t, url+"/v1/count_query", `{"grant": "`+testpm.GrantOf(t, a)+`", "uuid": "u", `+accessQuery+`}`)
	if code != 400 || !strings.Contains(got, "pm_address is required") {
		t.Errorf("no pm_address: %d %s", code, got)
	}
	// A's grant that reads but may not spend.
	ro := startPMWith(t, store.Options{InitialBudget: 1})
	tok, err := ro.IssueGrant(context.Background(), api.GrantRequest{Service: "count", Read: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	code, got = postJSON(t, url+"/v1/count_query", `{"pm_address": "`+ro.BaseURL()+`", "grant": "`+tok.Token+`", "uuid": "u", `+accessQuery+`}`)
	if code != 403 {
		t.Errorf("a grant without spend: %d %s", code, got)
	}
	for _, c := range []*pmclient.Client{a, b, ro} {
		if r := remaining(t, c); r != 1 {
			t.Errorf("budget after refusals: %v", r)
		}
	}
	// A's own grant works.
	code, got = postJSON(t, url+"/v1/count_query", `{`+pmFields(t, a)+`, "uuid": "u", `+accessQuery+`}`)
	if code != 200 || !strings.Contains(got, `"success":true`) {
		t.Errorf("A's grant at A's PM: %d %s", code, got)
	}
}
