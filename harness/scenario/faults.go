package scenario

import (
	"slices"
	"strings"
	"time"
)

// Fault kinds: what a fault step breaks. Agent faults and the router's
// restart hit the whole deployment once, when every user has reached the
// step; PM faults hit each user's own PM.
const (
	// KillAgent kills a machine: its agent and every instance it started
	// (SIGKILL). Its users are reported unavailable, with why; the others
	// go on.
	KillAgent = "kill-agent"
	// RestartRouter kills the router and starts it again; the new process
	// adopts the running instances from their labels and the users go on.
	RestartRouter = "restart-router"
	// DisconnectAgent cuts a machine's agent off the run's network (`docker
	// network disconnect`); the users whose PM it runs are reported, then
	// it is connected again.
	DisconnectAgent = "disconnect-agent"
	// KillPMUpload uploads the user's day and SIGKILLs their PM half-way;
	// the PM is launched again on the same volume, and every entry the PM
	// acknowledged must be downloaded from it.
	KillPMUpload = "sigkill-pm"
	// PausePM freezes the user's PM (`docker pause`) behind the router's
	// back and asks it for the user's data: the query must end with a clear
	// timeout after the step's timeout; then the PM is unpaused.
	PausePM = "pause-pm"
	// KillKubelet SIGKILLs the kubelet of the node the users' PMs run on
	// (Kubernetes mode, the real node), keeps it down for the step's
	// timeout (default DefaultKubeletOutage) and starts it again. The
	// node's containers live on in its runtime: every PM must answer while
	// the kubelet is down, and keep its container, unrestarted.
	KillKubelet = "kill-kubelet"
)

// DefaultKubeletOutage is how long kill-kubelet keeps the kubelet down
// unless the step's timeout says otherwise; MaxKubeletOutage bounds it below
// the node-lifecycle controller's grace (50 s by default), past which the
// node would be marked NotReady and its pods taken out of their Services.
const (
	DefaultKubeletOutage = 5 * time.Second
	MaxKubeletOutage     = 30 * time.Second
)

// FaultKinds lists every fault kind.
var FaultKinds = []string{KillAgent, RestartRouter, DisconnectAgent, KillPMUpload, PausePM, KillKubelet}

// Targets of the faults that do not name an agent.
const (
	TargetRouter = "router" // restart-router
	TargetPM     = "pm"     // the user's own PM
	TargetNode   = "node"   // kill-kubelet: the node the users' PMs run on
)

// FaultSpec is what a fault step breaks and what the scenario expects.
type FaultSpec struct {
	// Kind is one of FaultKinds.
	Kind string `json:"fault,omitempty"`
	// Target is an agent's name (kill-agent, disconnect-agent), "router"
	// (restart-router), "pm" (the PM faults) or "node" (kill-kubelet).
	Target string `json:"target,omitempty"`
	// Timeout is how long pause-pm's query waits for the frozen PM, or how
	// long kill-kubelet keeps the kubelet down.
	Timeout Duration `json:"timeout,omitempty"`
	// Expect is what must hold after the fault; at least one is required.
	Expect *FaultExpect `json:"expect,omitempty"`
}

// IsZero reports whether no fault field is set.
func (f FaultSpec) IsZero() bool {
	return f.Kind == "" && f.Target == "" && f.Timeout == 0 && f.Expect == nil
}

// Global reports whether the step hits the whole deployment once (every
// user meets at it) rather than each user's own PM.
func (s Step) Global() bool {
	return s.Do == Fault && (s.Kind == KillAgent || s.Kind == RestartRouter || s.Kind == DisconnectAgent || s.Kind == KillKubelet)
}

// FaultExpect is what a fault step expects. Each set field yields one check
// in the report (harness.EvaluateFaults).
type FaultExpect struct {
	// RunGoesOn: every user the fault did not put out of the run carried
	// on: its fault step and every step up to the next fault step succeeded.
	RunGoesOn bool `json:"run_goes_on,omitempty"`
	// AffectedReported: the fault affected at least one user, and each
	// affected user is reported with why.
	AffectedReported bool `json:"affected_reported,omitempty"`
	// AcknowledgedKept (sigkill-pm): every entry the PM acknowledged
	// before it was killed is downloaded from the relaunched PM.
	AcknowledgedKept bool `json:"acknowledged_kept,omitempty"`
	// TimeoutReported (pause-pm): every query to a frozen PM ended with a
	// timeout error saying so, and the PM answered again once unpaused.
	TimeoutReported bool `json:"timeout_reported,omitempty"`
	// NothingLeftRunning: after tear-down nothing of the run remains, the
	// fault's debris (killed containers, a cut network) included.
	NothingLeftRunning bool `json:"nothing_left_running,omitempty"`
}

