package pipeline

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
)

func loadDay(t testing.TB, name string) (*MemStore, string) {
	t.Helper()
	f, err := realdata.Open(filepath.Join(realdata.DirT(t), name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	es, err := ReadEntries(f)
	if err != nil {
		t.Fatal(err)
	}
	const user = "test-user"
	for i := range es {
		es[i].UserID = user
	}
	st := NewMemStore()
	if err := st.Insert(context.Background(), Timeseries, es); err != nil {
		t.Fatal(err)
	}
	return st, user
}

// Every stage keeps its progress: a second run over the same data finds
// nothing new and writes nothing.
func TestSecondRunAddsNothing(t *testing.T) {
	ctx := context.Background()
	st, user := loadDay(t, "shankari_2015-08-23")
	r := &Run{Store: st, UserID: user}
	if err := r.Execute(ctx); err != nil {
		t.Fatal(err)
	}
	keys := []string{KeyRawTrip, KeyRawPlace, KeyRawSection, KeyRawStop, KeySmoothing, KeyCleanedTrip, KeyCleanedPlace, KeyCleanedSection, KeyCleanedStop, KeyRecreated}
	before := map[string]int{}
	for _, k := range keys {
		before[k] = st.Count(Timeseries, k)
	}
	if before[KeyCleanedTrip] != 3 || before[KeyRecreated] == 0 {
		t.Fatalf("first run: %v", before)
	}
	if err := r.Execute(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if n := st.Count(Timeseries, k); n != before[k] {
			t.Errorf("%s: %d after the second run, %d before", k, n, before[k])
		}
	}
	for _, s := range Stages[2:] {
		state, _ := st.State(ctx, s.Name)
		if state.LastProcessedTS == nil {
			t.Errorf("stage %s recorded no progress", s.Name)
		}
	}
}

// panicky is a fake Store (a unit-test stand-in) whose reads blow up.
type panicky struct{ *MemStore }

func (panicky) Find(context.Context, Query) ([]Entry, error) { panic("corrupt index") }

func TestStagePanicBecomesError(t *testing.T) {
	r := &Run{Store: panicky{NewMemStore()}, UserID: "u"}
	err := r.Execute(context.Background())
	if err == nil || !strings.Contains(err.Error(), "corrupt index") || !strings.Contains(err.Error(), StageUsercache) {
		t.Fatalf("Execute = %v", err)
	}
}
