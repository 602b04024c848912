package scenario

import (
	"strings"
	"testing"
	"time"
)

// faultScenario is a valid scenario whose steps are replaced by steps.
func faultScenario(steps string) string {
	return `name: f
backend: docker
seed: 1
deployment: {agents: [{name: agent-a, weight: 1}, {name: agent-b, weight: 1}]}
population: {real_days: {days: [d]}}
steps:
` + steps
}

func TestFaultStepsValid(t *testing.T) {
	s, err := Parse([]byte(faultScenario(`  - launch
  - unseal
  - {do: fault, fault: sigkill-pm, target: pm, expect: {acknowledged_kept: true, affected_reported: true}}
  - {do: fault, fault: pause-pm, target: pm, timeout: 3s, expect: {timeout_reported: true}}
  - {do: fault, fault: restart-router, target: router, expect: {run_goes_on: true}}
  - {do: fault, fault: disconnect-agent, target: agent-b, expect: {affected_reported: true}}
  - {do: fault, fault: kill-agent, target: agent-a, expect: {run_goes_on: true, nothing_left_running: true}}
  - delete
`)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var global []string
	for _, st := range s.Steps {
		if st.Global() {
			global = append(global, st.Kind)
		}
	}
	if strings.Join(global, ",") != "restart-router,disconnect-agent,kill-agent" {
		t.Errorf("deployment-wide faults: %v", global)
	}
	if p := s.Steps[3]; p.Kind != PausePM || time.Duration(p.Timeout) != 3*time.Second || !p.Expect.TimeoutReported {
		t.Errorf("pause-pm step decoded as %+v", p)
	}
	if got := s.Steps[6].Expect.Names(); strings.Join(got, ",") != "run_goes_on,nothing_left_running" {
		t.Errorf("expectation names: %v", got)
	}
	if got := s.Steps[2].String(); got != "fault(sigkill-pm,pm)" {
		t.Errorf("String: %q", got)
	}
}

// kill-kubelet: the real node of a kubernetes run, after a launch; refused
// on kwok's simulated nodes, which run no kubelet.
func TestKillKubeletStep(t *testing.T) {
	k8s := strings.Replace(faultScenario(`  - launch
  - {do: fault, fault: kill-kubelet, target: node, timeout: 8s, expect: {run_goes_on: true}}
  - {do: fault, fault: kill-kubelet, target: node, expect: {run_goes_on: true}}
`), "backend: docker", "backend: kubernetes", 1)
	s, err := Parse([]byte(k8s))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if st := s.Steps[1]; !st.Global() || time.Duration(st.Timeout) != 8*time.Second {
		t.Errorf("kill-kubelet step: global %v, timeout %s", st.Global(), time.Duration(st.Timeout))
	}
	fake := strings.Replace(k8s, "deployment: {", "deployment: {nodes: fake, ", 1)
	fake = strings.Replace(fake, "  - launch\n", "  - launch\n  - delete\n", 1)
	_, err = Parse([]byte(fake))
	if err == nil || !strings.Contains(err.Error(), "kill-kubelet needs the real node (deployment.nodes: real)") {
		t.Errorf("on fake nodes: %v", err)
	}
	early := strings.Replace(k8s, "  - launch\n", "", 1)
	if _, err := Parse([]byte(early)); err == nil || !strings.Contains(err.Error(), "steps[0]: kill-kubelet needs an earlier launch step") {
		t.Errorf("before any launch: %v", err)
	}
}

// TestFaultStepsRefused: every bad fault step is named, with its field and
// what would be right, all at once.
func TestFaultStepsRefused(t *testing.T) {
	for name, c := range map[string]struct {
		steps string
		want  []string
	}{
		"unknown fault": {`  - launch
  - {do: fault, fault: flood, target: agent-a, expect: {run_goes_on: true}}
`, []string{`steps[1].fault: unknown fault "flood" (want one of kill-agent, restart-router, disconnect-agent, sigkill-pm, pause-pm, kill-kubelet)`}},
		"no fault": {`  - launch
  - {do: fault, target: agent-a, expect: {run_goes_on: true}}
`, []string{"steps[1].fault: required (one of kill-agent"}},
		"missing target": {`  - launch
  - {do: fault, fault: kill-agent, expect: {run_goes_on: true}}
  - {do: fault, fault: restart-router, expect: {run_goes_on: true}}
  - unseal
  - {do: fault, fault: sigkill-pm, expect: {run_goes_on: true}}
`, []string{"steps[1].target: required: the agent kill-agent hits (one of agent-a, agent-b)",
			`steps[2].target: restart-router takes target "router", got ""`,
			`steps[4].target: sigkill-pm takes target "pm" (the user's own PM), got ""`}},
		"target not an agent": {`  - launch
  - {do: fault, fault: disconnect-agent, target: agent-z, expect: {run_goes_on: true}}
`, []string{`steps[1].target: "agent-z" is not an agent of deployment.agents (agent-a, agent-b)`}},
		"no expectation": {`  - launch
  - {do: fault, fault: kill-agent, target: agent-a}
  - {do: fault, fault: kill-agent, target: agent-b, expect: {}}
`, []string{"steps[1].expect: state at least one expectation", "steps[2].expect: state at least one expectation"}},
		"expectation of another fault": {`  - launch
  - unseal
  - {do: fault, fault: kill-agent, target: agent-a, expect: {acknowledged_kept: true, timeout_reported: true}}
`, []string{"steps[2].expect.acknowledged_kept: only sigkill-pm", "steps[2].expect.timeout_reported: only pause-pm"}},
		"timeout": {`  - launch
  - unseal
  - {do: fault, fault: pause-pm, target: pm, expect: {timeout_reported: true}}
  - {do: fault, fault: pause-pm, target: pm, timeout: 1h, expect: {timeout_reported: true}}
  - {do: fault, fault: sigkill-pm, target: pm, timeout: 3s, expect: {run_goes_on: true}}
`, []string{`steps[2].timeout: pause-pm needs how long its query waits, within (0, 5m0s], got "0s"`,
			`steps[3].timeout: pause-pm needs how long its query waits, within (0, 5m0s], got "1h0m0s"`,
			"steps[4].timeout: belongs to pause-pm and kill-kubelet only"}},
		"too early": {`  - {do: fault, fault: kill-agent, target: agent-a, expect: {run_goes_on: true}}
  - {do: fault, fault: pause-pm, target: pm, timeout: 1s, expect: {run_goes_on: true}}
  - launch
`, []string{"steps[0]: kill-agent needs an earlier launch step", "steps[1]: pause-pm needs an earlier unseal step"}},
		"kill-kubelet on docker": {`  - launch
  - {do: fault, fault: kill-kubelet, target: agent-a, timeout: 1m, expect: {run_goes_on: true}}
`, []string{`steps[1].target: kill-kubelet takes target "node" (the node the users' PMs run on), got "agent-a"`,
			`steps[1]: kill-kubelet needs backend kubernetes (Docker mode has no kubelet: kill-agent kills a machine there), got "docker"`,
			`steps[1].timeout: kill-kubelet keeps the kubelet down at most 30s (the node would be marked NotReady), got "1m0s"`}},
		"fault fields elsewhere": {`  - {do: launch, target: agent-a}
`, []string{"steps[0]: fault, target, timeout and expect belong to fault steps only"}},
		"unknown expectation": {`  - launch
  - {do: fault, fault: kill-agent, target: agent-a, expect: {survives: true}}
`, []string{`unknown field "survives"`}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(faultScenario(c.steps)))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
