package synth

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/pipeline"
	"github.com/e-mission/upc/services/pipeline/diary"
	gt "github.com/e-mission/upc/services/pipeline/groundtruth"
	"github.com/e-mission/upc/services/pm/query"
)

func generate(t *testing.T, users int, seed uint64, days ...string) (string, *Manifest) {
	t.Helper()
	out := t.TempDir()
	m, err := Generate(context.Background(), Options{Source: realdata.DirT(t), Days: days, Users: users, Seed: seed, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	return out, m
}

func TestGenerateIsDeterministicBySeed(t *testing.T) {
	a, ma := generate(t, 4, 7, "shankari_2015-08-23", "sunil_2016-07-20")
	b, _ := generate(t, 4, 7, "shankari_2015-08-23", "sunil_2016-07-20")
	c, mc := generate(t, 4, 8, "shankari_2015-08-23", "sunil_2016-07-20")
	for _, u := range ma.Users {
		for _, name := range []string{u.Name, u.Name + ".ground_truth"} {
			fa, _ := os.ReadFile(filepath.Join(a, name))
			fb, _ := os.ReadFile(filepath.Join(b, name))
			fc, _ := os.ReadFile(filepath.Join(c, name))
			if len(fa) == 0 || !bytes.Equal(fa, fb) {
				t.Errorf("%s differs between two runs with seed 7", name)
			}
			if bytes.Equal(fa, fc) {
				t.Errorf("%s is the same for seeds 7 and 8", name)
			}
		}
	}
	for _, name := range []string{ManifestName} {
		fa, _ := os.ReadFile(filepath.Join(a, name))
		fb, _ := os.ReadFile(filepath.Join(b, name))
		if !bytes.Equal(fa, fb) {
			t.Errorf("%s differs between two runs with seed 7", name)
		}
	}
	weeks := map[int]bool{}
	for i, u := range mc.Users {
		if u.Shift.Days%7 != 0 || u.Shift.Days < 7 || u.Shift.Days > 7*len(mc.Users) {
			t.Errorf("%s: shift of %d days is not 1..%d whole weeks", u.Name, u.Shift.Days, len(mc.Users))
		}
		if weeks[u.Shift.Days] {
			t.Errorf("%s: two users share a shift of %d days", u.Name, u.Shift.Days)
		}
		weeks[u.Shift.Days] = true
		if math.Abs(u.Shift.DLon) > 0.05 || math.Abs(u.Shift.DLat) > 0.05 {
			t.Errorf("%s: offset %v, %v is beyond 0.05°", u.Name, u.Shift.DLon, u.Shift.DLat)
		}
		if want := []string{"shankari_2015-08-23", "sunil_2016-07-20"}[i%2]; u.Source != want {
			t.Errorf("%s: source %s, want %s (round robin)", u.Name, u.Source, want)
		}
	}
}

func TestGenerateRefusesForeignFolder(t *testing.T) {
	out := t.TempDir()
	os.WriteFile(filepath.Join(out, "notes.txt"), []byte("mine"), 0o644)
	_, err := Generate(context.Background(), Options{Source: realdata.DirT(t), Users: 1, Out: out})
	if err == nil {
		t.Fatal("generated into a folder holding someone else's file")
	}
	if _, err := Generate(context.Background(), Options{Source: realdata.DirT(t), Users: 0, Out: t.TempDir()}); err == nil {
		t.Fatal("0 users accepted")
	}
}

// Every moved entry keeps its local date, fmt_time and lat/lng consistent
// with its moved ts and position.
func TestShiftedEntriesAreConsistent(t *testing.T) {
	const day = "shankari_2015-08-23"
	dir, m := generate(t, 1, 3, day)
	u := m.Users[0]
	orig := readEntries(t, filepath.Join(realdata.DirT(t), day))
	moved := readEntries(t, filepath.Join(dir, u.Name))
	if len(orig) != len(moved) {
		t.Fatalf("%d entries moved, %d in the source", len(moved), len(orig))
	}
	for i := range orig {
		od, md := orig[i]["data"].(map[string]any), moved[i]["data"].(map[string]any)
		if got, want := md["ts"].(float64), od["ts"].(float64)+u.Shift.Seconds(); got != want {
			t.Fatalf("entry %d: ts %v, want %v", i, got, want)
		}
		ld := md["local_dt"].(map[string]any)
		want, wantFmt, err := pipeline.LocalTime(md["ts"].(float64), ld["timezone"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if ld["year"].(float64) != float64(want.Year) || ld["day"].(float64) != float64(want.Day) || ld["hour"].(float64) != float64(want.Hour) ||
			ld["weekday"].(float64) != float64(want.Weekday) || md["fmt_time"] != wantFmt {
			t.Fatalf("entry %d: local_dt %v / %v, want %+v / %s", i, ld, md["fmt_time"], want, wantFmt)
		}
		// Whole weeks keep the weekday.
		if ld["weekday"] != od["local_dt"].(map[string]any)["weekday"] {
			t.Fatalf("entry %d: weekday changed", i)
		}
		if loc, ok := md["loc"].(map[string]any); ok {
			oc, mc := od["loc"].(map[string]any)["coordinates"].([]any), loc["coordinates"].([]any)
			if mc[0].(float64) != oc[0].(float64)+u.Shift.DLon || mc[1].(float64) != oc[1].(float64)+u.Shift.DLat {
				t.Fatalf("entry %d: loc %v, source %v, shift %+v", i, mc, oc, u.Shift)
			}
			if md["longitude"] != mc[0] || md["latitude"] != mc[1] {
				t.Fatalf("entry %d: longitude/latitude %v/%v disagree with loc %v", i, md["longitude"], md["latitude"], mc)
			}
		}
		mmd := moved[i]["metadata"].(map[string]any)
		if mmd["write_ts"].(float64) != orig[i]["metadata"].(map[string]any)["write_ts"].(float64)+u.Shift.Seconds() {
			t.Fatalf("entry %d: write_ts not moved", i)
		}
	}
}

func readEntries(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := realdata.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var es []map[string]any
	if err := json.Unmarshal(b, &es); err != nil {
		t.Fatal(err)
	}
	return es
}

// The count query over a moved polygon and window has the answer the
// manifest predicts, and the same query unmoved (in space or in time) finds
// nothing; the moved day file's own filtered locations agree with its moved
// ground truth.
func TestShiftedCountAnswersAreKnown(t *testing.T) {
	dir, m := generate(t, 6, 11, "shankari_2015-08-23", "sunil_2016-07-20", "shankari_2016-08-10")
	const half = 0.005
	for _, u := range m.Users {
		if math.Abs(u.Shift.DLon) < 2*half && math.Abs(u.Shift.DLat) < 2*half {
			t.Fatalf("%s: seed 11 gave an offset inside the test box; pick another seed", u.Name)
		}
		src := u.FirstStart
		src[0] -= u.Shift.DLon
		src[1] -= u.Shift.DLat
		cases := []struct {
			name       string
			lon, lat   float64
			start, end float64
			want       int64
		}{
			{"moved box, moved window", u.FirstStart[0], u.FirstStart[1], u.StartTs, u.EndTs, 1},
			{"source box, moved window", src[0], src[1], u.StartTs, u.EndTs, 0},
			{"moved box, source window", u.FirstStart[0], u.FirstStart[1], u.StartTs - u.Shift.Seconds(), u.EndTs - u.Shift.Seconds(), 0},
		}
		for _, c := range cases {
			t.Run(u.Name+"/"+c.name, func(t *testing.T) {
				q := count.Query{Offset: 1, Alpha: 0.5, StartTs: count.Timestamp(c.start), EndTs: count.Timestamp(c.end), SelRegion: Box(c.lon, c.lat, half)}
				got, err := CountAnswers(dir, m, q)
				if err != nil {
					t.Fatal(err)
				}
				if got[u.Name] != c.want {
					t.Errorf("answer %d, want %d", got[u.Name], c.want)
				}
				// The moved raw points agree: the day's filtered locations
				// fall in the box during the window exactly when the ground
				// truth's do.
				geom, _ := q.Validate()
				f := count.Filter(q, geom)
				f["metadata.key"] = "background/filtered_location"
				cf, err := query.Compile(f)
				if err != nil {
					t.Fatal(err)
				}
				raw := int64(0)
				for _, e := range readEntries(t, filepath.Join(dir, u.Name)) {
					if cf.Match(e) {
						raw = 1
						break
					}
				}
				if raw != c.want {
					t.Errorf("the moved day's filtered locations answer %d, want %d", raw, c.want)
				}
			})
		}
	}
}

// A moved ground truth names its moved day, and the pipeline's trips of
// each moved day match it at least approximately (the synthetic scenario's
// trips_comparison: approx): every day with a ground truth, moved twice.
func TestShiftedTripsMatchTheirGroundTruth(t *testing.T) {
	dir, m := generate(t, 12, 4242)
	for _, u := range m.Users {
		t.Run(u.Name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, u.Name+".ground_truth"))
			if err != nil {
				t.Fatal(err)
			}
			day, err := gt.Day(b)
			if err != nil || day != u.Date {
				t.Fatalf("the moved ground truth names %q (%v), want %s", day, err, u.Date)
			}
			want, err := gt.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(filepath.Join(dir, u.Name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := diary.RunFile(context.Background(), f, day)
			if err != nil {
				t.Fatal(err)
			}
			if r := gt.CompareApprox(want, got); !r.OK() {
				t.Errorf("%s (from %s, %+v): %d failed checks: %q", u.Name, u.Source, u.Shift, r.Failures(), r.FailedChecks(5))
			}
		})
	}
}
