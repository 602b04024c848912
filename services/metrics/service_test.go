package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// fakePM is a unit-test stand-in for the permission manager (the real PM is
// exercised in pm_integration_test.go): a budget, a list of documents, and a
// log of the calls in order.
type fakePM struct {
	budget  float64
	docs    []map[string]any
	findErr error
	calls   []string
	spent   []api.SpendRequest
}

func (f *fakePM) Spend(_ context.Context, req api.SpendRequest) (api.SpendResponse, error) {
	f.calls = append(f.calls, "spend")
	f.spent = append(f.spent, req)
	if float64(req.PrivacyCost) > f.budget {
		return api.SpendResponse{Success: false, Remaining: f.budget}, nil
	}
	f.budget -= float64(req.PrivacyCost)
	return api.SpendResponse{Success: true, Remaining: f.budget}, nil
}

func (f *fakePM) FindInto(_ context.Context, req pmclient.FindRequest, out any) error {
	f.calls = append(f.calls, "find")
	if f.findErr != nil {
		return f.findErr
	}
	var match []map[string]any
	for _, d := range f.docs {
		if md, _ := d["metadata"].(map[string]any); md["key"] == req.Filter["metadata.key"] {
			match = append(match, d)
		}
	}
	b, _ := json.Marshal(match)
	return json.Unmarshal(b, out)
}

// sectionDocs renders sections as the PM stores cleaned_section entries.
func sectionDocs(ss []Section) []map[string]any {
	var docs []map[string]any
	for _, s := range ss {
		docs = append(docs, map[string]any{
			"user_id":  json.RawMessage(s.User),
			"metadata": map[string]any{"key": KeyCleanedSection},
			"data": map[string]any{"start_ts": s.StartTs, "start_local_dt": s.StartLocalDt,
				"sensed_mode": s.Mode, "distance": s.Distance, "duration": s.Duration},
		})
	}
	docs = append(docs, map[string]any{"metadata": map[string]any{"key": "analysis/cleaned_trip"}, "data": map[string]any{}})
	return docs
}

func post(t *testing.T, h http.Handler, path, body string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s answered %d with non-JSON %q", path, rec.Code, rec.Body.String())
	}
	return rec.Code, out
}

const aug27Query = `{"pm_address": "pm:8080", "uuid": "u",
 "start_time": {"year": 2015, "month": 8, "day": 27, "timezone": "America/Los_Angeles"},
 "end_time": {"year": 2015, "month": 8, "day": 28, "timezone": "America/Los_Angeles"},
 "freq": "DAILY", "metric": "count",
 "offset": {"CAR": 1000, "IN_VEHICLE": 1000, "ON_FOOT": 1000, "WALK": 1000},
 "alpha": {"CAR": 0.05, "IN_VEHICLE": 0.5, "ON_FOOT": 0.5, "WALK": 0.1}}`

// yearOnly asks a range of no whole day: the original charged it nothing.
const yearOnly = `{"pm_address": "pm:8080", "uuid": "u",
 "start_time": {"year": 2015, "timezone": "America/Los_Angeles"},
 "end_time": {"year": 2015, "timezone": "America/Los_Angeles"},
 "freq": "YEARLY", "metric": "count", "offset": {"IN_VEHICLE": 1}, "alpha": {"IN_VEHICLE": 0.5}}`

func newTestServer(pm *fakePM) http.Handler {
	// Legacy: the request's pm_address, no credential; access_test.go
	// tests the modes.
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), func(string, string) PM { return pm })
	s.Access = access.Instance{Legacy: true}
	return s.Handler()
}

func TestLocalDateEndpoint(t *testing.T) {
	pm := &fakePM{budget: 1, docs: sectionDocs(groundTruthSections(t, "shankari_2015-aug-27", `"u"`, 0))}
	code, out := post(t, newTestServer(pm), "/metrics/local_date", aug27Query)
	if code != 200 {
		t.Fatalf("status %d: %v", code, out)
	}
	want := `{"results":{"CAR":0,"IN_VEHICLE":5,"ON_FOOT":5,"WALK":0},"success":true}`
	if got := jsonOf(out); got != want {
		t.Errorf("answer %s, want %s", got, want)
	}
	if strings.Join(pm.calls, ",") != "spend,find" {
		t.Errorf("calls %v: the budget must be charged before any read", pm.calls)
	}
	wantCost := -math.Log(0.05)*55/1000 - math.Log(0.1)*55/1000 - 2*math.Log(0.5)*55/1000
	if c := float64(pm.spent[0].PrivacyCost); math.Abs(c-wantCost) > 1e-12 || pm.spent[0].Service != "metrics" || pm.spent[0].QueryID == "" {
		t.Errorf("spent %+v, want cost %v", pm.spent[0], wantCost)
	}
}

