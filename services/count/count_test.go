package count

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/dp"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pipeline/groundtruth"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/query"
)

// fakePM is a unit-test stand-in for the permission manager (the real PM
// server is exercised in pm_integration_test.go). Its Count runs the PM's own
// filter engine (services/pm/query) over documents, so the $geoWithin the
// service sends is evaluated for real.
type fakePM struct {
	budget   float64
	docs     []map[string]any
	countErr error
	calls    []string
	spent    []api.SpendRequest
	// spentSeeds are the noise seeds handed out, in order.
	spentSeeds []string
	// maxParts is the owner's participants policy (0: 1000, the PM's default).
	maxParts int
}

// Spend charges like the PM: participants capped by the policy, and a fresh
// random noise seed per charge.
func (f *fakePM) Spend(_ context.Context, req api.SpendRequest) (api.SpendResponse, error) {
	f.calls = append(f.calls, "spend")
	f.spent = append(f.spent, req)
	if float64(req.PrivacyCost) > f.budget {
		return api.SpendResponse{Success: false, Remaining: f.budget}, nil
	}
	f.budget -= float64(req.PrivacyCost)
	seed := make([]byte, 32)
	crand.Read(seed)
	f.spentSeeds = append(f.spentSeeds, hex.EncodeToString(seed))
	return api.SpendResponse{Success: true, Remaining: f.budget, Participants: min(req.Participants, cmp.Or(f.maxParts, 1000)),
		NoiseSeed: hex.EncodeToString(seed)}, nil
}

func (f *fakePM) Count(_ context.Context, req pmclient.FindRequest) (int64, error) {
	f.calls = append(f.calls, "count")
	if f.countErr != nil {
		return 0, f.countErr
	}
	// The filter travels as JSON: decode it as the PM would.
	b, _ := json.Marshal(req.Filter)
	var filter map[string]any
	json.Unmarshal(b, &filter)
	flt, err := query.Compile(filter)
	if err != nil {
		return 0, fmt.Errorf("pm rejected the filter: %w", err)
	}
	n := int64(0)
	for _, d := range f.docs {
		if flt.Match(d) {
			n++
		}
	}
	return n, nil
}

func locDoc(ts, lng, lat float64) map[string]any {
	b, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"key": KeyRecreatedLocation},
		"data":     map[string]any{"ts": ts, "loc": map[string]any{"type": "Point", "coordinates": []float64{lng, lat}}},
	})
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

// aug27Locations are the resampled points of aug-27's ground-truth sections,
// as recreated_location entries.
func aug27Locations(t *testing.T) []map[string]any {
	trips, err := groundtruth.Load(filepath.Join(realdata.DirT(t), "shankari_2015-aug-27.ground_truth"))
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	for _, tr := range trips {
		for _, f := range tr.Features {
			if f.Type != "FeatureCollection" {
				continue
			}
			s := f.Features[0]
			for i, c := range s.Geometry.Line {
				if i < len(s.Properties.Times) {
					docs = append(docs, locDoc(s.Properties.Times[i], c[0], c[1]))
				}
			}
		}
	}
	// A point where a flat and a spherical polygon disagree (see below).
	docs = append(docs, locDoc(1e9, 0, 60.2))
	if len(docs) < 100 {
		t.Fatalf("only %d points", len(docs))
	}
	return docs
}

func body(q string) string {
	return `{"pm_address": "pm:8080", "uuid": "u", "query": ` + q + `}`
}

// A box around the start of aug-27's first trip (-122.0846749, 37.393415).
const home = `{"type": "Polygon", "coordinates": [[[-122.086, 37.392], [-122.083, 37.392], [-122.083, 37.395], [-122.086, 37.395], [-122.086, 37.392]]]}`

// The box of the original's example count query: Berkeley, where aug-27 went.
const berkeley = `{"type": "Polygon", "coordinates": [[[-122.267443, 37.864693], [-122.267443, 37.880687], [-122.250985, 37.880687], [-122.250985, 37.864693], [-122.267443, 37.864693]]]}`

// Downtown Sacramento, where it did not.
const elsewhere = `{"type": "Polygon", "coordinates": [[[-121.51, 38.57], [-121.48, 38.57], [-121.48, 38.59], [-121.51, 38.59], [-121.51, 38.57]]]}`

// newTestServer serves the query logic over pm in legacy mode (the
// request's pm_address, no credential); access_test.go tests the modes.
func newTestServer(pm PM) http.Handler {
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), func(string, string) PM { return pm })
	s.Access = access.Instance{Legacy: true}
	return s.Handler()
}

func post(t *testing.T, h http.Handler, path, b string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(b)))
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s answered %d with non-JSON %q", path, rec.Code, rec.Body.String())
	}
	return rec.Code, out
}