// Names lists the expectations set, in a fixed order.
func (e FaultExpect) Names() []string {
	var out []string
	for _, x := range []struct {
		set  bool
		name string
	}{{e.RunGoesOn, "run_goes_on"}, {e.AffectedReported, "affected_reported"}, {e.AcknowledgedKept, "acknowledged_kept"},
		{e.TimeoutReported, "timeout_reported"}, {e.NothingLeftRunning, "nothing_left_running"}} {
		if x.set {
			out = append(out, x.name)
		}
	}
	return out
}

// MaxFaultTimeout bounds pause-pm's timeout: the step waits that long.
const MaxFaultTimeout = 5 * time.Minute

// validateFault checks a fault step, and that other steps carry no fault
// fields; done is what earlier steps did.
func (s *Scenario) validateFault(at string, st Step, done map[string]bool, bad func(string, ...any)) {
	if st.Do != Fault {
		if !st.FaultSpec.IsZero() {
			bad("%s: fault, target, timeout and expect belong to fault steps only", at)
		}
		return
	}
	if !slices.Contains(FaultKinds, st.Kind) {
		if st.Kind == "" {
			bad("%s.fault: required (one of %s)", at, strings.Join(FaultKinds, ", "))
		} else {
			bad("%s.fault: unknown fault %q (want one of %s)", at, st.Kind, strings.Join(FaultKinds, ", "))
		}
		return
	}
	agents := make([]string, 0, len(s.Deployment.Agents))
	for _, a := range s.Deployment.Agents {
		agents = append(agents, a.Name)
	}
	switch st.Kind {
	case KillAgent, DisconnectAgent:
		switch {
		case st.Target == "":
			bad("%s.target: required: the agent %s hits (one of %s)", at, st.Kind, strings.Join(agents, ", "))
		case !slices.Contains(agents, st.Target):
			bad("%s.target: %q is not an agent of deployment.agents (%s)", at, st.Target, strings.Join(agents, ", "))
		}
		if !done[Launch] {
			bad("%s: %s needs an earlier launch step (its users are those whose PM the agent runs)", at, st.Kind)
		}
	case RestartRouter:
		if st.Target != TargetRouter {
			bad("%s.target: %s takes target %q, got %q", at, st.Kind, TargetRouter, st.Target)
		}
	case KillKubelet:
		if st.Target != TargetNode {
			bad("%s.target: %s takes target %q (the node the users' PMs run on), got %q", at, st.Kind, TargetNode, st.Target)
		}
		if s.Backend != "kubernetes" {
			bad("%s: %s needs backend kubernetes (Docker mode has no kubelet: kill-agent kills a machine there), got %q", at, st.Kind, s.Backend)
		}
		if s.Deployment.Nodes == NodesFake {
			bad("%s: %s needs the real node (deployment.nodes: real): kwok's simulated nodes run no kubelet", at, st.Kind)
		}
		if !done[Launch] {
			bad("%s: %s needs an earlier launch step (the PMs that must outlive the kubelet)", at, st.Kind)
		}
	case KillPMUpload, PausePM:
		if st.Target != TargetPM {
			bad("%s.target: %s takes target %q (the user's own PM), got %q", at, st.Kind, TargetPM, st.Target)
		}
		if !done[Unseal] {
			bad("%s: %s needs an earlier unseal step", at, st.Kind)
		}
	}
	if st.Kind == PausePM {
		if t := time.Duration(st.Timeout); t <= 0 || t > MaxFaultTimeout {
			bad("%s.timeout: pause-pm needs how long its query waits, within (0, %s], got %q", at, MaxFaultTimeout, t)
		}
	} else if st.Kind == KillKubelet {
		if t := time.Duration(st.Timeout); t < 0 || t > MaxKubeletOutage {
			bad("%s.timeout: kill-kubelet keeps the kubelet down at most %s (the node would be marked NotReady), got %q", at, MaxKubeletOutage, t)
		}
	} else if st.Timeout != 0 {
		bad("%s.timeout: belongs to pause-pm and kill-kubelet only", at)
	}
	e := st.Expect
	if e == nil || len(e.Names()) == 0 {
		bad("%s.expect: state at least one expectation (run_goes_on, affected_reported, acknowledged_kept, timeout_reported, nothing_left_running)", at)
		return
	}
	if e.AcknowledgedKept && st.Kind != KillPMUpload {
		bad("%s.expect.acknowledged_kept: only %s acknowledges entries before the fault", at, KillPMUpload)
	}
	if e.TimeoutReported && st.Kind != PausePM {
		bad("%s.expect.timeout_reported: only %s waits for a timeout", at, PausePM)
	}
}
