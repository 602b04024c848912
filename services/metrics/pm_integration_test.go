package metrics

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

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/internal/testpm"
	"github.com/e-mission/upc/services/pipeline"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// startPM runs a real permission manager (see testpm), claimed and
// unsealed by its owner, with the given budget; it returns the owner's
// client. The PM holds a grant for the metrics service (pmFields).
func startPM(t testing.TB, budget float64) *pmclient.Client {
	t.Helper()
	return testpm.Start(t, store.Options{InitialBudget: budget}, "metrics").C
}

// pmFields are a shared metrics service's request fields naming c's PM and
// carrying the user's grant there.
func pmFields(t testing.TB, c *pmclient.Client) string {
	return `"pm_address": "` + c.BaseURL() + `", "grant": "` + testpm.GrantOf(t, c) + `"`
}

// uploadPipelineOutput runs the Go pipeline on a real day and stores its
// analysis entries in the PM's analysis timeseries, as the pipeline service
// leaves them.
func uploadPipelineOutput(t testing.TB, c *pmclient.Client, day, user string) int {
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
	for i := range es {
		es[i].UserID = user
	}
	ctx := context.Background()
	st := pipeline.NewMemStore()
	if err := st.Insert(ctx, pipeline.Timeseries, es); err != nil {
		t.Fatal(err)
	}
	if err := (&pipeline.Run{Store: st, UserID: user, Seed: pipeline.DefaultSeed}).Execute(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := st.Find(ctx, pipeline.Query{Keys: []string{pipeline.KeyCleanedSection, pipeline.KeyCleanedTrip}})
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

// startMetrics runs the metrics service shared (each request names its PM
// and grant); postJSON bears its secret.
func startMetrics(t testing.TB) string {
	t.Helper()
	return startMetricsWith(t, testpm.Shared())
}

func startMetricsWith(t testing.TB, in access.Instance) string {
	t.Helper()
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), PMClients(nil))
	s.Access = in
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func postJSON(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, b := testpm.Post(t, url, testpm.ServiceSecret, body)
	return resp.StatusCode, string(bytes.TrimSpace(b))
}

// TestWithRealPM runs the metrics service against a real PM holding the Go
// pipeline's output for aug-27: the original request body, the answer, the
// charge in the PM's ledger, and the refusal once the budget is spent.
func TestWithRealPM(t *testing.T) {
	c := startPM(t, 2)
	if n := uploadPipelineOutput(t, c, "shankari_2015-aug-27", "aug27"); n < 15 {
		t.Fatalf("uploaded %d entries", n)
	}
	url := startMetrics(t)
	body := `{` + pmFields(t, c) + `, "uuid": "aug27",
	 "start_time": {"year": 2015, "month": 8, "day": 27, "timezone": "America/Los_Angeles"},
	 "end_time": {"year": 2015, "month": 8, "day": 28, "timezone": "America/Los_Angeles"},
	 "freq": "DAILY", "metric": "%s",
	 "offset": {"CAR": 1000, "IN_VEHICLE": 1000, "BICYCLING": 1000},
	 "alpha": {"CAR": 0.05, "IN_VEHICLE": 0.05, "BICYCLING": 0.05}}`
	code, got := postJSON(t, url+"/metrics/local_date", strings.Replace(body, "%s", "count", 1))
	if code != 200 || got != `{"success":true,"results":{"BICYCLING":4,"CAR":0,"IN_VEHICLE":5}}` {
		t.Fatalf("count: %d %s", code, got)
	}
	cost := -math.Log(0.05) * 55 / 1000 * 3
	l, err := c.Ledger(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(l); !strings.Contains(string(b), `"metrics"`) || math.Abs(l.Remaining-(2-cost)) > 1e-9 {
		t.Errorf("ledger after one count: %s (want remaining %v)", b, 2-cost)
	}
	// Distance: Δf(CAR) = Δf(IN_VEHICLE) = 3840000 m/day and Δf(BICYCLING)
	// = 648000, so large offsets keep it cheap; every mode is charged.
	distBody := strings.Replace(strings.Replace(body, "%s", "distance", 1), `"CAR": 1000, "IN_VEHICLE": 1000, "BICYCLING": 1000`, `"CAR": 1e8, "IN_VEHICLE": 1e8, "BICYCLING": 1e8`, 1)
	code, got = postJSON(t, url+"/metrics/local_date", distBody)
	if code != 200 || !strings.HasPrefix(got, `{"success":true,"results":{"BICYCLING":`) || !strings.Contains(got, `"CAR":0,"IN_VEHICLE":`) {
		t.Fatalf("distance: %d %s", code, got)
	}
	var dist struct{ Results map[string]float64 }
	json.Unmarshal([]byte(got), &dist)
	if v := dist.Results["IN_VEHICLE"]; v < 150000 || v > 170000 {
		t.Errorf("IN_VEHICLE distance %v m, want the ~158 km of aug-27's five drives", v)
	}
	cost += -math.Log(0.05) * (2*3840000 + 648000) / 1e8
	// Count with CAR offset 100 costs −ln(0.05)·55/100 ≈ 1.65, 1.98 in all,
	// more than the 1.26 left: refused.
	overBody := strings.Replace(strings.Replace(body, "%s", "count", 1), `"CAR": 1000`, `"CAR": 100`, 1)
	before, _ := c.Ledger(context.Background())
	if math.Abs(before.Remaining-(2-cost)) > 1e-9 {
		t.Errorf("remaining %v, want %v", before.Remaining, 2-cost)
	}
	code, got = postJSON(t, url+"/metrics/local_date", overBody)
	if code != 200 || got != `{"success":false}` {
		t.Fatalf("over budget: %d %s", code, got)
	}
	after, _ := c.Ledger(context.Background())
	if after.Remaining != before.Remaining {
		t.Errorf("a refused query changed the budget: %v → %v", before.Remaining, after.Remaining)
	}
}

// BenchmarkLocalDateRealPM is one whole /metrics/local_date call over HTTP:
// charge at a real PM, read aug-27's cleaned sections, summarize, answer.
func BenchmarkLocalDateRealPM(b *testing.B) {
	c := startPM(b, 1e12)
	uploadPipelineOutput(b, c, "shankari_2015-aug-27", "aug27")
	url := startMetrics(b)
	body := `{` + pmFields(b, c) + `, "uuid": "aug27",
	 "start_time": {"year": 2015, "month": 8, "day": 27, "timezone": "America/Los_Angeles"},
	 "end_time": {"year": 2015, "month": 8, "day": 28, "timezone": "America/Los_Angeles"},
	 "freq": "DAILY", "metric": "count", "offset": {"CAR": 1000, "IN_VEHICLE": 1000}, "alpha": {"CAR": 0.05, "IN_VEHICLE": 0.05}}`
	reportCPU(b, func() {
		_, out := testpm.Post(b, url+"/metrics/local_date", testpm.ServiceSecret, body)
		if !bytes.Contains(out, []byte(`"IN_VEHICLE":5`)) {
			b.Fatalf("answer %s", out)
		}
	})
}

// BenchmarkLocalDatePMDirect is the baseline of BenchmarkLocalDateRealPM: the
// same spend and read asked of the PM directly with pmclient.
func BenchmarkLocalDatePMDirect(b *testing.B) {
	c := startPM(b, 1e12)
	uploadPipelineOutput(b, c, "shankari_2015-aug-27", "aug27")
	ctx := context.Background()
	reportCPU(b, func() {
		if _, err := c.Spend(ctx, api.SpendRequest{PrivacyCost: 0.2, Service: "metrics"}); err != nil {
			b.Fatal(err)
		}
		var es []SectionEntry
		if err := c.FindInto(ctx, pmclient.FindRequest{Database: api.DefaultDatabase, Collection: api.AnalysisTimeseries,
			Filter: map[string]any{"metadata.key": KeyCleanedSection, "invalid": map[string]any{"$exists": false}}}, &es); err != nil || len(es) != 15 {
			b.Fatal(len(es), err)
		}
	})
}
