package pipeline

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// realExamples finds shared/data/real_examples by walking up from the test's
// directory (the repository sits beside shared/).
func realExamples(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		for _, c := range []string{filepath.Join(d, "shared", "data", "real_examples"), filepath.Join(d, "..", "shared", "data", "real_examples")} {
			if st, err := os.Stat(c); err == nil && st.IsDir() {
				return c
			}
		}
		if filepath.Dir(d) == d {
			t.Fatalf("shared/data/real_examples not found above %s", dir)
		}
	}
}

func loadDay(t testing.TB, name string) (*MemStore, string) {
	t.Helper()
	f, err := os.Open(filepath.Join(realExamples(t), name))
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

type gtTrip struct {
	Properties struct {
		StartTS      float64 `json:"start_ts"`
		EndTS        float64 `json:"end_ts"`
		StartFmtTime string  `json:"start_fmt_time"`
		EndFmtTime   string  `json:"end_fmt_time"`
	} `json:"properties"`
	Features []struct {
		Type     string `json:"type"`
		Features []struct {
			Properties struct {
				StartFmtTime string    `json:"start_fmt_time"`
				EndFmtTime   string    `json:"end_fmt_time"`
				SensedMode   string    `json:"sensed_mode"`
				Speeds       []float64 `json:"speeds"`
			} `json:"properties"`
		} `json:"features"`
	} `json:"features"`
}

func TestDebugTrips(t *testing.T) {
	day := os.Getenv("DAY")
	if day == "" {
		t.Skip("debug helper: set DAY")
	}
	st, user := loadDay(t, day)
	r := &Run{Store: st, UserID: user}
	if err := r.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	es, _ := st.Find(context.Background(), Query{Keys: []string{KeyRawTrip, KeyRawUntracked}, Field: "data.start_ts"})
	secs, _ := st.Find(context.Background(), Query{Keys: []string{KeyRawSection}, Field: "data.start_ts"})
	for _, e := range es {
		tr, _ := Decode[Trip](e)
		t.Logf("%s %s -> %s  %.3f %.3f", e.Metadata.Key, tr.StartFmtTime, tr.EndFmtTime, tr.StartTS, tr.EndTS)
		for _, se := range secs {
			s, _ := Decode[Section](se)
			if s.TripID == e.ID {
				t.Logf("     sec %s -> %s %s", s.StartFmtTime, s.EndFmtTime, MotionTypeName(s.SensedMode))
			}
		}
	}
	b, _ := os.ReadFile(filepath.Join(realExamples(t), day+".ground_truth"))
	var gt struct{ Data []gtTrip }
	_ = json.Unmarshal(b, &gt)
	for _, g := range gt.Data {
		t.Logf("GT %s -> %s  %.3f %.3f", g.Properties.StartFmtTime, g.Properties.EndFmtTime, g.Properties.StartTS, g.Properties.EndTS)
		for _, f := range g.Features {
			if f.Type == "FeatureCollection" {
				p := f.Features[0].Properties
				t.Logf("     sec %s -> %s %s %d", p.StartFmtTime, p.EndFmtTime, p.SensedMode, len(p.Speeds))
			}
		}
	}
}
