package runner

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/harness/scenario"
)

// fakeSession stands in for a real user's cloud in these unit tests only: its
// behaviour per step comes from a func field.
type fakeSession struct {
	do func(ctx context.Context, st scenario.Step) (Outcome, error)
}

func (f fakeSession) Do(ctx context.Context, st scenario.Step) (Outcome, error) { return f.do(ctx, st) }

func steps(kinds ...string) []scenario.Step {
	out := make([]scenario.Step, len(kinds))
	for i, k := range kinds {
		out[i] = scenario.Step{Do: k}
	}
	return out
}

func users(n int) []scenario.User {
	out := make([]scenario.User, n)
	for i := range out {
		out[i] = scenario.User{Name: "u" + string(rune('a'+i)), Day: "d", ExpectedTrips: 3}
	}
	return out
}

func statuses(u report.User) string {
	var s []string
	for _, st := range u.Steps {
		s = append(s, st.Name+"="+st.Status)
	}
	return strings.Join(s, " ")
}

func TestRunBoundedAndOrdered(t *testing.T) {
	var running, peak atomic.Int32
	newS := func(u scenario.User) Session {
		return fakeSession{do: func(ctx context.Context, st scenario.Step) (Outcome, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
			switch st.Do {
			case scenario.Launch:
				return Outcome{Placement: "agent-a"}, nil
			case scenario.Pipeline:
				return Outcome{Values: map[string]float64{TripsValue: 3}, Note: "3 trips",
					Trips: &report.TripCheck{Date: "2015-08-23", Want: 3, Got: 3, Exact: true, Approx: true}}, nil
			}
			return Outcome{}, nil
		}}
	}
	var prog bytes.Buffer
	us := users(7)
	got := Run(context.Background(), us, steps("launch", "unseal", "upload", "pipeline", "delete"), newS, Options{Parallel: 2, Progress: &prog})
	if p := peak.Load(); p > 2 || p < 1 {
		t.Errorf("peak concurrency %d, want at most 2", p)
	}
	if len(got) != 7 {
		t.Fatalf("%d results", len(got))
	}
	for i, u := range got {
		if u.Name != us[i].Name || u.Status != report.OK || u.Placement != "agent-a" || u.TripsFound == nil || *u.TripsFound != 3 ||
			!u.GroundTruth.Holds(false) {
			t.Errorf("user %d: %+v", i, u)
		}
		if len(u.Steps) != 5 || u.Steps[2].DurationMS <= 0 {
			t.Errorf("user %d steps: %+v", i, u.Steps)
		}
	}
	if n := strings.Count(prog.String(), "\n"); n != 7*5 {
		t.Errorf("%d progress lines, want 35:\n%s", n, prog.String())
	}
}

func TestFailureSkipsButDeletes(t *testing.T) {
	calls := map[string][]string{}
	var mu sync.Mutex
	newS := func(u scenario.User) Session {
		return fakeSession{do: func(ctx context.Context, st scenario.Step) (Outcome, error) {
			mu.Lock()
			calls[u.Name] = append(calls[u.Name], st.Do)
			mu.Unlock()
			switch {
			case u.Name == "ua" && st.Do == scenario.Upload:
				return Outcome{}, errors.New("upload: 500 internal error")
			case u.Name == "ub" && st.Do == scenario.Unseal:
				panic("boom")
			case u.Name == "uc" && st.Do == scenario.Launch:
				return Outcome{}, errors.New("launch: no machine")
			}
			return Outcome{}, nil
		}}
	}
	got := Run(context.Background(), users(4), steps("launch", "unseal", "upload", "download", "delete"), newS, Options{Parallel: 4})
	want := map[string]string{
		"ua": "launch=ok unseal=ok upload=failed download=skipped delete=ok",
		"ub": "launch=ok unseal=failed upload=skipped download=skipped delete=ok",
		"uc": "launch=failed unseal=skipped upload=skipped download=skipped delete=skipped",
		"ud": "launch=ok unseal=ok upload=ok download=ok delete=ok",
	}
	for _, u := range got {
		if s := statuses(u); s != want[u.Name] {
			t.Errorf("%s: %s\nwant %s", u.Name, s, want[u.Name])
		}
	}
	if got[0].Status != report.Failed || got[0].Error != "upload: upload: 500 internal error" {
		t.Errorf("ua: status %s error %q", got[0].Status, got[0].Error)
	}
	if !strings.Contains(got[1].Error, "panicked: boom") {
		t.Errorf("ub error %q", got[1].Error)
	}
	if got[3].Status != report.OK {
		t.Errorf("ud was affected by the others: %+v", got[3])
	}
	// The launch that failed must not be followed by a delete call.
	if c := strings.Join(calls["uc"], ","); c != "launch" {
		t.Errorf("uc calls %s", c)
	}
}

