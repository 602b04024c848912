package harness

import (
	"fmt"
	"strings"

	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/harness/runner"
	"github.com/e-mission/upc/harness/scenario"
)

// EvaluateFaults reports each fault step of a run: what it broke (did, by
// the step's number among the fault steps), the users it hit with why, and
// one check per expectation the step states.
func EvaluateFaults(steps []scenario.Step, users []report.User, left report.Leftovers, did map[int]string) []report.Fault {
	names := runner.Names(steps)
	var out []report.Fault
	n := -1
	for i, st := range steps {
		if st.Do != scenario.Fault {
			continue
		}
		n++
		// The fault's stretch: from it to the next fault step.
		next := len(steps)
		for j := i + 1; j < len(steps); j++ {
			if steps[j].Do == scenario.Fault {
				next = j
				break
			}
		}
		f := report.Fault{Step: names[i], Kind: st.Kind, Target: st.Target, Did: did[n], Affected: []report.Affected{}}
		ran, carried, timeouts := 0, 0, 0
		var stopped, unexplained, noTimeout []string
		var acked, kept, lost, entries float64
		acksOK := true
		for _, u := range users {
			s, ok := u.Step(names[i])
			if !ok || s.Status == report.Skipped {
				continue
			}
			ran++
			eff := s.Fault
			if eff == nil {
				eff = &report.FaultEffect{}
			}
			if eff.Affected {
				f.Affected = append(f.Affected, report.Affected{User: u.Name, Out: eff.Out, Reason: eff.Reason})
				if eff.Reason == "" || (eff.Out && (u.Status != report.Failed || u.Error == "")) {
					unexplained = append(unexplained, u.Name)
				}
			}
			if eff.Out {
				continue
			}
			went := true
			for k := i; k < next; k++ {
				if s, ok := u.Step(names[k]); !ok || s.Status != report.OK {
					why := "not run"
					if ok {
						why = s.Status
						if s.Error != "" {
							why = s.Error
						}
					}
					stopped = append(stopped, fmt.Sprintf("%s at %s (%s)", u.Name, names[k], why))
					went = false
					break
				}
			}
			if went {
				carried++
			}
			switch st.Kind {
			case scenario.KillPMUpload:
				a, hasA := s.Values["acknowledged"]
				e := s.Values["entries"]
				acked, kept, lost, entries = acked+a, kept+s.Values["kept"], lost+s.Values["lost"], entries+e
				if !hasA || a == 0 || a >= e || s.Values["lost"] > 0 {
					acksOK = false
				}
			case scenario.PausePM:
				if eff.Affected && s.Status == report.OK {
					timeouts++
				} else {
					noTimeout = append(noTimeout, u.Name)
				}
			}
		}
		if f.Did == "" && !st.Global() {
			f.Did = fmt.Sprintf("%s on each of %d users' PMs", st.Kind, ran)
		}
		if e := st.Expect; e != nil {
			if e.RunGoesOn {
				c := report.Check{Name: "run_goes_on", Held: ran > 0 && carried > 0 && len(stopped) == 0,
					Detail: fmt.Sprintf("%d of %d users it did not put out carried on to the next fault step", carried, carried+len(stopped))}
				if len(stopped) > 0 {
					c.Detail += "; stopped: " + strings.Join(stopped, "; ")
				}
				addCheck(&f, c)
			}
			if e.AffectedReported {
				c := report.Check{Name: "affected_reported", Held: len(f.Affected) > 0 && len(unexplained) == 0,
					Detail: fmt.Sprintf("%d of %d users affected, each with why", len(f.Affected), ran)}
				if len(f.Affected) == 0 {
					c.Detail = fmt.Sprintf("it affected none of the %d users", ran)
				}
				if len(unexplained) > 0 {
					c.Detail += "; without a reason: " + strings.Join(unexplained, ", ")
				}
				addCheck(&f, c)
			}
			if e.AcknowledgedKept {
				addCheck(&f, report.Check{Name: "acknowledged_kept", Held: ran > 0 && acksOK,
					Detail: fmt.Sprintf("%d users: %.0f of %.0f entries acknowledged before the kill; after relaunch %.0f acknowledged documents downloaded, %.0f lost",
						ran, acked, entries, kept, lost)})
			}
			if e.TimeoutReported {
				c := report.Check{Name: "timeout_reported", Held: ran > 0 && timeouts == ran,
					Detail: fmt.Sprintf("%d of %d queries to a paused PM ended in a reported timeout, each PM answering once unpaused", timeouts, ran)}
				if len(noTimeout) > 0 {
					c.Detail += "; not: " + strings.Join(noTimeout, ", ")
				}
				addCheck(&f, c)
			}
			if e.NothingLeftRunning {
				c := report.Check{Name: "nothing_left_running", Held: left.Checked && left.Empty(), Detail: "no labelled container, network or volume remains"}
				if !left.Checked {
					c.Detail = "leftovers could not be listed"
				} else if !left.Empty() {
					c.Detail = fmt.Sprintf("left: %d containers, %d networks, %d volumes", len(left.Containers), len(left.Networks), len(left.Volumes))
				}
				addCheck(&f, c)
			}
		}
		out = append(out, f)
	}
	return out
}

func addCheck(f *report.Fault, c report.Check) { f.Checks = append(f.Checks, c) }
