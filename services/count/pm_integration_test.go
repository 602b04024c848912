package count

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/internal/testpm"
	"github.com/e-mission/upc/services/pipeline"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// startPM runs a real permission manager (see testpm), claimed and
// unsealed by its owner, with the given budget; it returns the owner's
// client. The PM holds a grant for the count service (pmFields).
func startPM(t testing.TB, budget float64) *pmclient.Client {
	return startPMWith(t, store.Options{InitialBudget: budget})
}

// startPMWith is startPM with the store's options (the budget's policy).
func startPMWith(t testing.TB, o store.Options) *pmclient.Client {
	t.Helper()
	return testpm.Start(t, o, "count").C
}

// pmFields are a shared count service's request fields naming c's PM and
// carrying the user's grant there.
func pmFields(t testing.TB, c *pmclient.Client) string {
	return `"pm_address": "` + c.BaseURL() + `", "grant": "` + testpm.GrantOf(t, c) + `"`
}

// serve runs the count service shared (each request names its PM and
// grant); postJSON bears its secret.
func serve(t testing.TB) *httptest.Server {
	t.Helper()
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), PMClients(nil))
	s.Access = testpm.Shared()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

// uploadRecreated runs the Go pipeline on a real day and stores its
// recreated locations in the PM's analysis timeseries.
func uploadRecreated(t testing.TB, c *pmclient.Client, day string) int {
	t.Helper()
	f, err := realdata.Open(filepath.Join(realdata.DirT(t), day))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	es, err := pipeline.ReadEntries(f)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st := pipeline.NewMemStore()
	for i := range es {
		es[i].UserID = "u"
	}
	if err := st.Insert(ctx, pipeline.Timeseries, es); err != nil {
		t.Fatal(err)
	}
	if err := (&pipeline.Run{Store: st, UserID: "u", Seed: pipeline.DefaultSeed}).Execute(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := st.Find(ctx, pipeline.Query{Keys: []string{pipeline.KeyRecreated}})
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	b, _ := json.Marshal(out)
	if err := json.Unmarshal(b, &docs); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Insert(ctx, api.DefaultDatabase, api.AnalysisTimeseries, docs...); err != nil {
		t.Fatal(err)
	}
	return len(docs)
}

func postJSON(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, b := testpm.Post(t, url, testpm.ServiceSecret, body)
	return resp.StatusCode, string(bytes.TrimSpace(b))
}

// TestWithRealPM runs the count service over HTTP against a real PM that
// holds the Go pipeline's recreated locations of aug-27; the PM evaluates
// the time window and the $geoWithin.
func TestWithRealPM(t *testing.T) {
	c := startPM(t, 0.1)
	if n := uploadRecreated(t, c, "shankari_2015-aug-27"); n < 100 {
		t.Fatalf("only %d recreated locations", n)
	}
	srv := serve(t)
	ask := func(path, q string) (int, string) {
		return postJSON(t, srv.URL+path, `{`+pmFields(t, c)+`, "uuid": "u", "query": `+q+`}`)
	}
	day := `"start_ts": 1440658800, "end_ts": 1440745200`
	for _, tc := range []struct{ name, q, want string }{
		{"berkeley, the original example's box", `{"offset": 100, "alpha": 0.05, ` + day + `, "sel_region": {"geometry": ` + berkeley + `}}`, `{"success":true,"results":1}`},
		{"home", `{"offset": 100, "alpha": 0.05, ` + day + `, "sel_region": {"geometry": ` + home + `}}`, `{"success":true,"results":1}`},
		{"sacramento", `{"offset": 100, "alpha": 0.05, ` + day + `, "sel_region": {"geometry": ` + elsewhere + `}}`, `{"success":true,"results":0}`},
	} {
		code, got := ask("/count_query", tc.q)
		if code != 200 || got != tc.want {
			t.Errorf("%s: %d %s, want %s", tc.name, code, got, tc.want)
		}
	}
	l, err := c.Ledger(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := 0.1 - 3*0.029957322735539909; math.Abs(l.Remaining-want) > 1e-9 {
		t.Errorf("remaining %v, want %v", l.Remaining, want)
	}
	// 0.0101 left: the fourth query is refused and charges nothing.
	code, got := ask("/count_query", `{"offset": 100, "alpha": 0.05, `+day+`, "sel_region": null}`)
	if code != 200 || got != `{"success":false}` {
		t.Fatalf("short budget: %d %s", code, got)
	}
	// The versioned API's query id makes a retry free: charged once.
	c2 := startPM(t, 0.05)
	uploadRecreated(t, c2, "shankari_2015-aug-27")
	for range 3 {
		code, got := postJSON(t, srv.URL+"/v1/count_query", `{`+pmFields(t, c2)+`, "uuid": "u", "query_id": "retry-me",
		  "query": {"offset": 100, "alpha": 0.05, `+day+`, "sel_region": {"geometry": `+home+`}}}`)
		if code != 200 || !strings.Contains(got, `"success":true,"results":1`) {
			t.Fatalf("v1: %d %s", code, got)
		}
	}
	l, _ = c2.Ledger(context.Background())
	if math.Abs(l.Remaining-(0.05-0.029957322735539909)) > 1e-9 {
		t.Errorf("three tries of one query id left %v", l.Remaining)
	}
}

// BenchmarkCountRealPM is one whole /count_query call over HTTP: charge at a
// real PM, which then evaluates the window and the polygon over aug-27's
// recreated locations.
func BenchmarkCountRealPM(b *testing.B) {
	c := startPM(b, 1e12)
	n := uploadRecreated(b, c, "shankari_2015-aug-27")
	srv := serve(b)
	body := `{` + pmFields(b, c) + `, "uuid": "u", "query": {"offset": 100, "alpha": 0.05,
	  "start_ts": 1440658800, "end_ts": 1440745200, "sel_region": {"geometry": ` + elsewhere + `}}}`
	reportCPU(b, func() {
		_, out := testpm.Post(b, srv.URL+"/count_query", testpm.ServiceSecret, body)
		if !bytes.Contains(out, []byte(`"results":0`)) {
			b.Fatalf("answer %s", out)
		}
	})
	b.ReportMetric(float64(n), "points")
}

// BenchmarkCountPMDirect is the baseline of BenchmarkCountRealPM: the same
// spend and count asked of the PM directly with pmclient, without the service.
func BenchmarkCountPMDirect(b *testing.B) {
	c := startPM(b, 1e12)
	uploadRecreated(b, c, "shankari_2015-aug-27")
	var q Query
	if err := json.Unmarshal([]byte(`{"offset": 100, "alpha": 0.05, "start_ts": 1440658800, "end_ts": 1440745200, "sel_region": {"geometry": `+elsewhere+`}}`), &q); err != nil {
		b.Fatal(err)
	}
	geom, err := q.Validate()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	reportCPU(b, func() {
		if _, err := c.Spend(ctx, api.SpendRequest{PrivacyCost: 0.03, Service: "count"}); err != nil {
			b.Fatal(err)
		}
		n, err := c.Count(ctx, pmclient.FindRequest{Database: api.DefaultDatabase, Collection: api.AnalysisTimeseries,
			Filter: Filter(q, geom), Limit: 1, WithLimitAndSkip: true})
		if err != nil || n != 0 {
			b.Fatal(n, err)
		}
	})
}
