package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/harness/runner"
	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/router/api"
)

// Faults is what fault steps need of the backend: the Docker harness
// implements it with the engine's API, the Kubernetes harness with the
// router's container and the real node's containerd.
type Faults interface {
	// Deployment breaks what the n-th fault step (a deployment-wide one)
	// names, once however many users call: later callers wait for the first
	// and get the same answer.
	Deployment(ctx context.Context, n int, st scenario.Step) (DeploymentFault, error)
	// KillInstance SIGKILLs the container of the instance id.
	KillInstance(ctx context.Context, id string) error
	// FreezeInstance pauses the container of the instance id behind the
	// router's back; thaw unpauses it.
	FreezeInstance(ctx context.Context, id string) (thaw func(context.Context) error, err error)
}

// DeploymentFault is what a deployment-wide fault did.
type DeploymentFault struct {
	// Did says what was broken, for the report.
	Did string
	// Hit maps each user it hit (their router name) to how it showed.
	Hit map[string]string
}

// probeTimeout bounds each check a fault step makes of a user's PM: long
// enough for a loaded machine, short enough that a dead PM does not hold up
// the run.
const probeTimeout = 20 * time.Second

func (s *session) fault(ctx context.Context, st scenario.Step) (runner.Outcome, error) {
	n := s.faults
	s.faults++
	if s.f == nil {
		return runner.Outcome{}, errors.New("fault steps: no fault injector for this run")
	}
	if s.pm == nil && st.Kind != scenario.RestartRouter {
		return runner.Outcome{}, errNoPM
	}
	if st.Global() { // every deployment-wide kind, by the scenario's own list
		d, err := s.f.Deployment(ctx, n, st)
		if err != nil {
			return runner.Outcome{}, fmt.Errorf("%s: %w", st.Kind, err)
		}
		return s.afterDeploymentFault(ctx, st, d)
	}
	switch st.Kind {
	case scenario.KillPMUpload:
		return s.killDuringUpload(ctx)
	case scenario.PausePM:
		return s.freezeAndQuery(ctx, time.Duration(st.Timeout))
	}
	return runner.Outcome{}, fmt.Errorf("fault %q: not supported", st.Kind)
}

// afterDeploymentFault checks how the user fares once the fault is in: a
// user it hit is reported with why (and is out of the run when their PM is
// gone); every user who goes on must find their PM answering and known to
// the router.
func (s *session) afterDeploymentFault(ctx context.Context, st scenario.Step, d DeploymentFault) (runner.Outcome, error) {
	how, hit := d.Hit[s.u.ID]
	if hit && st.Kind == scenario.KillAgent {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		why := "unavailable: " + how
		if err := s.c.PM(s.pm.Address).Healthz(pctx); err != nil {
			why += "; its PM does not answer: " + err.Error()
		} else {
			why += "; yet its PM still answers"
		}
		eff := &report.FaultEffect{Affected: true, Out: true, Reason: why}
		return runner.Outcome{Note: why, Fault: eff}, errors.New(why)
	}
	if err := s.stillServed(ctx); err != nil {
		eff := &report.FaultEffect{Affected: true, Out: true, Reason: err.Error()}
		if hit {
			eff.Reason = how + "; after: " + err.Error()
		}
		return runner.Outcome{Fault: eff}, fmt.Errorf("after %s: %w", st.Kind, err)
	}
	if hit {
		note := how + "; after: PM answers, router pauses and resumes it"
		return runner.Outcome{Note: note, Fault: &report.FaultEffect{Affected: true, Reason: how}}, nil
	}
	return runner.Outcome{Note: "not hit: PM answers, router knows it", Fault: &report.FaultEffect{}}, nil
}

// stillServed checks the user can go on: the router answers them, lists their PM as
// running (a restarted router has adopted it) and, for a PM whose agent was
// cut off, can reach it again (pause and resume), and the PM answers.
func (s *session) stillServed(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	ins, err := s.c.Router.List(pctx, s.u.ID)
	if err != nil {
		return fmt.Errorf("the router does not list the user's instances: %w", err)
	}
	if s.pm == nil {
		// No PM yet (a router restart before the launch): the router
		// answering the user is what there is to check.
		return nil
	}
	found := false
	for _, in := range ins {
		if in.ID == s.pm.ID {
			found = true
			if in.State != client.StateRunning {
				return fmt.Errorf("the router lists PM %s as %s", in.ID, in.State)
			}
		}
	}
	if !found {
		return fmt.Errorf("the router no longer knows PM %s", s.pm.ID)
	}
	if err := s.c.Pause(pctx, s.pm.ID); err != nil {
		return err
	}
	if err := s.c.Resume(pctx, s.pm.ID); err != nil {
		return err
	}
	if err := s.c.PM(s.pm.Address).Healthz(pctx); err != nil {
		return fmt.Errorf("PM %s does not answer: %w", s.pm.ID, err)
	}
	if !s.unsealed {
		return nil
	}
	return s.unsealResumed(pctx)
}

