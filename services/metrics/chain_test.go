package metrics

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pipeline"
	"github.com/e-mission/upc/services/pipeline/pmstore"
)

// TestChainThroughPM is the user's whole flow on a real PM: the raw aug-27
// day goes into the PM, the pipeline runs over the PM (pmstore, as the
// pipeline service does), then the metrics service answers from what the
// pipeline left there.
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
		es[i].UserID = "aug27"
	}
	ctx := context.Background()
	st := pmstore.New(c, "aug27")
	if err := st.Insert(ctx, pipeline.Timeseries, es); err != nil {
		t.Fatal(err)
	}
	if err := (&pipeline.Run{Store: st, UserID: "aug27", Seed: pipeline.DefaultSeed}).Execute(ctx); err != nil {
		t.Fatal(err)
	}
	url := startMetrics(t)
	code, got := postJSON(t, url+"/metrics/local_date", `{`+pmFields(t, c)+`, "uuid": "aug27",
	 "start_time": {"year": 2015, "month": 8, "timezone": "America/Los_Angeles"},
	 "end_time": {"year": 2015, "month": 9, "timezone": "America/Los_Angeles"},
	 "freq": "MONTHLY", "metric": "count",
	 "offset": {"ON_FOOT": 1e6, "BICYCLING": 1e6, "IN_VEHICLE": 1e6, "CAR": 1e6},
	 "alpha": {"CAR": 0.05, "ON_FOOT": 0.05, "BICYCLING": 0.05, "IN_VEHICLE": 0.05}}`)
	if code != 200 || got != `{"success":true,"results":{"BICYCLING":4,"CAR":0,"IN_VEHICLE":5,"ON_FOOT":5}}` {
		t.Fatalf("%d %s", code, got)
	}
}
