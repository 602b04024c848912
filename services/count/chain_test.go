package count

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pipeline"
	"github.com/e-mission/upc/services/pipeline/pmstore"
)

// TestChainThroughPM: the raw aug-27 day into a real PM, the pipeline over
// the PM (pmstore, as the pipeline service runs it), then count queries on
// what it left there.
func TestChainThroughPM(t *testing.T) {
	c := startPM(t, 1)
	f, err := realdata.Open(filepath.Join(realdata.DirT(t), "shankari_2015-aug-27"))
	if err != nil {
		t.Fatal(err)
	}
	es, err := pipeline.ReadEntries(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i := range es {
		es[i].UserID = "u"
	}
	ctx := context.Background()
	st := pmstore.New(c, "u")
	if err := st.Insert(ctx, pipeline.Timeseries, es); err != nil {
		t.Fatal(err)
	}
	if err := (&pipeline.Run{Store: st, UserID: "u", Seed: pipeline.DefaultSeed}).Execute(ctx); err != nil {
		t.Fatal(err)
	}
	srv := serve(t)
	for region, want := range map[string]string{berkeley: `{"success":true,"results":1}`, elsewhere: `{"success":true,"results":0}`} {
		code, got := postJSON(t, srv.URL+"/count_query", `{`+pmFields(t, c)+`, "uuid": "u", "query":
		  {"offset": 100, "alpha": 0.05, "start_ts": 1440658800, "end_ts": 1440745200, "sel_region": {"geometry": `+region+`}}}`)
		if code != 200 || got != want {
			t.Errorf("%d %s, want %s", code, got, want)
		}
	}
}
