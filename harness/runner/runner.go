// Package runner carries every user of a scenario through its steps, users in
// parallel with bounded concurrency. One user's failure (an error, a timeout,
// even a panic) is recorded with its reason and never stops the others.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/harness/scenario"
)

// Session carries one user through the steps; the runner calls Do once per
// step, in order, from one goroutine.
type Session interface {
	Do(ctx context.Context, step scenario.Step) (Outcome, error)
}

// Outcome is what a step found.
type Outcome struct {
	// Note is a short human summary for the progress line and the report.
	Note string
	// Values are measurements ("entries", "trips").
	Values map[string]float64
	// Placement, when set, is where the user's instance runs.
	Placement string
	// Trips, set by a pipeline step, is how the trips it found compared
	// with the day's ground truth.
	Trips *report.TripCheck
	// Fault, set by a fault step, is what the fault did to the user.
	Fault *report.FaultEffect
}

// NewSession makes the session for one user.
type NewSession func(u scenario.User) Session

// Options tune a run.
type Options struct {
	// Parallel bounds how many users run at once (at least 1).
	Parallel int
	// StepTimeout bounds each step (zero: no bound beyond ctx).
	StepTimeout time.Duration
	// Progress receives one line per user and step as they finish (nil: none).
	Progress io.Writer
	// Start is the time progress lines count from (zero: when Run starts).
	Start time.Time
}

// TripsValue is the Outcome value a pipeline step sets to the trips it found.
const TripsValue = "trips"

// Run runs every user and returns their results in the order of users.
// A step after a failed one is skipped, except delete, which still runs once
// the user has launched, so a failed user does not leave instances behind.
// When ctx ends, the steps not yet started are skipped.
//
// A deployment-wide fault step (Step.Global) is a meeting point: no user
// takes it before every user has reached it (or skipped it), so the fault
// hits all of them at the same point of their run. Such a scenario runs
// every user at once, whatever Parallel says.
func Run(ctx context.Context, users []scenario.User, steps []scenario.Step, newSession NewSession, opts Options) []report.User {
	start := opts.Start
	if start.IsZero() {
		start = time.Now()
	}
	p := &progress{w: opts.Progress, start: start}
	out := make([]report.User, len(users))
	meet := make([]*meeting, len(steps))
	for i, st := range steps {
		if st.Global() {
			meet[i] = &meeting{left: len(users), all: make(chan struct{})}
			opts.Parallel = len(users)
		}
	}
	sem := make(chan struct{}, max(opts.Parallel, 1))
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
			}
			out[i] = runUser(ctx, u, steps, meet, newSession, opts.StepTimeout, p)
		}()
	}
	wg.Wait()
	return out
}

// Names numbers repeated step kinds: launch, delete, launch#2, delete#2.
func Names(steps []scenario.Step) []string {
	seen := map[string]int{}
	names := make([]string, len(steps))
	for i, s := range steps {
		seen[s.Do]++
		names[i] = s.Do
		if n := seen[s.Do]; n > 1 {
			names[i] = fmt.Sprintf("%s#%d", s.Do, n)
		}
	}
	return names
}

// meeting is where every user waits for the others before a
// deployment-wide fault.
type meeting struct {
	mu   sync.Mutex
	left int
	all  chan struct{}
}

// arrive counts the user in and waits for the rest (or for ctx to end).
func (m *meeting) arrive(ctx context.Context) {
	m.mu.Lock()
	if m.left--; m.left == 0 {
		close(m.all)
	}
	m.mu.Unlock()
	select {
	case <-m.all:
	case <-ctx.Done():
	}
}

func runUser(ctx context.Context, u scenario.User, steps []scenario.Step, meet []*meeting, newSession NewSession, timeout time.Duration, p *progress) report.User {
	r := report.User{Name: u.Name, ID: u.ID, Day: u.Day, Status: report.OK, ExpectedTrips: u.ExpectedTrips}
	names := Names(steps)
	begin := time.Now()
	var sess Session
	failed, launched := false, false
	for i, st := range steps {
		if meet[i] != nil {
			meet[i].arrive(ctx)
		}
		res := report.Step{Name: names[i], StartMS: msSince(begin)}
		switch {
		case ctx.Err() != nil:
			res.Status, res.Error = report.Skipped, "run cancelled: "+context.Cause(ctx).Error()
		case failed && !(st.Do == scenario.Delete && launched):
			res.Status = report.Skipped
		default:
			if sess == nil {
				s, err := safeNew(newSession, u)
				if err != nil {
					res.Status, res.Error = report.Failed, err.Error()
					break
				}
				sess = s
			}
			t0 := time.Now()
			o, err := doStep(ctx, sess, st, timeout)
			res.DurationMS = msSince(t0)
			res.Note, res.Values, res.Fault = o.Note, o.Values, o.Fault
			if o.Placement != "" {
				r.Placement = o.Placement
			}
			if err != nil {
				res.Status, res.Error = report.Failed, err.Error()
			} else {
				res.Status = report.OK
				if st.Do == scenario.Launch {
					launched = true
				}
				if st.Do == scenario.Delete {
					launched = false
				}
				if n, ok := o.Values[TripsValue]; ok && st.Do == scenario.Pipeline {
					t := int(n)
					r.TripsFound = &t
				}
				if o.Trips != nil && st.Do == scenario.Pipeline {
					r.GroundTruth = o.Trips
				}
			}
		}
		if res.Status == report.Failed {
			if !failed {
				r.Status = report.Failed
				r.Error = fmt.Sprintf("%s: %s", res.Name, res.Error)
			}
			failed = true
		}
		r.Steps = append(r.Steps, res)
		p.line(u.Name, res)
	}
	// A user cancelled before any failure did not finish: say so.
	if !failed && ctx.Err() != nil {
		r.Status, r.Error = report.Failed, "run cancelled before the user finished"
	}
	r.TotalMS = msSince(begin)
	return r
}

// doStep runs one step under its timeout, turning a panic into an error.
func doStep(ctx context.Context, s Session, st scenario.Step, timeout time.Duration) (o Outcome, err error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, fmt.Errorf("step %s took longer than %s", st.Do, timeout))
		defer cancel()
	}
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("step %s panicked: %v", st.Do, v)
		}
	}()
	o, err = s.Do(ctx, st)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%v)", err, context.Cause(ctx))
	}
	return o, err
}

func safeNew(newSession NewSession, u scenario.User) (s Session, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("start session: panicked: %v", v)
		}
	}()
	return newSession(u), nil
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// progress writes one line per finished step; lines never interleave.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (p *progress) line(user string, s report.Step) {
	if p.w == nil {
		return
	}
	detail := s.Note
	if s.Error != "" {
		detail = s.Error
	}
	detail = strings.ReplaceAll(detail, "\n", " ")
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%6.1fs] %-26s %-10s %-7s %7.0f ms  %s\n", time.Since(p.start).Seconds(), user, s.Name, s.Status, s.DurationMS, detail)
}
