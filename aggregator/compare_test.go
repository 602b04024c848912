package aggregator

import (
	"math"
	"strings"
	"testing"
	"time"
)

// TestCompare: each run is compared with the bridge run of as many users
// started nearest to it, and the table and figures name every path.
func TestCompare(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	run := func(users int, mode string, pool int, at time.Duration, wall float64) *Result {
		r := &Result{Users: users, NumberParticipants: users, NetworkMode: mode, Started: t0.Add(at), WallMS: wall,
			Phases: []PhaseStat{{Phase: PhasePM, N: users, MedianMS: 1200, P95MS: 3400}}}
		if pool > 0 {
			r.PoolFill = &PoolFill{Size: pool, FillMS: 5000, Claimed: pool}
		}
		return r
	}
	runs := []*Result{
		run(256, "host", 256, 0, 50_000),
		run(256, "bridge", 0, 2*time.Minute, 100_000),
		run(256, "bridge", 0, 20*time.Minute, 200_000),
		run(256, "host", 0, 22*time.Minute, 100_000),
		run(6, "host", 0, 30*time.Minute, 1_000),
	}
	got := map[string]float64{}
	for _, c := range Compare(runs, Baseline) {
		got[c.Path()+c.Started.Format("1504")] = c.Ratio
	}
	for k, want := range map[string]float64{"host+pool0000": 0.5, "bridge0002": 1, "bridge0020": 1, "host0022": 0.5} {
		if got[k] != want {
			t.Errorf("%s: ratio %v, want %v", k, got[k], want)
		}
	}
	if r := got["host0030"]; !math.IsNaN(r) {
		t.Errorf("6 users without a bridge run: ratio %v, want none", r)
	}
	md := string(CompareMarkdown(runs, Baseline))
	for _, w := range []string{"| 256 | host+pool |", "**0.50**", "5.0 s, busy 0.0 s", "1 200 / 3 400"} {
		if !strings.Contains(md, w) {
			t.Errorf("table lacks %q:\n%s", w, md)
		}
	}
	wall, phases, err := CompareFigures(runs, Baseline)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []interface{ SVG() ([]byte, error) }{wall, phases} {
		svg, err := f.SVG()
		if err != nil || !strings.Contains(string(svg), "host+pool") {
			t.Errorf("figure: %v, names host+pool: %v", err, strings.Contains(string(svg), "host+pool"))
		}
	}
}

// TestCompareLabels: runs given labels (two versions on one path) are
// compared under them, against the labelled baseline.
func TestCompareLabels(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	run := func(label string, at time.Duration, wall float64) *Result {
		return &Result{Users: 256, NumberParticipants: 256, NetworkMode: "host", PoolFill: &PoolFill{Size: 256}, Label: label,
			Started: t0.Add(at), WallMS: wall}
	}
	runs := []*Result{run("before", 0, 56_000), run("after", time.Minute, 42_000), run("after", 3*time.Minute, 40_000), run("before", 4*time.Minute, 50_000)}
	var order []string
	for _, c := range Compare(runs, "before") {
		order = append(order, c.Path())
		if c.Path() == "after" {
			want := map[float64]float64{42_000: 42.0 / 56, 40_000: 40.0 / 50}[c.WallMS]
			if math.Abs(c.Ratio-want) > 1e-9 {
				t.Errorf("after, %.0f ms: ratio %v, want %v (the nearest before)", c.WallMS, c.Ratio, want)
			}
		}
	}
	if strings.Join(order, ",") != "before,before,after,after" {
		t.Errorf("order %v, want the baseline first", order)
	}
	md := string(CompareMarkdown(runs, "before"))
	for _, w := range []string{"wall / before", "| 256 | after |", "**0.75**", "**0.80**"} {
		if !strings.Contains(md, w) {
			t.Errorf("table lacks %q:\n%s", w, md)
		}
	}
}
