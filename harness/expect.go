package harness

import (
	"fmt"
	"strings"
	"time"

	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/harness/scenario"
)

// Evaluate checks the scenario's expectations against the users' results and
// what tear-down left. Every expectation the scenario sets yields one check.
func Evaluate(e scenario.Expectations, users []report.User, left report.Leftovers) []report.Check {
	var out []report.Check
	if e.EveryStepSucceeds {
		var bad []string
		for _, u := range users {
			if u.Status != report.OK {
				bad = append(bad, fmt.Sprintf("%s (%s)", u.Name, u.Error))
			}
		}
		c := report.Check{Name: "every_step_succeeds", Held: len(bad) == 0 && len(users) > 0}
		switch {
		case len(users) == 0:
			c.Detail = "no user ran"
		case len(bad) == 0:
			c.Detail = fmt.Sprintf("all %d users finished every step", len(users))
		default:
			c.Detail = fmt.Sprintf("%d of %d users failed: %s", len(bad), len(users), strings.Join(bad, "; "))
		}
		out = append(out, c)
	}
	if e.Lossless {
		n, equal := 0, 0
		var bad []string
		for _, u := range users {
			for _, s := range u.Steps {
				if s.Name != scenario.Compare && !strings.HasPrefix(s.Name, scenario.Compare+"#") {
					continue
				}
				n++
				if s.Status == report.OK {
					equal++
				} else {
					bad = append(bad, u.Name)
				}
			}
		}
		c := report.Check{Name: "lossless", Held: n > 0 && equal == n,
			Detail: fmt.Sprintf("%d of %d compares found the download equal to the day file", equal, n)}
		if len(bad) > 0 {
			c.Detail += "; not: " + strings.Join(bad, ", ")
		}
		out = append(out, c)
	}
	if e.TripsMatchGroundTruth {
		approx := e.TripsComparison == scenario.TripsApprox
		how := "exactly"
		if approx {
			how = "at least approximately"
		}
		n, match := 0, 0
		var bad []string
		for _, u := range users {
			n++
			switch c := u.GroundTruth; {
			case c == nil:
				bad = append(bad, u.Name+": no pipeline result compared")
			case c.Holds(approx):
				match++
			default:
				why := fmt.Sprintf("%s: %d trips, ground truth %d, %s", u.Name, c.Got, c.Want, c.Verdict())
				if len(c.Failed) > 0 {
					why += " (" + c.Failed[0] + ")"
				}
				bad = append(bad, why)
			}
		}
		c := report.Check{Name: "trips_match_ground_truth", Held: n > 0 && match == n,
			Detail: fmt.Sprintf("%d of %d users' trips match the ground truth %s, trip by trip", match, n, how)}
		if len(bad) > 0 {
			c.Detail += "; " + strings.Join(bad, "; ")
		}
		out = append(out, c)
	}
	if limit := time.Duration(e.MaxLaunch); limit > 0 {
		var worst float64
		var slow []string
		n := 0
		for _, u := range users {
			for _, s := range u.Steps {
				if s.Status != report.OK || (s.Name != scenario.Launch && !strings.HasPrefix(s.Name, scenario.Launch+"#")) {
					continue
				}
				n++
				worst = max(worst, s.DurationMS)
				if s.DurationMS > float64(limit.Milliseconds()) {
					slow = append(slow, fmt.Sprintf("%s %.0f ms", u.Name, s.DurationMS))
				}
			}
		}
		c := report.Check{Name: "max_launch", Held: n > 0 && len(slow) == 0,
			Detail: fmt.Sprintf("slowest of %d launches %.0f ms (limit %s)", n, worst, limit)}
		if len(slow) > 0 {
			c.Detail += "; over: " + strings.Join(slow, ", ")
		}
		out = append(out, c)
	}
	if e.NothingLeftRunning {
		c := report.Check{Name: "nothing_left_running", Held: left.Checked && left.Empty()}
		switch {
		case !left.Checked:
			c.Detail = "leftovers could not be listed"
		case left.Empty():
			c.Detail = "no labelled container, network or volume remains"
		default:
			c.Detail = fmt.Sprintf("left: %d containers, %d networks, %d volumes", len(left.Containers), len(left.Networks), len(left.Volumes))
		}
		out = append(out, c)
	}
	return out
}
