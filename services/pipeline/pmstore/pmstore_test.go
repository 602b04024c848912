package pmstore

import (
	"context"
	"errors"
	"testing"

	"github.com/e-mission/upc/services/internal/testpm"
	"github.com/e-mission/upc/services/pipeline"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// startPM runs a real PM, claimed and unsealed by its owner, and returns
// the owner's client.
func startPM(t *testing.T) *pmclient.Client {
	t.Helper()
	return testpm.Start(t, store.Options{}, "pipeline").C
}

func loc(id string, ts, wts float64) pipeline.Entry {
	return pipeline.Entry{ID: id, UserID: "u", Metadata: pipeline.Metadata{Key: pipeline.KeyFilteredLocation, WriteTS: wts},
		Data: &pipeline.Location{TS: ts, Latitude: 37, Longitude: -122, Loc: pipeline.NewPoint(-122, 37)}}
}

// Against a real PM: raw and analysis entries go to their e-mission
// collections, queries range and sort on the asked field across both, and
// updates, invalidation, deletion and stage state behave as the pipeline
// expects.
func TestStoreAgainstPM(t *testing.T) {
	ctx := context.Background()
	c := startPM(t)
	s := New(c, "u")
	trip := pipeline.Entry{ID: "5f3c1f1a6fdd481ea67f2668", UserID: "u", Metadata: pipeline.Metadata{Key: pipeline.KeyRawTrip, WriteTS: 9},
		Data: &pipeline.Trip{StartTS: 15, EndTS: 25}}
	es := []pipeline.Entry{loc("55d9ff5d7d65cb39ee985317", 30, 1), loc("55d9ff5d7d65cb39ee985318", 10, 2), loc("55d9ff5d7d65cb39ee985319", 20, 3), trip}
	if err := s.Insert(ctx, pipeline.Timeseries, es); err != nil {
		t.Fatal(err)
	}
	for coll, want := range map[string]int64{api.Timeseries: 3, api.AnalysisTimeseries: 1} {
		n, err := c.Count(ctx, pmclient.FindRequest{Database: api.DefaultDatabase, Collection: coll, Filter: map[string]any{}})
		if err != nil || n != want {
			t.Errorf("%s holds %d (%v), want %d", coll, n, err, want)
		}
	}
	lo, hi := 10.0, 20.0
	got, err := s.Find(ctx, pipeline.Query{Keys: []string{pipeline.KeyFilteredLocation}, Field: pipeline.FieldTS, Start: &lo, End: &hi})
	if err != nil || len(got) != 2 || got[0].ID != "55d9ff5d7d65cb39ee985318" || got[1].ID != "55d9ff5d7d65cb39ee985319" {
		t.Fatalf("range on data.ts: %v %v", got, err)
	}
	l, err := pipeline.Decode[pipeline.Location](got[0])
	if err != nil || l.TS != 10 || l.Loc.Coordinates != [2]float64{-122, 37} {
		t.Fatalf("decoded %+v %v", l, err)
	}
	all, err := s.Find(ctx, pipeline.Query{Field: pipeline.FieldWriteTS})
	if err != nil || len(all) != 4 || all[0].Metadata.WriteTS != 1 || all[3].ID != trip.ID {
		t.Fatalf("both collections by write_ts: %v %v", all, err)
	}
	// invalid entries disappear from queries
	got[0].Invalid = true
	if err := s.Update(ctx, pipeline.Timeseries, got[0]); err != nil {
		t.Fatal(err)
	}
	if rest, _ := s.Find(ctx, pipeline.Query{Keys: []string{pipeline.KeyFilteredLocation}}); len(rest) != 2 {
		t.Errorf("after invalidation %d locations, want 2", len(rest))
	}
	if err := s.Update(ctx, pipeline.Timeseries, loc("000000000000000000000000", 1, 1)); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("update of unknown id: %v", err)
	}
	if err := s.Delete(ctx, pipeline.Timeseries, []string{trip.ID}); err != nil {
		t.Fatal(err)
	}
	if trips, _ := s.Find(ctx, pipeline.Query{Keys: []string{pipeline.KeyRawTrip}}); len(trips) != 0 {
		t.Errorf("deleted trip still found")
	}
	st, err := s.State(ctx, pipeline.StageTrips)
	if err != nil || st.LastProcessedTS != nil {
		t.Fatalf("fresh state %+v %v", st, err)
	}
	v := 42.5
	for _, x := range []float64{41, v} { // upsert, then update
		x := x
		if err := s.SetState(ctx, pipeline.State{Stage: pipeline.StageTrips, LastProcessedTS: &x, LastTSRun: 7}); err != nil {
			t.Fatal(err)
		}
	}
	st, err = s.State(ctx, pipeline.StageTrips)
	if err != nil || st.LastProcessedTS == nil || *st.LastProcessedTS != v || st.LastTSRun != 7 {
		t.Fatalf("state %+v %v", st, err)
	}
	if other, _ := New(c, "someone else").State(ctx, pipeline.StageTrips); other.LastProcessedTS != nil {
		t.Error("state leaks across users")
	}
}