// unsealResumed gives a resumed PM the user's key again when it is sealed:
// on Kubernetes a resume starts a new process in a new pod (on the same
// claim), where Docker's unpause thaws the same one.
func (s *session) unsealResumed(ctx context.Context) error {
	pm := s.c.PM(s.pm.Address)
	st, err := pm.Status(ctx)
	if err != nil {
		return fmt.Errorf("status of resumed PM %s: %w", s.pm.ID, err)
	}
	if !st.Sealed {
		return nil
	}
	if err := pm.Unseal(ctx, s.u.Key); err != nil {
		return fmt.Errorf("unseal resumed PM %s: %w", s.pm.ID, err)
	}
	return nil
}

// killDuringUpload uploads the day and SIGKILLs the PM once half of its
// entries are acknowledged, launches the PM again (the router puts it on the
// same machine, on the same volume), unseals it, and checks that every
// acknowledged entry is downloaded from it. The user's day is then only
// partly uploaded: a later upload step completes it.
func (s *session) killDuringUpload(ctx context.Context) (runner.Outcome, error) {
	entries, err := client.LoadDay(s.u.DayPath)
	if err != nil {
		return runner.Outcome{}, err
	}
	total := len(entries)
	if total < 2 {
		return runner.Outcome{}, fmt.Errorf("sigkill-pm: the day has %d entries; at least 2 are needed to kill half-way", total)
	}
	half := total / 2
	// The upload sends one request per entry: request half+1 finds the PM
	// killed, so exactly the first half are acknowledged.
	killer := &killAt{base: s.httpTransport(), at: int64(half) + 1, kill: func(ctx context.Context) error { return s.f.KillInstance(ctx, s.pm.ID) }}
	c := *s.c
	c.HTTP = &http.Client{Transport: killer, Timeout: s.httpTimeout()}
	res, upErr := c.Upload(ctx, s.pm.Address, entries)
	if killer.err != nil {
		return runner.Outcome{}, fmt.Errorf("sigkill-pm: kill PM %s: %w", s.pm.ID, killer.err)
	}
	acked := res.Inserted + res.Updated
	if upErr == nil {
		return runner.Outcome{}, fmt.Errorf("sigkill-pm: the upload of %d entries finished before the PM was killed", total)
	}
	old := s.pm.ID
	// The killed PM is gone; the router removes what is left of it.
	if err := s.c.Delete(ctx, old); err != nil {
		return runner.Outcome{}, fmt.Errorf("sigkill-pm: delete the killed PM: %w", err)
	}
	s.pm, s.uploaded, s.downloaded = nil, false, nil
	inst, err := s.c.Router.Launch(ctx, api.LaunchRequest{Service: client.PMService, User: s.u.ID})
	if err != nil {
		return runner.Outcome{}, fmt.Errorf("sigkill-pm: relaunch the PM: %w", err)
	}
	s.pm, s.c.PMSecret, s.unsealed = &inst, inst.Secret, false
	if err := s.c.PM(inst.Address).Unseal(ctx, s.u.Key); err != nil {
		return runner.Outcome{}, fmt.Errorf("sigkill-pm: unseal the relaunched PM: %w", err)
	}
	s.unsealed = true
	docs, err := s.c.Download(ctx, inst.Address, client.DownloadOptions{})
	if err != nil {
		return runner.Outcome{}, fmt.Errorf("sigkill-pm: download from the relaunched PM: %w", err)
	}
	kept, lost, err := AcknowledgedKept(s.u.DayPath, s.u.ID, acked, docs)
	if err != nil {
		return runner.Outcome{}, fmt.Errorf("sigkill-pm: %w", err)
	}
	why := fmt.Sprintf("PM %s SIGKILLed after %d of %d entries acknowledged (upload: %v); relaunched as %s on %s: %d of %d acknowledged documents downloaded",
		old, acked, total, upErr, inst.ID, Machine(inst.Machine), kept, kept+lost)
	o := runner.Outcome{Placement: Machine(inst.Machine), Note: why,
		Values: map[string]float64{"entries": float64(total), "acknowledged": float64(acked), "kept": float64(kept), "lost": float64(lost)},
		Fault:  &report.FaultEffect{Affected: true, Reason: why}}
	if lost > 0 {
		o.Fault.Out = true
		return o, fmt.Errorf("sigkill-pm: %d acknowledged documents lost", lost)
	}
	return o, nil
}

