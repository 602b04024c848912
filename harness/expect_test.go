package harness

import (
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/harness/scenario"
)

func TestEvaluate(t *testing.T) {
	trips := func(n int) *int { return &n }
	ok := report.User{Name: "a", Status: report.OK, ExpectedTrips: 8, TripsFound: trips(8), Steps: []report.Step{
		{Name: "launch", Status: report.OK, DurationMS: 300}, {Name: "compare", Status: report.OK}},
		GroundTruth: &report.TripCheck{Date: "2015-08-27", Want: 8, Got: 8, Exact: true, Approx: true}}
	slow := report.User{Name: "b", Status: report.OK, ExpectedTrips: 3, TripsFound: trips(2), Steps: []report.Step{
		{Name: "launch", Status: report.OK, DurationMS: 1500}, {Name: "compare", Status: report.OK}},
		GroundTruth: &report.TripCheck{Date: "2015-08-23", Want: 3, Got: 2, ExactFailures: 1, ApproxFailures: 1, Failed: []string{"trips: want 3, got 2"}}}
	failed := report.User{Name: "c", Status: report.Failed, Error: "compare: 3 entries differ", ExpectedTrips: 5, Steps: []report.Step{
		{Name: "launch", Status: report.OK, DurationMS: 200}, {Name: "compare", Status: report.Failed}}}
	all := scenario.Expectations{EveryStepSucceeds: true, Lossless: true, TripsMatchGroundTruth: true,
		MaxLaunch: scenario.Duration(time.Second), NothingLeftRunning: true}
	clean := report.Leftovers{Checked: true}
	dirty := report.Leftovers{Checked: true, Volumes: []string{"upc-x-data"}}

	cases := []struct {
		name  string
		users []report.User
		left  report.Leftovers
		held  map[string]bool
		says  []string
	}{
		{"all hold", []report.User{ok}, clean, map[string]bool{"every_step_succeeds": true, "lossless": true, "trips_match_ground_truth": true, "max_launch": true, "nothing_left_running": true}, nil},
		{"each fails", []report.User{ok, slow, failed}, dirty,
			map[string]bool{"every_step_succeeds": false, "lossless": false, "trips_match_ground_truth": false, "max_launch": false, "nothing_left_running": false},
			[]string{"1 of 3 users failed: c (compare: 3 entries differ)", "2 of 3 compares", "b: 2 trips, ground truth 3, no match (exact: 1, approx: 1 failed checks) (trips: want 3, got 2)", "c: no pipeline result", "over: b 1500 ms", "1 volumes"}},
		{"no users", nil, report.Leftovers{}, map[string]bool{"every_step_succeeds": false, "lossless": false, "trips_match_ground_truth": false, "max_launch": false, "nothing_left_running": false},
			[]string{"no user ran", "could not be listed"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checks := Evaluate(all, c.users, c.left)
			if len(checks) != 5 {
				t.Fatalf("%d checks", len(checks))
			}
			var text []string
			for _, ch := range checks {
				if ch.Held != c.held[ch.Name] {
					t.Errorf("%s held=%v, want %v (%s)", ch.Name, ch.Held, c.held[ch.Name], ch.Detail)
				}
				text = append(text, ch.Detail)
			}
			joined := strings.Join(text, "\n")
			for _, s := range c.says {
				if !strings.Contains(joined, s) {
					t.Errorf("details lack %q:\n%s", s, joined)
				}
			}
		})
	}
	if got := Evaluate(scenario.Expectations{}, []report.User{ok}, clean); len(got) != 0 {
		t.Errorf("no expectations set, got %v", got)
	}
}

// The trips are compared one by one, not counted: the right number of trips
// with one that ends elsewhere fails; a difference within e-mission's
// approximate tolerances passes only where the scenario accepts it.
func TestEvaluateTrips(t *testing.T) {
	user := func(c report.TripCheck) []report.User {
		n := c.Got
		return []report.User{{Name: "u", Status: report.OK, ExpectedTrips: c.Want, TripsFound: &n, GroundTruth: &c}}
	}
	moved := report.TripCheck{Date: "2015-08-23", Want: 3, Got: 3, ExactFailures: 2, ApproxFailures: 1,
		Failed: []string{"trip 1: end_loc: want [-122.08 37.39], got [-122.07 37.39] (880.2 m away)"}}
	nudged := report.TripCheck{Date: "2015-08-23", Want: 3, Got: 3, ExactFailures: 1, Approx: true,
		Failed: []string{"trip 1: end_ts: want 1440348903.2, got 1440348913.2"}}
	exact := scenario.Expectations{TripsMatchGroundTruth: true, TripsComparison: scenario.TripsExact}
	approx := scenario.Expectations{TripsMatchGroundTruth: true, TripsComparison: scenario.TripsApprox}
	for _, c := range []struct {
		name string
		e    scenario.Expectations
		tc   report.TripCheck
		held bool
		says string
	}{
		{"a moved trip fails the exact check", exact, moved, false, "u: 3 trips, ground truth 3, no match (exact: 2, approx: 1 failed checks) (trip 1: end_loc"},
		{"a moved trip fails the approximate check", approx, moved, false, "0 of 1 users' trips match the ground truth at least approximately"},
		{"a nudged trip fails the exact check", exact, nudged, false, "approx (exact: 1 failed checks)"},
		{"a nudged trip passes the approximate check", approx, nudged, true, "1 of 1 users' trips match the ground truth at least approximately, trip by trip"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Evaluate(c.e, user(c.tc), report.Leftovers{})
			if len(got) != 1 || got[0].Held != c.held || !strings.Contains(got[0].Detail, c.says) {
				t.Errorf("got %+v, want held=%v saying %q", got, c.held, c.says)
			}
		})
	}
}
