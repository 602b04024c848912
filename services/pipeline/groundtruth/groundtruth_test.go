package groundtruth

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
)

var days = []string{
	"shankari_2015-aug-27",
	"shankari_2016-06-20",
	"shankari_2016-08-10",
	"shankari_2015-08-23",
	"iphone_3_2016-02-22",
	"sunil_2016-07-20",
}

func load(t *testing.T, day string) []Trip {
	t.Helper()
	trips, err := Load(filepath.Join(realdata.DirT(t), day+".ground_truth"))
	if err != nil {
		t.Fatal(err)
	}
	return trips
}

func TestLoad(t *testing.T) {
	wantTrips := map[string]int{
		"shankari_2015-aug-27": 8, "shankari_2016-06-20": 6, "shankari_2016-08-10": 5,
		"shankari_2015-08-23": 3, "iphone_3_2016-02-22": 9, "sunil_2016-07-20": 2,
	}
	for _, day := range days {
		t.Run(day, func(t *testing.T) {
			trips := load(t, day)
			if len(trips) != wantTrips[day] {
				t.Fatalf("got %d trips, want %d", len(trips), wantTrips[day])
			}
			for i, tr := range trips {
				if tr.Properties.StartTs == 0 || len(tr.Properties.StartLoc.Point) != 2 || len(tr.Features) < 3 {
					t.Errorf("trip %d decoded incompletely: %+v", i, tr.Properties)
				}
			}
		})
	}
	t.Run("null is an empty day", func(t *testing.T) {
		trips, err := Load("testdata/empty_day.ground_truth")
		if err != nil || trips == nil || len(trips) != 0 {
			t.Fatalf("Load(null) = %v, %v; want empty non-nil list", trips, err)
		}
	})
	for _, bad := range []string{"not_trips.json", "truncated.json", "string.json", "missing.json"} {
		t.Run("invalid "+bad, func(t *testing.T) {
			if _, err := Load(filepath.Join("testdata", bad)); err == nil {
				t.Fatal("expected an error")
			}
		})
	}
}

// A ground truth matches itself, also after a JSON round trip of our types
// (which is how a pipeline result reaches the comparison).
func TestSelfComparison(t *testing.T) {
	for _, day := range days {
		t.Run(day, func(t *testing.T) {
			want := load(t, day)
			b, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range []Report{CompareExact(want, got), CompareApprox(want, got)} {
				if !r.OK() {
					var buf bytes.Buffer
					r.Write(&buf)
					t.Fatalf("%s self-comparison failed:\n%s", r.Mode, buf.String())
				}
				if r.Failures() != 0 {
					t.Fatalf("%d failures in a passing report", r.Failures())
				}
			}
		})
	}
}

func firstSection(t *testing.T, tr *Trip) *Feature {
	t.Helper()
	for i := range tr.Features {
		if tr.Features[i].Type == "FeatureCollection" {
			return &tr.Features[i].Features[0]
		}
	}
	t.Fatal("trip has no section")
	return nil
}

func ptr[T any](v T) *T { return &v }