// AcknowledgedKept checks that the first acked entries of the day, as an
// upload prepares them (documents merged by key), are all in docs, equal.
// It answers how many of those documents were found equal and how many not.
func AcknowledgedKept(dayPath, user string, acked int, docs []client.Entry) (kept, lost int, err error) {
	entries, err := client.LoadDay(dayPath)
	if err != nil {
		return 0, 0, err
	}
	if acked < 0 || acked > len(entries) {
		return 0, 0, fmt.Errorf("%d acknowledged of %d entries", acked, len(entries))
	}
	prepared := make([]client.Entry, 0, acked)
	for _, e := range entries[:acked] {
		p, err := client.Prepare(e, user)
		if err != nil {
			return 0, 0, err
		}
		prepared = append(prepared, p)
	}
	byKey := map[string]client.Entry{}
	for _, d := range docs {
		byKey[docKey(d)] = d
	}
	for _, want := range client.Expected(prepared) {
		got, ok := byKey[docKey(want)]
		if ok && client.Compare([]client.Entry{want}, []client.Entry{got}) == nil {
			kept++
		} else {
			lost++
		}
	}
	return kept, lost, nil
}

// docKey is a document's upsert key: (metadata.type, write_ts, key).
func docKey(e client.Entry) string {
	md, _ := e["metadata"].(map[string]any)
	b, _ := json.Marshal([]any{md["type"], md["write_ts"], md["key"]})
	return string(b)
}

// freezeAndQuery pauses the user's PM behind the router's back and asks it
// for the user's data, which must end in a timeout after timeout; then it
// unpauses the PM, which must answer again.
func (s *session) freezeAndQuery(ctx context.Context, timeout time.Duration) (runner.Outcome, error) {
	thaw, err := s.f.FreezeInstance(ctx, s.pm.ID)
	if err != nil {
		return runner.Outcome{}, fmt.Errorf("pause-pm: %w", err)
	}
	qctx, cancel := context.WithTimeout(ctx, timeout)
	t0 := time.Now()
	_, qerr := s.c.Download(qctx, s.pm.Address, client.DownloadOptions{})
	waited := time.Since(t0)
	cancel()
	// Unpause whatever the query did, with a context of its own.
	tctx, tcancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
	defer tcancel()
	terr := thaw(tctx)
	o := runner.Outcome{Values: map[string]float64{"waited_ms": float64(waited.Milliseconds())}}
	switch {
	case qerr == nil:
		why := "the paused PM answered the download"
		o.Fault = &report.FaultEffect{Affected: true, Reason: why}
		return o, errors.New("pause-pm: " + why)
	case !IsTimeout(qerr):
		why := "the download from the paused PM failed, but not with a timeout: " + qerr.Error()
		o.Fault = &report.FaultEffect{Affected: true, Reason: why}
		return o, errors.New("pause-pm: " + why)
	}
	why := fmt.Sprintf("download timed out after %s while the PM was paused: %v", waited.Round(time.Millisecond), qerr)
	o.Note, o.Fault = why, &report.FaultEffect{Affected: true, Reason: why}
	if terr != nil {
		o.Fault.Out = true
		return o, fmt.Errorf("pause-pm: unpause: %w", terr)
	}
	if err := s.c.PM(s.pm.Address).Healthz(tctx); err != nil {
		o.Fault.Out = true
		return o, fmt.Errorf("pause-pm: the unpaused PM does not answer: %w", err)
	}
	o.Note += "; unpaused, answers again"
	return o, nil
}

// IsTimeout reports whether err is a timeout: a deadline that passed, or a
// network timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func (s *session) httpTransport() http.RoundTripper {
	if s.c.HTTP != nil && s.c.HTTP.Transport != nil {
		return s.c.HTTP.Transport
	}
	return http.DefaultTransport
}

func (s *session) httpTimeout() time.Duration {
	if s.c.HTTP != nil {
		return s.c.HTTP.Timeout
	}
	return 0
}

// killAt kills the PM just before the at-th request leaves, then lets it
// go (to a dead PM).
type killAt struct {
	base http.RoundTripper
	at   int64
	kill func(context.Context) error
	n    atomic.Int64
	err  error
}

func (k *killAt) RoundTrip(r *http.Request) (*http.Response, error) {
	if k.n.Add(1) == k.at {
		k.err = k.kill(r.Context())
	}
	return k.base.RoundTrip(r)
}