func TestLocalDateV1(t *testing.T) {
	pm := &fakePM{budget: 1, docs: sectionDocs(groundTruthSections(t, "shankari_2015-aug-27", `"u"`, 0))}
	body := strings.Replace(aug27Query, `"uuid": "u",`, `"uuid": "u", "query_id": "q-1",`, 1)
	code, out := post(t, newTestServer(pm), "/v1/metrics/local_date", body)
	if code != 200 || out["query_id"] != "q-1" || out["success"] != true || out["period"] == nil {
		t.Fatalf("v1 answer %d %v", code, out)
	}
	if period := out["period"].(map[string]any); period["fmt_time"] != "2015-08-27" || period["BICYCLING"] != 4.0 {
		t.Errorf("period %v", period)
	}
	if pm.spent[0].QueryID != "q-1" {
		t.Errorf("query id not passed to the PM: %+v", pm.spent[0])
	}
}

func TestLocalDateBudgetShort(t *testing.T) {
	pm := &fakePM{budget: 0.01, docs: sectionDocs(groundTruthSections(t, "shankari_2015-aug-27", `"u"`, 0))}
	code, out := post(t, newTestServer(pm), "/metrics/local_date", aug27Query)
	if code != 200 || jsonOf(out) != `{"success":false}` {
		t.Fatalf("answer %d %v", code, out)
	}
	if strings.Join(pm.calls, ",") != "spend" {
		t.Errorf("calls %v: nothing may be read when the budget is short", pm.calls)
	}
}

// A failure after the charge is reported, never refunded: the same question
// under the same id is answered later without a second charge.
func TestLocalDateReadFailsAfterCharge(t *testing.T) {
	pm := &fakePM{budget: 1, findErr: errors.New("pm exploded")}
	code, out := post(t, newTestServer(pm), "/metrics/local_date", aug27Query)
	if code != http.StatusBadGateway || out["error"] == nil {
		t.Fatalf("answer %d %v", code, out)
	}
	if strings.Join(pm.calls, ",") != "spend,find" || pm.spent[0].Question == "" {
		t.Errorf("calls %v, spend %+v", pm.calls, pm.spent)
	}
}

func TestLocalDateBadRequests(t *testing.T) {
	for name, tc := range map[string]struct{ body, wantErr string }{
		"not JSON":          {`{`, "malformed"},
		"unknown field":     {strings.Replace(aug27Query, `"freq"`, `"frequency": 1, "freq"`, 1), "unknown field"},
		"no pm_address":     {strings.Replace(aug27Query, `"pm:8080"`, `""`, 1), "pm_address"},
		"hourly":            {strings.Replace(aug27Query, `"DAILY"`, `"HOURLY"`, 1), "freq"},
		"median_speed":      {strings.Replace(aug27Query, `"count"`, `"median_speed"`, 1), "Δf"},
		"alpha of 2":        {strings.Replace(aug27Query, `"CAR": 0.05`, `"CAR": 2`, 1), "alpha"},
		"negative offset":   {strings.Replace(aug27Query, `"CAR": 1000`, `"CAR": -1000`, 1), "offset"},
		"end before start":  {strings.Replace(aug27Query, `"day": 28`, `"day": 20`, 1), "before"},
		"scalar offset":     {strings.Replace(aug27Query, `{"CAR": 1000, "IN_VEHICLE": 1000, "ON_FOOT": 1000, "WALK": 1000}`, `100`, 1), "offset"},
		"mismatched bounds": {strings.Replace(aug27Query, `"day": 28, `, ``, 1), "same date components"},
		"year-only bounds":  {yearOnly, "cost nothing"},
		"unknown mode":      {strings.Replace(aug27Query, `"WALK": 1000}`, `"WALK": 1000, "SKATEBOARD": 1}`, 1), "no sensitivity"},
	} {
		t.Run(name, func(t *testing.T) {
			pm := &fakePM{budget: 1}
			code, out := post(t, newTestServer(pm), "/metrics/local_date", tc.body)
			if code != 400 || !strings.Contains(out["error"].(string), tc.wantErr) {
				t.Errorf("answer %d %v, want 400 naming %q", code, out, tc.wantErr)
			}
			if len(pm.calls) != 0 {
				t.Errorf("the PM was called (%v) for a bad request", pm.calls)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	rec := httptest.NewRecorder()
	newTestServer(&fakePM{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != 200 || !bytes.Contains(rec.Body.Bytes(), []byte("ok")) {
		t.Fatalf("healthz %d %s", rec.Code, rec.Body)
	}
}
