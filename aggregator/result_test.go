package aggregator

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/dp"
	"github.com/e-mission/upc/internal/plot/plottest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// sample is a hand-made result (no run): the goldens pin the published
// shape, the original's fields first, and that no per-user answer appears.
func sample(kind string) *Result {
	seed := uint64(42)
	r := &Result{
		Query: kind, Epsilon: 0.0299573, Noise: Central, Seed: &seed, Users: 4, NoBudget: 1, Failed: 1,
		NumberParticipants: 2, Parallel: 2, Upload: UploadBatch, Run: "seed-42",
		Command: "upc aggregate count --data users --query q.json --experiment-seed 42", LoadAverage: "1.00 2.00 3.00",
		Started: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC), WallMS: 12345.678,
		PerUser: []UserResult{
			{File: "user-0001", ID: "u1", Status: Answered, Entries: 413, Trips: 3, PrivacyCost: 0.0299573,
				PhasesMS: map[string]float64{PhasePM: 900, PhaseUpload: 60, PhasePipeline: 400, PhaseQuery: 30, PhaseCleanup: 200},
				LaunchMS: map[string]float64{"pm": 800, "pipeline": 850, "count": 870}, EndMS: 1600},
			{File: "user-0002", ID: "u2", Status: Answered, Entries: 1000, Trips: 2, PrivacyCost: 0.0299573,
				PhasesMS: map[string]float64{PhasePM: 1100, PhaseUpload: 80, PhasePipeline: 500, PhaseQuery: 40, PhaseCleanup: 250},
				LaunchMS: map[string]float64{"pm": 1000, "pipeline": 990, "count": 1020}, EndMS: 3600},
			{File: "user-0003", ID: "u3", Status: NoBudget, Phase: PhaseQuery, Error: "the user's privacy budget cannot pay for the query",
				PhasesMS: map[string]float64{PhasePM: 1000, PhaseUpload: 70, PhasePipeline: 450, PhaseQuery: 35, PhaseCleanup: 220}, EndMS: 5000},
			{File: "user-0004", ID: "u4", Status: Failed, Phase: PhaseUpload, Error: "day file: want a JSON array | of entries",
				PhasesMS: map[string]float64{PhaseCleanup: 0}, EndMS: 5100},
		},
	}
	switch kind {
	case Count:
		r.NoisyTotal, r.ActualTotal = int64(3), int64(2)
	case Metrics:
		r.NoisyTotal = map[string]float64{"CAR": 3.25, "WALK": 0}
		r.ActualTotal = map[string]float64{"CAR": 4, "WALK": 1}
		r.EpsilonByMode = map[string]float64{"CAR": 0.04, "WALK": 0.04}
	}
	r.Phases = phaseStats(r.PerUser)
	return r
}

func TestResultGoldens(t *testing.T) {
	for _, kind := range []string{Count, Metrics} {
		t.Run(kind, func(t *testing.T) {
			r := sample(kind)
			j, err := r.JSON()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, kind+".result.json", j)
			golden(t, kind+".result.md", r.Markdown())
			dir := t.TempDir()
			if err := r.Write(dir); err != nil {
				t.Fatal(err)
			}
			svg, err := os.ReadFile(filepath.Join(dir, "phases.svg"))
			if err != nil {
				t.Fatal(err)
			}
			pdf, err := os.ReadFile(filepath.Join(dir, "phases.pdf"))
			if err != nil {
				t.Fatal(err)
			}
			st, err := plottest.SVGText(svg)
			if err != nil {
				t.Fatalf("phases.svg: %v", err)
			}
			pt, err := plottest.PDFText(pdf)
			if err != nil {
				t.Fatalf("phases.pdf: %v", err)
			}
			for _, want := range append([]string{"Per-user phases (4 users, parallel 2)", "user-0001"}, Phases...) {
				if !strings.Contains(st, want) || !strings.Contains(pt, plottest.PDFString(want)) {
					t.Errorf("the phases figure lacks %q", want)
				}
			}
		})
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestPhaseStats(t *testing.T) {
	st := phaseStats(sample(Count).PerUser)
	byName := map[string]PhaseStat{}
	for _, s := range st {
		byName[s.Phase] = s
	}
	pm := byName[PhasePM]
	if pm.N != 3 || pm.MinMS != 900 || pm.MedianMS != 1000 || pm.MaxMS != 1100 || pm.MeanMS != 1000 {
		t.Errorf("pm phase: %+v", pm)
	}
	if c := byName[PhaseCleanup]; c.N != 4 || c.MinMS != 0 {
		t.Errorf("cleanup phase: %+v", c)
	}
	if l := byName["launch:count"]; l.N != 2 || l.MaxMS != 1020 {
		t.Errorf("count launch: %+v", l)
	}
}

// A seeded run that is told no run id nor user ids gives each day file the
// id UserIDFor names, so the harness can find the users' storage again.
func TestSeededUserIDs(t *testing.T) {
	seed := uint64(1127)
	o := Options{Seed: &seed}
	o.setDefaults()
	if o.RunID != SeedRunID(seed) {
		t.Errorf("run id %q, want %q", o.RunID, SeedRunID(seed))
	}
	for _, f := range []string{"0001-a.json", "0002-b.json.gz"} {
		if got, want := o.UserID(f), UserIDFor(SeedRunID(seed), f); got != want {
			t.Errorf("user id of %s = %s, want %s", f, got, want)
		}
	}
	if UserIDFor(SeedRunID(1), "f") == UserIDFor(SeedRunID(2), "f") {
		t.Error("two seeds give one user id")
	}
}

// Seeded metrics noise is the same on every call: each mode's draw does not
// depend on a map's iteration order.
func TestSeededMetricsNoiseRepeats(t *testing.T) {
	totals := map[string]float64{"BICYCLING": 93, "IN_VEHICLE": 156, "ON_FOOT": 189, "UNKNOWN": 4}
	eps := Epsilons{Sensitivity: map[string]float64{"BICYCLING": 10, "IN_VEHICLE": 10, "ON_FOOT": 10},
		ByMode: map[string]float64{"BICYCLING": 0.3, "IN_VEHICLE": 0.3, "ON_FOOT": 0.3}}
	first, err := metricsNoise(dp.New(dp.WithSeed(1128)), totals, eps)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		got, err := metricsNoise(dp.New(dp.WithSeed(1128)), totals, eps)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, first) {
			t.Fatalf("seeded metrics noise differs between calls: %v, then %v", first, got)
		}
	}
}
