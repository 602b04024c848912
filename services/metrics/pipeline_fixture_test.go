package metrics

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pipeline"
)

// pipelineSections runs the Go intake pipeline on a real day and returns its
// cleaned sections, decoded from JSON as they would come from the PM.
func pipelineSections(t *testing.T, day, user string) []Section {
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
		t.Fatalf("pipeline on %s: %v", day, err)
	}
	out, err := st.Find(ctx, pipeline.Query{Keys: []string{pipeline.KeyCleanedSection}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	secs, err := DecodeSections(b)
	if err != nil {
		t.Fatal(err)
	}
	return secs
}

// TestFixtureOnPipelineOutput is e-mission's TestMetricsCleanedSections on
// the sections the Go pipeline makes of aug-27 (the second user, aug-21, is
// not in the corpus: aug-27 moved six days earlier stands in for it).
func TestFixtureOnPipelineOutput(t *testing.T) {
	user := pipelineSections(t, "shankari_2015-aug-27", "aug27")
	if len(user) != 15 {
		t.Fatalf("the pipeline made %d cleaned sections of aug-27, want 15", len(user))
	}
	other := make([]Section, len(user))
	for i, s := range user {
		s.User = `"aug21"`
		s.StartTs -= 6 * 86400
		s.StartLocalDt.Day -= 6
		other[i] = s
	}
	all := append(append([]Section{}, user...), other...)
	me := user[0].User
	if me != `"aug27"` {
		t.Fatalf("user_id decoded as %s", me)
	}

	res, err := SummarizeByTimestamp(all, 1438387200, 1441065600, "d", []string{Count}, Options{User: me, Aggregate: true})
	if err != nil {
		t.Fatal(err)
	}
	u, agg := res.UserMetrics[0], res.AggregateMetrics[0]
	if len(u) != 2 || u[0].LocalDt["day"] != 27 || u[1].LocalDt["day"] != 28 || u[0].NUsers != 1 || u[1].NUsers != 1 {
		t.Fatalf("user bins: %s", jsonOf(u))
	}
	for k, v := range map[string]any{"ON_FOOT": 3, "BICYCLING": 2, "IN_VEHICLE": 4} {
		if u[0].Modes[k] != v {
			t.Errorf("27 Aug %s = %v, want %v", k, u[0].Modes[k], v)
		}
	}
	if got := jsonOf(nUsersOf(agg)); got != "[1,1,0,0,0,0,1,1]" {
		t.Errorf("aggregate nUsers %s, want [1,1,0,0,0,0,1,1]", got)
	}

	res, err = SummarizeByLocalDate(all, DateBound{Year: ip(2015), Month: ip(8)}, DateBound{Year: ip(2015), Month: ip(9)},
		Monthly, []string{Count}, Options{User: me, Aggregate: true})
	if err != nil {
		t.Fatal(err)
	}
	u, agg = res.UserMetrics[0], res.AggregateMetrics[0]
	if len(u) != 1 || u[0].NUsers != 1 || len(agg) != 1 || agg[0].NUsers != 2 {
		t.Fatalf("monthly: %s / %s", jsonOf(u), jsonOf(agg))
	}
	for k, v := range map[string]any{"ON_FOOT": 5, "BICYCLING": 4, "IN_VEHICLE": 5} {
		if u[0].Modes[k] != v {
			t.Errorf("August %s = %v, want %v", k, u[0].Modes[k], v)
		}
	}
}

func nUsersOf(ss []Summary) []int {
	out := make([]int, len(ss))
	for i, s := range ss {
		out[i] = s.NUsers
	}
	return out
}
