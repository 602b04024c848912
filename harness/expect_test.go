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
		{Name: "launch", Status: report.OK, DurationMS: 300}, {Name: "compare", Status: report.OK}}}
	slow := report.User{Name: "b", Status: report.OK, ExpectedTrips: 3, TripsFound: trips(2), Steps: []report.Step{
		{Name: "launch", Status: report.OK, DurationMS: 1500}, {Name: "compare", Status: report.OK}}}
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
			[]string{"1 of 3 users failed: c (compare: 3 entries differ)", "2 of 3 compares", "b: 2 trips, ground truth 3", "c: no pipeline result", "over: b 1500 ms", "1 volumes"}},
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