func TestCountQuery(t *testing.T) {
	docs := aug27Locations(t)
	day := `"start_ts": 1440658800, "end_ts": 1440745200`
	for _, tc := range []struct {
		name, query string
		want        string
	}{
		{"home during the day", `{"offset": 100, "alpha": 0.05, ` + day + `, "sel_region": {"geometry": ` + home + `}}`, `{"results":1,"success":true}`},
		{"elsewhere", `{"offset": 100, "alpha": 0.05, ` + day + `, "sel_region": {"geometry": ` + elsewhere + `}}`, `{"results":0,"success":true}`},
		{"berkeley", `{"offset": 100, "alpha": 0.05, ` + day + `, "sel_region": {"geometry": ` + berkeley + `}}`, `{"results":1,"success":true}`},
		{"home, a day later", `{"offset": 100, "alpha": 0.05, "start_ts": 1440745201, "end_ts": 1440831600, "sel_region": {"geometry": ` + home + `}}`, `{"results":0,"success":true}`},
		{"no region", `{"offset": 100, "alpha": 0.05, ` + day + `, "sel_region": null}`, `{"results":1,"success":true}`},
		{"a Feature as region", `{"offset": 100, "alpha": 0.05, ` + day + `, "sel_region": {"type": "Feature", "properties": {}, "geometry": ` + home + `}}`, `{"results":1,"success":true}`},
		{"multipolygon", `{"offset": 100, "alpha": 0.05, ` + day + `, "sel_region": {"geometry": {"type": "MultiPolygon", "coordinates": [` +
			strings.TrimSuffix(strings.TrimPrefix(elsewhere, `{"type": "Polygon", "coordinates": `), `}`) + `, ` +
			strings.TrimSuffix(strings.TrimPrefix(home, `{"type": "Polygon", "coordinates": `), `}`) + `]}}}`, `{"results":1,"success":true}`},
		{"date-time strings", `{"offset": 100, "alpha": 0.05, "start_ts": "2015-08-27 00:00:00-07:00", "end_ts": "2015-08-28T00:00:00-07:00", "sel_region": {"geometry": ` + home + `}}`, `{"results":1,"success":true}`},
		// Edges are great circles: the arc from (-10, 60) to (10, 60) passes
		// 60.38° N at 0° E, so (0, 60.2) is outside although it is inside the
		// same box drawn flat in longitude/latitude.
		{"spherical edges", `{"offset": 100, "alpha": 0.05, "start_ts": 0, "end_ts": 2e9, "sel_region": {"geometry": {"type": "Polygon", "coordinates": [[[-10, 60], [10, 60], [10, 70], [-10, 70], [-10, 60]]]}}}`, `{"results":0,"success":true}`},
		{"spherical edges, inside", `{"offset": 100, "alpha": 0.05, "start_ts": 0, "end_ts": 2e9, "sel_region": {"geometry": {"type": "Polygon", "coordinates": [[[-10, 59], [10, 59], [10, 70], [-10, 70], [-10, 59]]]}}}`, `{"results":1,"success":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pm := &fakePM{budget: 1, docs: docs}
			code, out := post(t, newTestServer(pm), "/count_query", body(tc.query))
			if b, _ := json.Marshal(out); code != 200 || string(b) != tc.want {
				t.Fatalf("answer %d %s, want %s", code, b, tc.want)
			}
			if strings.Join(pm.calls, ",") != "spend,count" {
				t.Errorf("calls %v: the budget must be charged before the query", pm.calls)
			}
			if c := float64(pm.spent[0].PrivacyCost); math.Abs(c-0.029957322735539909) > 1e-15 || pm.spent[0].Service != "count" {
				t.Errorf("charged %+v, want −ln(0.05)/100", pm.spent[0])
			}
		})
	}
}

func TestCountBudgetShortAndFailures(t *testing.T) {
	q := body(`{"offset": 100, "alpha": 0.05, "start_ts": 0, "end_ts": 2e9, "sel_region": null}`)
	pm := &fakePM{budget: 0.02, docs: aug27Locations(t)}
	code, out := post(t, newTestServer(pm), "/count_query", q)
	if b, _ := json.Marshal(out); code != 200 || string(b) != `{"success":false}` || strings.Join(pm.calls, ",") != "spend" {
		t.Fatalf("short budget: %d %s, calls %v", code, b, pm.calls)
	}
	// A failure after the charge is reported and never refunded: the same
	// question under the same id is answered later without a second charge.
	pm = &fakePM{budget: 1, countErr: errors.New("disk on fire")}
	code, out = post(t, newTestServer(pm), "/count_query", q)
	if code != http.StatusBadGateway || strings.Join(pm.calls, ",") != "spend,count" {
		t.Fatalf("failed count: %d %v, calls %v", code, out, pm.calls)
	}
}

func TestCountBadRequests(t *testing.T) {
	ok := `{"offset": 100, "alpha": 0.05, "start_ts": 0, "end_ts": 10, "sel_region": {"geometry": ` + home + `}}`
	for name, tc := range map[string]struct{ body, wantErr string }{
		"alpha 0":       {body(strings.Replace(ok, `"alpha": 0.05`, `"alpha": 0`, 1)), "alpha"},
		"alpha 1.5":     {body(strings.Replace(ok, `"alpha": 0.05`, `"alpha": 1.5`, 1)), "alpha"},
		"offset 0":      {body(strings.Replace(ok, `"offset": 100`, `"offset": 0`, 1)), "offset"},
		"reversed time": {body(strings.Replace(ok, `"start_ts": 0`, `"start_ts": 100`, 1)), "after"},
		"point region":  {body(strings.Replace(ok, home, `{"type": "Point", "coordinates": [0, 0]}`, 1)), "Polygon"},
		"open ring":     {body(strings.Replace(ok, `, [-122.086, 37.392]]]`, `]]`, 1)), "closed"},
		"latitude 100":  {body(strings.Replace(ok, `37.395], [-122.086, 37.395]`, `37.395], [-122.086, 100]`, 1)), "lng, lat"},
		"no geometry":   {body(strings.Replace(ok, `{"geometry": `+home+`}`, `{}`, 1)), "geometry"},
		"bad time":      {body(strings.Replace(ok, `"start_ts": 0`, `"start_ts": "yesterday"`, 1)), "yesterday"},
		"no uuid":       {strings.Replace(body(ok), `"uuid": "u"`, `"uuid": ""`, 1), "uuid"},
		"noise on v0":   {strings.Replace(body(ok), `"uuid": "u"`, `"uuid": "u", "noise_share": {"users": 3}`, 1), "v1"},
		"nearly free":   {body(strings.Replace(ok, `"alpha": 0.05`, `"alpha": 0.9999999999`, 1)), "least ε"},
		"infinite cost": {body(strings.Replace(ok, `"offset": 100`, `"offset": 1e-320`, 1)), "finite"},
	} {
		t.Run(name, func(t *testing.T) {
			pm := &fakePM{budget: 1}
			code, out := post(t, newTestServer(pm), "/count_query", tc.body)
			if code != 400 || !strings.Contains(fmt.Sprint(out["error"]), tc.wantErr) {
				t.Errorf("answer %d %v, want 400 naming %q", code, out, tc.wantErr)
			}
			if len(pm.calls) != 0 {
				t.Errorf("the PM was called (%v) for a bad request", pm.calls)
			}
		})
	}
}

func TestCountV1NoiseShare(t *testing.T) {
	docs := aug27Locations(t)
	q := `{"pm_address": "pm", "uuid": "u", "query_id": "q-7", "noise_share": {"users": 4},
	  "query": {"offset": 1, "alpha": 0.5, "start_ts": 0, "end_ts": 2e9, "sel_region": null}}`
	pm := &fakePM{budget: 10, docs: docs}
	code, out := post(t, newTestServer(pm), "/v1/count_query", q)
	// The share is keyed by the charge's noise seed: recompute it.
	seed, _ := hex.DecodeString(pm.spentSeeds[0])
	sc, _ := dp.ScaleFor(math.Log(2), 1)
	share, _ := dp.New(dp.WithKey([32]byte(seed))).LaplaceShare(sc, 4)
	if code != 200 || out["noised"] != true || out["query_id"] != "q-7" || out["results"] != float64(1+share) {
		t.Fatalf("answer %d %v, want results %d", code, out, 1+share)
	}
	if pm.spent[0].Participants != 4 || pm.spent[0].Question == "" {
		t.Errorf("spend %+v: the claimed participants and the question go to the PM", pm.spent[0])
	}
	// Over many queries the answers vary: the exact value is not what comes back.
	seen := map[float64]bool{}
	h := newTestServer(&fakePM{budget: 1000, docs: docs})
	for range 50 {
		_, out := post(t, h, "/v1/count_query", strings.Replace(q, `"q-7"`, `""`, 1))
		seen[out["results"].(float64)] = true
	}
	if len(seen) < 3 {
		t.Errorf("50 noised answers took only %d values", len(seen))
	}
}

// The shares the service adds must sum, over a query's participants, to
// discrete Laplace noise of scale 1/ε: its variance is 2p/(1−p)², p = e^−ε.
// Missing noise, or a scale off by 2× (variance off by about 4×), fails.
// (A unit test: fakePM stands in for the PM, as everywhere in this file.)
func TestNoiseSharesSumToTheMechanism(t *testing.T) {
	const users, sums = 5, 3000
	pm := &fakePM{budget: 1e9}
	h := newTestServer(pm)
	q := `{"pm_address": "pm", "uuid": "u", "noise_share": {"users": 5},
	  "query": {"offset": 1, "alpha": 0.5, "start_ts": 0, "end_ts": 2e9, "sel_region": null}}`
	var sum, sumSq float64
	for range sums {
		total := 0.0
		for range users {
			code, out := post(t, h, "/v1/count_query", q)
			if code != 200 || out["noised"] != true {
				t.Fatalf("answer %d %v", code, out)
			}
			total += out["results"].(float64) // the exact answer is 0: no documents
		}
		sum += total
		sumSq += total * total
	}
	mean := sum / sums
	variance := sumSq/sums - mean*mean
	p := 0.5 // e^−ln 2
	want := 2 * p / ((1 - p) * (1 - p))
	if math.Abs(mean) > 0.25 || variance < 0.75*want || variance > 1.33*want {
		t.Errorf("sums of %d shares: mean %.3f, variance %.3f; want 0 and %.3f", users, mean, variance, want)
	}
}