// Each mutation of aug-27's ground truth must fail the exact comparison, and
// the approximate one exactly when it exceeds the fuzz. failField names a
// check that must appear among the failures.
func TestMutations(t *testing.T) {
	// 150 m and 50 m north in degrees of latitude (R = 6371 km).
	const deg150m, deg50m = 150 / 111194.93, 50 / 111194.93
	cases := []struct {
		name       string
		mutate     func(t *testing.T, trips []Trip) []Trip
		approxOK   bool
		failField  string
		checkCount int // minimum failed checks in the exact comparison
	}{
		{"start_ts shifted by 1 ms", func(t *testing.T, ts []Trip) []Trip { ts[2].Properties.StartTs += 0.001; return ts }, true, "start_ts", 1},
		{"end_ts shifted by 61 s", func(t *testing.T, ts []Trip) []Trip { ts[3].Properties.EndTs += 61; return ts }, false, "end_ts", 1},
		{"start_loc moved 150 m", func(t *testing.T, ts []Trip) []Trip { ts[1].Properties.StartLoc.Point[1] += deg150m; return ts }, false, "start_loc", 1},
		{"end_loc moved 50 m", func(t *testing.T, ts []Trip) []Trip { ts[1].Properties.EndLoc.Point[1] += deg50m; return ts }, true, "end_loc", 1},
		{"distance off by 0.006 m", func(t *testing.T, ts []Trip) []Trip { ts[0].Properties.Distance += 0.006; return ts }, true, "distance", 1},
		{"distance off by 101 m", func(t *testing.T, ts []Trip) []Trip { ts[0].Properties.Distance += 101; return ts }, false, "distance", 1},
		{"section dropped", func(t *testing.T, ts []Trip) []Trip {
			f := ts[4].Features
			ts[4].Features = f[:len(f)-1]
			return ts
		}, false, "len(features)", 1},
		{"sensed_mode changed", func(t *testing.T, ts []Trip) []Trip {
			s := firstSection(t, &ts[5])
			s.Properties.SensedMode = "MotionTypes.AIR_OR_HSR"
			return ts
		}, false, "sensed_mode", 1},
		{"section start_fmt_time changed", func(t *testing.T, ts []Trip) []Trip {
			s := firstSection(t, &ts[0])
			s.Properties.StartFmtTime = ptr(*s.Properties.StartFmtTime + "x")
			return ts
		}, true, "start_fmt_time", 1},
		{"place exit_fmt_time changed", func(t *testing.T, ts []Trip) []Trip {
			ts[6].Features[0].Properties.ExitFmtTime = ptr("2015-08-27T00:00:00-07:00")
			return ts
		}, true, "exit_fmt_time", 1},
		{"place enter_fmt_time removed", func(t *testing.T, ts []Trip) []Trip {
			ts[6].Features[1].Properties.EnterFmtTime = nil
			return ts
		}, false, "enter_fmt_time", 1},
		{"place exit_ts shifted by 2 minutes", func(t *testing.T, ts []Trip) []Trip {
			*ts[6].Features[0].Properties.ExitTs += 120
			return ts
		}, false, "exit_ts", 0},
		{"one resampled point dropped", func(t *testing.T, ts []Trip) []Trip {
			s := firstSection(t, &ts[7])
			s.Properties.Speeds = s.Properties.Speeds[1:]
			s.Geometry.Line = s.Geometry.Line[1:]
			return ts
		}, true, "len(coordinates)", 2},
		{"three resampled points dropped", func(t *testing.T, ts []Trip) []Trip {
			s := firstSection(t, &ts[7])
			s.Properties.Speeds = s.Properties.Speeds[3:]
			return ts
		}, false, "len(speeds)", 1},
		{"trip dropped", func(t *testing.T, ts []Trip) []Trip { return append(ts[:3], ts[4:]...) }, false, "", 1},
		{"feature type changed", func(t *testing.T, ts []Trip) []Trip {
			ts[2].Features[2] = Feature{Type: "Feature", Properties: &FeatureProps{FeatureType: "stop"}}
			return ts
		}, false, "type", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := load(t, "shankari_2015-aug-27")
			got := tc.mutate(t, load(t, "shankari_2015-aug-27"))
			exact := CompareExact(want, got)
			// A mutation of exit_ts alone is invisible to the exact
			// comparison (it reads exit_fmt_time), as in e-mission.
			if tc.checkCount > 0 && exact.OK() {
				t.Fatalf("exact comparison passed a mutated day")
			}
			if exact.Failures() < tc.checkCount {
				t.Errorf("exact: %d failures, want ≥ %d", exact.Failures(), tc.checkCount)
			}
			approx := CompareApprox(want, got)
			if approx.OK() != tc.approxOK {
				var buf bytes.Buffer
				approx.Write(&buf)
				t.Fatalf("approx OK = %v, want %v\n%s", approx.OK(), tc.approxOK, buf.String())
			}
			var buf bytes.Buffer
			if err := exact.Write(&buf); err != nil {
				t.Fatal(err)
			}
			if !approx.OK() {
				approx.Write(&buf)
			}
			text := buf.String()
			if tc.failField != "" && !strings.Contains(text, tc.failField+": want ") {
				t.Errorf("report does not name the failing field %s:\n%s", tc.failField, text)
			}
			if !strings.Contains(text, "FAIL") {
				t.Errorf("report does not say FAIL:\n%s", text)
			}
		})
	}
}

