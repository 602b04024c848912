package server

import (
	"context"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/services/internal/testpm"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// Access control of the pipeline service (docs/security.md): callers bear
// its secret; bound, it runs only over its own PM; shared, it reaches a PM
// only with that PM's grant. A refused run leaves the PM as it was.

func docCount(t *testing.T, c *pmclient.Client) int64 {
	t.Helper()
	var n int64
	for _, coll := range []string{api.Timeseries, api.AnalysisTimeseries, api.Usercache} {
		k, err := c.Count(context.Background(), pmclient.FindRequest{Collection: coll})
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
	return n
}

func TestAccessServiceSecret(t *testing.T) {
	a := startPM(t)
	for name, in := range map[string]access.Instance{"shared": testpm.Shared(), "bound": testpm.Bound(a.BaseURL(), testpm.GrantOf(t, a)), "zero": {}} {
		url := serve(t, in)
		body := `{` + pmFields(t, a) + `, "uuid": "u"}`
		for _, path := range []string{"/run_pipeline", "/v1/run"} {
			if resp, b := testpm.Post(t, url+path, "", body); resp.StatusCode != 401 {
				t.Errorf("%s %s without a credential: %d %s", name, path, resp.StatusCode, b)
			}
			if resp, b := testpm.Post(t, url+path, access.NewToken(access.PrefixInstance), body); resp.StatusCode != 403 {
				t.Errorf("%s %s with a wrong credential: %d %s", name, path, resp.StatusCode, b)
			}
		}
	}
}

func TestAccessBoundToAnotherPM(t *testing.T) {
	a, b := startPM(t), startPM(t)
	upload(t, a, "shankari_2015-aug-27", "u")
	before := docCount(t, a)
	url := serve(t, testpm.Bound(b.BaseURL(), testpm.GrantOf(t, b)))
	code, body := post(t, url+"/v1/run", `{"pm_address": "`+a.BaseURL()+`", "grant": "`+testpm.GrantOf(t, a)+`", "uuid": "u"}`)
	if code != 403 || !strings.Contains(string(body), "bound to another PM") {
		t.Errorf("A's PM through B's pipeline: %d %s", code, body)
	}
	if n := docCount(t, a); n != before {
		t.Errorf("A's PM holds %d documents, %d before", n, before)
	}
}

func TestAccessSharedWrongGrant(t *testing.T) {
	a, b := startPM(t), startPM(t)
	upload(t, a, "shankari_2015-aug-27", "u")
	before := docCount(t, a)
	url := serve(t, testpm.Shared())
	code, body := post(t, url+"/v1/run", `{"pm_address": "`+a.BaseURL()+`", "grant": "`+testpm.GrantOf(t, b)+`", "uuid": "u"}`)
	if code != 403 {
		t.Errorf("B's grant at A's PM: %d %s", code, body)
	}
	// A's grant that may read but not write: the run is refused at its
	// first write, and nothing is written.
	ro := testpm.Of(t, a).Issue(t, api.GrantRequest{Service: "pipeline", Read: []string{"*"}})
	code, body = post(t, url+"/v1/run", `{"pm_address": "`+a.BaseURL()+`", "grant": "`+ro+`", "uuid": "u"}`)
	if code != 403 {
		t.Errorf("a read-only grant: %d %s", code, body)
	}
	if n := docCount(t, a); n != before {
		t.Errorf("A's PM holds %d documents, %d before", n, before)
	}
}