func TestStepTimeoutAndCancel(t *testing.T) {
	newS := func(u scenario.User) Session {
		return fakeSession{do: func(ctx context.Context, st scenario.Step) (Outcome, error) {
			if st.Do == scenario.Upload {
				<-ctx.Done()
				return Outcome{}, ctx.Err()
			}
			return Outcome{}, nil
		}}
	}
	got := Run(context.Background(), users(1), steps("launch", "unseal", "upload", "delete"), newS, Options{StepTimeout: 20 * time.Millisecond})
	if e := got[0].Steps[2].Error; !strings.Contains(e, "took longer than 20ms") {
		t.Errorf("timeout error %q", e)
	}
	if got[0].Steps[3].Status != report.OK {
		t.Error("delete must still run after a timed-out step")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got = Run(ctx, users(2), steps("launch", "delete"), newS, Options{Parallel: 1})
	for _, u := range got {
		if u.Status != report.Failed || statuses(u) != "launch=skipped delete=skipped" {
			t.Errorf("cancelled run: %s %s", u.Status, statuses(u))
		}
	}
}

func TestNames(t *testing.T) {
	if got := strings.Join(Names(steps("launch", "delete", "launch", "delete")), ","); got != "launch,delete,launch#2,delete#2" {
		t.Errorf("names %s", got)
	}
}

// TestGlobalFaultMeeting: no user takes a deployment-wide fault step before
// every user has reached it, failed users included (they skip it), even
// with Parallel 1, which such a scenario overrides.
func TestGlobalFaultMeeting(t *testing.T) {
	kill := scenario.Step{Do: scenario.Fault, FaultSpec: scenario.FaultSpec{Kind: scenario.KillAgent, Target: "agent-a"}}
	st := []scenario.Step{{Do: scenario.Launch}, kill, {Do: scenario.Delete}}
	var launched atomic.Int32
	var mu sync.Mutex
	var seen []int32
	newS := func(u scenario.User) Session {
		return fakeSession{do: func(ctx context.Context, st scenario.Step) (Outcome, error) {
			switch st.Do {
			case scenario.Launch:
				launched.Add(1)
				if u.Name == "ub" {
					return Outcome{}, errors.New("no machine")
				}
			case scenario.Fault:
				mu.Lock()
				seen = append(seen, launched.Load())
				mu.Unlock()
				return Outcome{Fault: &report.FaultEffect{Affected: u.Name == "uc", Out: u.Name == "uc", Reason: "killed"}}, nil
			}
			return Outcome{}, nil
		}}
	}
	got := Run(context.Background(), users(4), st, newS, Options{Parallel: 1})
	if len(seen) != 3 {
		t.Fatalf("%d users took the fault, want 3 (one failed its launch)", len(seen))
	}
	for _, n := range seen {
		if n != 4 {
			t.Errorf("a user took the fault after %d of 4 launches", n)
		}
	}
	if s := got[1].Steps[1]; s.Status != report.Skipped {
		t.Errorf("failed user's fault step: %+v", s)
	}
	if f := got[2].Steps[1].Fault; f == nil || !f.Out || f.Reason != "killed" {
		t.Errorf("fault effect not recorded: %+v", got[2].Steps[1])
	}
}
