package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/internal/testpm"
	"github.com/e-mission/upc/services/pipeline"
	"github.com/e-mission/upc/services/pipeline/diary"
	gt "github.com/e-mission/upc/services/pipeline/groundtruth"
	"github.com/e-mission/upc/services/pipeline/pmstore"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/pmtest"
	"github.com/e-mission/upc/services/pm/store"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startPM runs a real permission manager (see testpm), claimed and
// unsealed by its owner; it returns the owner's client. The PM holds a
// grant for the pipeline service (pmFields): every stream, since the
// pipeline's state documents carry no metadata.key.
func startPM(t testing.TB) *pmclient.Client {
	t.Helper()
	return testpm.Start(t, store.Options{}, "pipeline").C
}

// pmFields are a shared pipeline service's request fields naming c's PM and
// carrying the user's grant there.
func pmFields(t testing.TB, c *pmclient.Client) string {
	return `"pm_address": "` + c.BaseURL() + `", "grant": "` + testpm.GrantOf(t, c) + `"`
}

// serve runs the pipeline service with in; post bears its secret.
func serve(t testing.TB, in access.Instance) string {
	t.Helper()
	s := New(quiet, PMStores(nil))
	s.Access = in
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

func upload(t testing.TB, c *pmclient.Client, day, user string) {
	t.Helper()
	f, err := realdata.Open(filepath.Join(pmtest.RealExamplesDir(t), day))
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
	if err := pmstore.New(c, user).Insert(context.Background(), pipeline.Timeseries, es); err != nil {
		t.Fatal(err)
	}
}

func post(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, b := testpm.Post(t, url, testpm.ServiceSecret, body)
	return resp.StatusCode, b
}

// The service runs the pipeline through a real PM: the day's results land in
// the PM and match the ground truth exactly, and the analysis entries have
// e-mission's shapes for the metrics and count services.
func TestRunPipelineThroughPM(t *testing.T) {
	c := startPM(t)
	const user = "0763de67f61e3f5d90e7518e69793954"
	upload(t, c, "shankari_2015-08-23", user)
	// A per-user pipeline, bound to the user's PM at launch.
	url := serve(t, testpm.Bound(c.BaseURL(), testpm.GrantOf(t, c)))

	code, body := post(t, url+"/run_pipeline", `{"pm_address": "`+c.BaseURL()+`", "uuid": "`+user+`"}`)
	if code != http.StatusOK || !bytes.Contains(body, []byte(`"success":true`)) {
		t.Fatalf("run_pipeline: %d %s", code, body)
	}
	ctx := context.Background()
	got, err := diary.Trips(ctx, pmstore.New(c, user), 2015, 8, 23)
	if err != nil {
		t.Fatal(err)
	}
	want, err := gt.Load(filepath.Join(pmtest.RealExamplesDir(t), "shankari_2015-08-23.ground_truth"))
	if err != nil {
		t.Fatal(err)
	}
	if rep := gt.CompareExact(want, got); !rep.OK() {
		var b strings.Builder
		_ = rep.Write(&b)
		t.Fatalf("through the PM:\n%s", b.String())
	}
	secs, err := c.Find(ctx, pmclient.FindRequest{Database: "Stage_database", Collection: "Stage_analysis_timeseries",
		Filter: map[string]any{"metadata.key": "analysis/cleaned_section"}})
	if err != nil || len(secs) != 5 {
		t.Fatalf("cleaned sections in the PM: %d, %v", len(secs), err)
	}
	d := secs[0]["data"].(map[string]any)
	for _, f := range []string{"start_ts", "end_ts", "start_local_dt", "distance", "duration", "sensed_mode", "speeds", "distances"} {
		if _, ok := d[f]; !ok {
			t.Errorf("cleaned_section has no data.%s", f)
		}
	}
	if _, isNum := d["sensed_mode"].(float64); !isNum {
		t.Errorf("sensed_mode is %T, want a number", d["sensed_mode"])
	}
	n, err := c.Count(ctx, pmclient.FindRequest{Database: "Stage_database", Collection: "Stage_analysis_timeseries",
		Filter: map[string]any{"metadata.key": "analysis/recreated_location",
			"data.loc": map[string]any{"$geoWithin": map[string]any{"$geometry": map[string]any{"type": "Polygon",
				"coordinates": []any{[]any{[]any{-122.2, 37.3}, []any{-122.0, 37.3}, []any{-122.0, 37.45}, []any{-122.2, 37.45}, []any{-122.2, 37.3}}}}}}}})
	if err != nil || n == 0 {
		t.Fatalf("recreated locations in the day's area: %d, %v", n, err)
	}

	// A second run (versioned API) finds nothing new.
	code, body = post(t, url+"/v1/run", `{"uuid": "`+user+`"}`)
	var res Result
	if code != http.StatusOK || json.Unmarshal(body, &res) != nil || !res.Success {
		t.Fatalf("v1/run: %d %s", code, body)
	}
	if len(res.Written) != 0 {
		t.Errorf("second run wrote %v", res.Written)
	}
	if len(res.StageMillis) != len(pipeline.Stages) {
		t.Errorf("stage timings %v", res.StageMillis)
	}
}

func TestBadRequests(t *testing.T) {
	url := serve(t, testpm.Shared())
	for _, c := range []struct {
		body, want string
		code       int
	}{
		{`{}`, "pm_address is required", 400},
		{`{"pm_address": "http://127.0.0.1:1", "uuid": "u"}`, "grant is required", 400},
		{`{"pm_address": "http://127.0.0.1:1", "grant": "g"}`, "uuid is required", 400},
		{`{"pm_address": "ftp://x", "grant": "g", "uuid": "u"}`, "not an http(s) address", 400},
		{`{"pm_address": "http://127.0.0.1:1", "grant": "g", "uuid": "u", "extra": 1}`, "extra", 400},
		{`not json`, "", 400},
		{`{"pm_address": "http://127.0.0.1:1", "grant": "g", "uuid": "u"}`, "pipeline run failed", 502}, // nothing listens there
	} {
		for _, path := range []string{"/run_pipeline", "/v1/run"} {
			code, body := post(t, url+path, c.body)
			if code != c.code || !strings.Contains(string(body), c.want) {
				t.Errorf("%s %s: %d %s; want %d containing %q", path, c.body, code, body, c.code, c.want)
			}
		}
	}
	resp, err := http.Get(url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
}