func TestWriteNamesTripsAndFeatures(t *testing.T) {
	want := load(t, "shankari_2015-08-23")
	got := load(t, "shankari_2015-08-23")
	firstSection(t, &got[1]).Properties.SensedMode = "MotionTypes.BICYCLING"
	var buf bytes.Buffer
	r := CompareExact(want, got)
	if err := r.Write(&buf); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, s := range []string{
		"exact comparison: FAIL (1 failed checks)",
		"ok   trips: want 3, got 3",
		"ok   trip 0: 2015-08-23T09:45:54.303000-07:00 → 2015-08-23T09:59:04.081000-07:00",
		"FAIL trip 1:",
		"sensed_mode: want MotionTypes.",
		"got MotionTypes.BICYCLING",
		"start_place",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("report lacks %q:\n%s", s, text)
		}
	}
}

// BenchmarkCompare compares aug-27's ground truth (8 trips, 15 sections)
// with itself, both ways, report included.
func BenchmarkCompare(b *testing.B) {
	want, err := Load(filepath.Join(realdata.DirT(b), "shankari_2015-aug-27.ground_truth"))
	if err != nil {
		b.Fatal(err)
	}
	got, _ := Load(filepath.Join(realdata.DirT(b), "shankari_2015-aug-27.ground_truth"))
	reportCPU(b, func() {
		if !CompareExact(want, got).OK() || !CompareApprox(want, got).OK() {
			b.Fatal("self comparison failed")
		}
	})
}

// Python's assertAlmostEqual(places=2) at its boundary (values checked with
// CPython's round).
func TestPlaces2(t *testing.T) {
	for _, tc := range []struct {
		w, g float64
		ok   bool
	}{{1, 1.005, true}, {0, 0.005, false}, {0, 0.0049, true}, {0.006, 0, false}, {12345.678, 12345.6749, true}} {
		var c checker
		c.places2("distance", tc.w, tc.g)
		if c.checks[0].OK != tc.ok {
			t.Errorf("places2(%v, %v) = %v, want %v", tc.w, tc.g, c.checks[0].OK, tc.ok)
		}
	}
}

// Day reads the day from metadata.key, else from the first trip.
func TestDay(t *testing.T) {
	b, err := realdata.ReadFile(filepath.Join(realdata.DirT(t), "sunil_2016-07-20.ground_truth"))
	if err != nil {
		t.Fatal(err)
	}
	if d, err := Day(b); err != nil || d != "2016-07-20" {
		t.Errorf("Day = %q, %v; want 2016-07-20", d, err)
	}
	trips, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	bare, err := json.Marshal(trips)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := Day(bare); err != nil || d != "2016-07-20" {
		t.Errorf("Day of the bare trip array = %q, %v; want the first trip's 2016-07-20", d, err)
	}
	if _, err := Day([]byte("null")); err == nil {
		t.Error("a day without key or trips")
	}
}

// FailedChecks names the failed checks, at most n and a count of the rest.
func TestFailedChecks(t *testing.T) {
	want := load(t, "shankari_2015-aug-27")
	got := load(t, "shankari_2015-aug-27")
	if fc := CompareExact(want, got).FailedChecks(3); len(fc) != 0 {
		t.Errorf("equal trips: %q", fc)
	}
	got = got[:7]
	for i := range got {
		got[i].Properties.EndTs += 1
	}
	fc := CompareExact(want, got).FailedChecks(3)
	if len(fc) != 4 || fc[0] != "trips: want 8, got 7" || !strings.HasPrefix(fc[1], "trip 0: end_ts: want ") || fc[3] != "… and 5 more" {
		t.Errorf("failed checks %q", fc)
	}
}
