package harness

import (
	"strings"
	"testing"

	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/harness/scenario"
)

// faultSteps: two fault steps with every expectation each may state.
var faultSteps = []scenario.Step{
	{Do: scenario.Launch},
	{Do: scenario.Unseal},
	{Do: scenario.Fault, FaultSpec: scenario.FaultSpec{Kind: scenario.KillPMUpload, Target: scenario.TargetPM,
		Expect: &scenario.FaultExpect{RunGoesOn: true, AffectedReported: true, AcknowledgedKept: true}}},
	{Do: scenario.Upload},
	{Do: scenario.Fault, FaultSpec: scenario.FaultSpec{Kind: scenario.KillAgent, Target: "agent-b",
		Expect: &scenario.FaultExpect{RunGoesOn: true, AffectedReported: true, NothingLeftRunning: true}}},
	{Do: scenario.Delete},
}

func ok(name string) report.Step { return report.Step{Name: name, Status: report.OK} }

func killed(acked, kept, lost float64) report.Step {
	s := ok("fault")
	s.Values = map[string]float64{"entries": 100, "acknowledged": acked, "kept": kept, "lost": lost}
	s.Fault = &report.FaultEffect{Affected: true, Reason: "PM SIGKILLed after half"}
	return s
}

// goodUsers: alice goes through both faults; bob's machine is killed.
func goodUsers() []report.User {
	return []report.User{
		{Name: "alice", Status: report.OK, Steps: []report.Step{ok("launch"), ok("unseal"), killed(50, 40, 0), ok("upload"),
			{Name: "fault#2", Status: report.OK, Fault: &report.FaultEffect{}}, ok("delete")}},
		{Name: "bob", Status: report.Failed, Error: "fault#2: unavailable: machine agent-b was killed", Steps: []report.Step{ok("launch"), ok("unseal"),
			killed(50, 40, 0), ok("upload"),
			{Name: "fault#2", Status: report.Failed, Error: "unavailable", Fault: &report.FaultEffect{Affected: true, Out: true, Reason: "unavailable: machine agent-b was killed"}},
			{Name: "delete", Status: report.Failed, Error: "agent-b does not answer"}}},
	}
}

func held(fs []report.Fault) map[string]bool {
	out := map[string]bool{}
	for _, f := range fs {
		for _, c := range f.Checks {
			out[f.Step+" "+c.Name] = c.Held
		}
	}
	return out
}

func TestEvaluateFaults(t *testing.T) {
	clean := report.Leftovers{Checked: true}
	fs := EvaluateFaults(faultSteps, goodUsers(), clean, map[int]string{1: "SIGKILLed agent agent-b"})
	if len(fs) != 2 {
		t.Fatalf("%d faults, want 2", len(fs))
	}
	for name, h := range held(fs) {
		if !h {
			t.Errorf("%s did not hold: %+v", name, fs)
		}
	}
	if f := fs[1]; f.Step != "fault#2" || f.Did != "SIGKILLed agent agent-b" || len(f.Affected) != 1 || f.Affected[0].User != "bob" || !f.Affected[0].Out ||
		!strings.Contains(f.Affected[0].Reason, "agent-b was killed") {
		t.Errorf("kill-agent reported as %+v", f)
	}
	if f := fs[0]; f.Did != "sigkill-pm on each of 2 users' PMs" || len(f.Affected) != 2 {
		t.Errorf("sigkill-pm reported as %+v", f)
	}
	if d := fs[0].Checks[2].Detail; !strings.Contains(d, "100 of 200 entries acknowledged") || !strings.Contains(d, "0 lost") {
		t.Errorf("acknowledged_kept detail: %s", d)
	}
}

