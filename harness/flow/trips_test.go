package flow

import (
	"context"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pipeline"
	gt "github.com/e-mission/upc/services/pipeline/groundtruth"
)

// ranDay is a store holding the pipeline's results for a real day, as the
// pipeline service leaves them in the user's PM.
func ranDay(t *testing.T, name string) pipeline.Store {
	t.Helper()
	f, err := realdata.Open(realPath(t, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	es, err := pipeline.ReadEntries(f)
	if err != nil {
		t.Fatal(err)
	}
	const user = "u1"
	for i := range es {
		es[i].UserID = user
	}
	st := pipeline.NewMemStore()
	ctx := context.Background()
	if err := st.Insert(ctx, pipeline.Timeseries, es); err != nil {
		t.Fatal(err)
	}
	if err := (&pipeline.Run{Store: st, UserID: user, Seed: pipeline.DefaultSeed}).Execute(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// The pipeline's trips of a real day match its ground truth exactly, and a
// ground truth of another day does not.
func TestCheckTrips(t *testing.T) {
	st := ranDay(t, "shankari_2015-08-23")
	c, err := CheckTrips(context.Background(), st, realPath(t, "shankari_2015-08-23.ground_truth"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Exact || !c.Approx || c.Date != "2015-08-23" || c.Want != 3 || c.Got != 3 || len(c.Failed) != 0 {
		t.Fatalf("the day against its own ground truth: %+v", c)
	}
	// 2016-08-10's ground truth: a day on which this store has no trip.
	c, err = CheckTrips(context.Background(), st, realPath(t, "shankari_2016-08-10.ground_truth"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Exact || c.Approx || c.Got != 0 || c.Want != 5 || len(c.Failed) == 0 || c.Failed[0] != "trips: want 5, got 0" {
		t.Fatalf("another day's ground truth: %+v", c)
	}
}

// A trip perturbed while the count stays right fails the comparison that
// its change exceeds, and the check names the field.
func TestCompareTripsPerturbed(t *testing.T) {
	want, err := gt.Load(realPath(t, "shankari_2015-aug-27.ground_truth"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name          string
		perturb       func(trips []gt.Trip) []gt.Trip
		exact, approx bool
		field         string
	}{
		{"unchanged", func(ts []gt.Trip) []gt.Trip { return ts }, true, true, ""},
		{"a trip ends 10 s later", func(ts []gt.Trip) []gt.Trip { ts[3].Properties.EndTs += 10; return ts }, false, true, "trip 3: end_ts"},
		{"a trip ends 2 min later", func(ts []gt.Trip) []gt.Trip { ts[3].Properties.EndTs += 120; return ts }, false, false, "trip 3: end_ts"},
		{"a trip starts 1 km away", func(ts []gt.Trip) []gt.Trip { ts[5].Properties.StartLoc.Point[1] += 0.01; return ts }, false, false, "trip 5: start_loc"},
		{"a section in another mode", func(ts []gt.Trip) []gt.Trip {
			for i, f := range ts[2].Features {
				if f.Type == "FeatureCollection" {
					ts[2].Features[i].Features[0].Properties.SensedMode = "MotionTypes.BICYCLING"
					break
				}
			}
			return ts
		}, false, false, "sensed_mode"},
		{"a trip missing", func(ts []gt.Trip) []gt.Trip { return ts[1:] }, false, false, "trips: want 8, got 7"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := gt.Load(realPath(t, "shankari_2015-aug-27.ground_truth"))
			if err != nil {
				t.Fatal(err)
			}
			tc := CompareTrips("2015-08-27", want, c.perturb(got))
			if tc.Exact != c.exact || tc.Approx != c.approx {
				t.Fatalf("exact %v, approx %v; want %v, %v (%v)", tc.Exact, tc.Approx, c.exact, c.approx, tc.Failed)
			}
			if c.field != "" && (len(tc.Failed) == 0 || !strings.Contains(strings.Join(tc.Failed, "\n"), c.field)) {
				t.Errorf("failed checks %q do not name %q", tc.Failed, c.field)
			}
			if tc.Holds(false) != c.exact || tc.Holds(true) != c.approx {
				t.Errorf("Holds: exact %v, approx %v", tc.Holds(false), tc.Holds(true))
			}
		})
	}
}
