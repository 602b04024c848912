package pm_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmtest"
)

// fuzzPaths are the PM's endpoints that take a body, by the fuzzer's index.
var fuzzPaths = []string{api.PathInsert, api.PathInsertDeprecated, api.PathFind, api.PathFindOne, api.PathCount,
	api.PathDistinct, api.PathUpdate, api.PathUpdateDeprecated, api.PathReplaceOne, api.PathDelete, api.PathBudget,
	api.PathGrants, api.PathGrantCheck, api.PathKey, api.PathBulkUpdate}

// FuzzPMRequest: whatever body its owner sends to any endpoint, an unsealed
// PM holding a real day answers it with a 2xx or a 4xx naming the problem:
// never a 5xx, never a crash. (The owner is the strongest caller there is:
// every check past authentication is reached.)
func FuzzPMRequest(f *testing.F) {
	p := unsealedPM(f)
	day := pmtest.LoadDay(f, filepath.Join(pmtest.RealExamplesDir(f), "shankari_2015-aug-27"))
	if err := func() error {
		_, err := p.c.Insert(context.Background(), api.DefaultDatabase, api.Timeseries, day[:300]...)
		return err
	}(); err != nil {
		f.Fatal(err)
	}
	one, _ := json.Marshal(day[301])
	for _, s := range []struct {
		path int
		body string
	}{
		{0, `{"stage_name":"s","data":` + string(one) + `}`},
		{0, `{"stage_name":"s","is_many":true,"data":[` + string(one) + `,{"metadata":{"key":"k"}}]}`},
		{2, `{"stage_name":"s","filter":{"metadata.key":"background/location","data.ts":{"$gte":1440658800}},"sort":[["data.ts",-1]],"limit":1}`},
		{2, `{"database":"Stage_database","collection":"Stage_timeseries","filter":{"$or":[{"data.accuracy":{"$lt":30}},{"x":{"$exists":true}}]},"projection":{"data.loc":1}}`},
		{3, `{"stage_name":"s","filter":{"_id":{"$oid":"55e0d3c3f2f1a52a8d3b5e1c"}}}`},
		{4, `{"stage_name":"s","filter":{},"with_limit_and_skip":true,"skip":2,"limit":3}`},
		{5, `{"stage_name":"s","filter":{},"distinct_key":"metadata.key"}`},
		{6, `{"stage_name":"s","query":{"metadata.key":"k"},"data":{"$set":{"data.x":1}},"upsert":true}`},
		{8, `{"stage_name":"s","query":{},"data":{"metadata":{"key":"k"}}}`},
		{9, `{"stage_name":"s","query":{"data.ts":{"$lt":0}},"is_many":true}`},
		{10, `{"query_id":"q1","service":"count","cost":0.1,"question":"` + strings.Repeat("a", 64) + `"}`},
		{11, `{"service":"count","spend_cap":0.5,"ttl_seconds":60}`},
		{14, `{"stage_name":"s","updates":[{"query":{"metadata.key":"k","metadata.write_ts":1},"data":{"$set":{"data.x":1}},"upsert":true},{"query":{"data.ts":{"$lt":0}},"data":{"$inc":{"n":1}},"is_many":true}]}`},
	} {
		f.Add(uint8(s.path), []byte(s.body))
	}
	h := p.srv.Config.Handler
	f.Fuzz(func(t *testing.T, path uint8, body []byte) {
		req := httptest.NewRequest(http.MethodPost, fuzzPaths[int(path)%len(fuzzPaths)], strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+p.owner)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("POST %s %s: %d %s", req.URL.Path, body, rec.Code, rec.Body)
		}
		var ans map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil && rec.Code != http.StatusNoContent {
			t.Fatalf("POST %s %s: %d answered with no JSON object: %q", req.URL.Path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && ans["error"] == "" {
			t.Fatalf("POST %s %s: %d without a message", req.URL.Path, body, rec.Code)
		}
	})
}