// TestEvaluateFaultsFails: each way an expectation can fail is caught.
func TestEvaluateFaultsFails(t *testing.T) {
	clean := report.Leftovers{Checked: true}
	for name, c := range map[string]struct {
		change func(us []report.User) report.Leftovers
		failed []string
	}{
		"acknowledged entry lost": {func(us []report.User) report.Leftovers {
			us[0].Steps[2] = killed(50, 39, 1)
			return clean
		}, []string{"fault acknowledged_kept"}},
		"kill came after the upload finished": {func(us []report.User) report.Leftovers {
			us[1].Steps[2] = killed(100, 80, 0)
			return clean
		}, []string{"fault acknowledged_kept"}},
		"an unaffected user stopped": {func(us []report.User) report.Leftovers {
			us[0].Steps[5] = report.Step{Name: "delete", Status: report.Failed, Error: "router 502"}
			return clean
		}, []string{"fault#2 run_goes_on"}},
		"an affected user without a reason": {func(us []report.User) report.Leftovers {
			us[1].Steps[4].Fault.Reason = ""
			return clean
		}, []string{"fault#2 affected_reported"}},
		"an out user not reported failed": {func(us []report.User) report.Leftovers {
			us[1].Status, us[1].Error = report.OK, ""
			return clean
		}, []string{"fault#2 affected_reported"}},
		"nobody affected": {func(us []report.User) report.Leftovers {
			us[1].Steps[4] = report.Step{Name: "fault#2", Status: report.OK, Fault: &report.FaultEffect{}}
			us[1].Steps[5] = ok("delete")
			return clean
		}, []string{"fault#2 affected_reported"}},
		"leftovers": {func(us []report.User) report.Leftovers {
			return report.Leftovers{Checked: true, Containers: []string{"upc-pm-1"}}
		}, []string{"fault#2 nothing_left_running"}},
		"fault never injected": {func(us []report.User) report.Leftovers {
			for i := range us {
				us[i].Steps[4] = report.Step{Name: "fault#2", Status: report.Failed, Error: "kill-agent: kill agent agent-b: no such container"}
			}
			return clean
		}, []string{"fault#2 run_goes_on", "fault#2 affected_reported"}},
	} {
		t.Run(name, func(t *testing.T) {
			us := goodUsers()
			left := c.change(us)
			h := held(EvaluateFaults(faultSteps, us, left, nil))
			for check, v := range h {
				want := true
				for _, f := range c.failed {
					if f == check {
						want = false
					}
				}
				if v != want {
					t.Errorf("%s held=%v, want %v", check, v, want)
				}
			}
		})
	}
}

func TestEvaluateFaultsPause(t *testing.T) {
	steps := []scenario.Step{{Do: scenario.Launch}, {Do: scenario.Unseal},
		{Do: scenario.Fault, FaultSpec: scenario.FaultSpec{Kind: scenario.PausePM, Target: scenario.TargetPM, Timeout: scenario.Duration(3e9),
			Expect: &scenario.FaultExpect{TimeoutReported: true, RunGoesOn: true}}}}
	timedOut := report.Step{Name: "fault", Status: report.OK, Fault: &report.FaultEffect{Affected: true, Reason: "download timed out after 3s"}}
	answered := report.Step{Name: "fault", Status: report.Failed, Error: "pause-pm: the paused PM answered the download",
		Fault: &report.FaultEffect{Affected: true, Reason: "the paused PM answered the download"}}
	users := []report.User{
		{Name: "a", Status: report.OK, Steps: []report.Step{ok("launch"), ok("unseal"), timedOut}},
		{Name: "b", Status: report.OK, Steps: []report.Step{ok("launch"), ok("unseal"), timedOut}},
	}
	if h := held(EvaluateFaults(steps, users, report.Leftovers{}, nil)); !h["fault timeout_reported"] || !h["fault run_goes_on"] {
		t.Errorf("all timed out: %v", h)
	}
	users[1].Steps[2] = answered
	fs := EvaluateFaults(steps, users, report.Leftovers{}, nil)
	if h := held(fs); h["fault timeout_reported"] || h["fault run_goes_on"] {
		t.Errorf("one answered: %v", h)
	}
	if d := fs[0].Checks[1].Detail; !strings.Contains(d, "1 of 2 queries") || !strings.HasSuffix(d, "not: b") {
		t.Errorf("detail: %s", d)
	}
}
