package metrics

import (
	"context"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/services/internal/testpm"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// Access control of the metrics service (docs/security.md): callers bear
// the service's secret; a bound service reaches only its PM; a shared one
// reaches a PM only with that PM's grant, and sees only what it may read.

const accessQuery = `"uuid": "aug27",
 "start_time": {"year": 2015, "month": 8, "day": 27, "timezone": "America/Los_Angeles"},
 "end_time": {"year": 2015, "month": 8, "day": 28, "timezone": "America/Los_Angeles"},
 "freq": "DAILY", "metric": "count", "offset": {"IN_VEHICLE": 1000}, "alpha": {"IN_VEHICLE": 0.05}`

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
		url := startMetricsWith(t, in)
		body := `{` + pmFields(t, a) + `, ` + accessQuery + `}`
		for _, path := range []string{"/metrics/local_date", "/v1/metrics/local_date"} {
			if resp, b := testpm.Post(t, url+path, "", body); resp.StatusCode != 401 {
				t.Errorf("%s %s without a credential: %d %s", name, path, resp.StatusCode, b)
			}
			if resp, b := testpm.Post(t, url+path, access.NewToken(access.PrefixInstance), body); resp.StatusCode != 403 {
				t.Errorf("%s %s with a wrong credential: %d %s", name, path, resp.StatusCode, b)
			}
		}
		if in.SHA256 == "" {
			if resp, b := testpm.Post(t, url+"/metrics/local_date", testpm.ServiceSecret, body); resp.StatusCode != 403 {
				t.Errorf("zero access answered %d %s", resp.StatusCode, b)
			}
		}
	}
	if r := remaining(t, a); r != 1 {
		t.Errorf("budget after refused calls: %v", r)
	}
}

// User B's bound metrics service returns nothing of user A's: naming A's PM
// is refused.
func TestAccessBoundToAnotherPM(t *testing.T) {
	a, b := startPM(t, 1), startPM(t, 1)
	uploadPipelineOutput(t, a, "shankari_2015-aug-27", "aug27")
	url := startMetricsWith(t, testpm.Bound(b.BaseURL(), testpm.GrantOf(t, b)))
	code, got := postJSON(t, url+"/v1/metrics/local_date", `{"pm_address": "`+a.BaseURL()+`", `+accessQuery+`}`)
	if code != 403 || !strings.Contains(got, "bound to another PM") {
		t.Errorf("A's PM through B's service: %d %s", code, got)
	}
	if r := remaining(t, a); r != 1 {
		t.Errorf("A's budget: %v", r)
	}
	code, got = postJSON(t, url+"/metrics/local_date", `{`+accessQuery+`}`)
	if code != 200 || got != `{"success":true,"results":{"IN_VEHICLE":0}}` {
		t.Errorf("B's own (empty) PM: %d %s", code, got)
	}
}

// A shared service bearing B's grant toward A's PM is refused by A's PM; a
// grant that reads only another stream sees no sections; one that reads the
// sections answers.
func TestAccessSharedGrants(t *testing.T) {
	a, b := startPM(t, 1), startPM(t, 1)
	uploadPipelineOutput(t, a, "shankari_2015-aug-27", "aug27")
	url := startMetrics(t)
	code, got := postJSON(t, url+"/v1/metrics/local_date", `{"pm_address": "`+a.BaseURL()+`", "grant": "`+testpm.GrantOf(t, b)+`", `+accessQuery+`}`)
	if code != 403 {
		t.Errorf("B's grant at A's PM: %d %s", code, got)
	}
	code, got = postJSON(t, url+"/v1/metrics/local_date", `{"pm_address": "`+a.BaseURL()+`", `+accessQuery+`}`)
	if code != 400 || !strings.Contains(got, "grant is required") {
		t.Errorf("no grant: %d %s", code, got)
	}
	if r := remaining(t, a); r != 1 {
		t.Errorf("A's budget after refusals: %v", r)
	}
	issue := func(read ...string) string {
		g, err := a.IssueGrant(context.Background(), api.GrantRequest{Service: "metrics", Read: read, Spend: 0.5})
		if err != nil {
			t.Fatal(err)
		}
		return g.Token
	}
	code, got = postJSON(t, url+"/metrics/local_date", `{"pm_address": "`+a.BaseURL()+`", "grant": "`+issue("background/location")+`", `+accessQuery+`}`)
	if code != 200 || got != `{"success":true,"results":{"IN_VEHICLE":0}}` {
		t.Errorf("a grant reading another stream: %d %s", code, got)
	}
	code, got = postJSON(t, url+"/metrics/local_date", `{"pm_address": "`+a.BaseURL()+`", "grant": "`+issue(KeyCleanedSection)+`", `+accessQuery+`}`)
	if code != 200 || got != `{"success":true,"results":{"IN_VEHICLE":5}}` {
		t.Errorf("a grant reading the sections: %d %s", code, got)
	}
}
