package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/router/api"
	pmapi "github.com/e-mission/upc/services/pm/api"
)

// TestAcknowledgedKept compares the acknowledged part of a real day with a
// download: all of it there, one document missing, one changed.
func TestAcknowledgedKept(t *testing.T) {
	day := "../../testdata/real_examples/shankari_2015-08-23.gz"
	entries, err := client.LoadDay(day)
	if err != nil {
		t.Fatal(err)
	}
	acked := len(entries) / 2
	all := make([]client.Entry, 0, len(entries))
	for _, e := range entries {
		p, err := client.Prepare(e, "alice")
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p)
	}
	// What a PM holds after the whole day: more than what was acknowledged.
	docs := client.Expected(all)
	kept, lost, err := AcknowledgedKept(day, "alice", acked, docs)
	if err != nil || kept == 0 || lost != 0 {
		t.Fatalf("whole day downloaded: kept %d lost %d err %v", kept, lost, err)
	}
	// One acknowledged document gone, another changed.
	ackd := client.Expected(all[:acked])
	gone, changed := docKey(ackd[0]), docKey(ackd[1])
	var fewer []client.Entry
	for _, d := range docs {
		switch docKey(d) {
		case gone:
		case changed:
			fewer = append(fewer, client.Entry{"metadata": d["metadata"], "data": map[string]any{"changed": true}})
		default:
			fewer = append(fewer, d)
		}
	}
	k2, l2, err := AcknowledgedKept(day, "alice", acked, fewer)
	if err != nil || l2 != 2 || k2 != kept-2 {
		t.Errorf("one missing, one changed: kept %d lost %d (of %d) err %v", k2, l2, kept, err)
	}
	if _, _, err := AcknowledgedKept(day, "alice", len(entries)+1, docs); err == nil {
		t.Error("more acknowledged than entries: accepted")
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func TestIsTimeout(t *testing.T) {
	for err, want := range map[error]bool{
		fmt.Errorf("download: %w", context.DeadlineExceeded): true,
		fmt.Errorf("post: %w", timeoutErr{}):                 true,
		errors.New("connection refused"):                     false,
		context.Canceled:                                     false,
	} {
		if IsTimeout(err) != want {
			t.Errorf("IsTimeout(%v) = %v", err, !want)
		}
	}
}

// A resumed PM that is sealed again (Kubernetes: a new process in a new
// pod) gets the user's key again; one still unsealed (Docker: thawed) does
// not.
func TestUnsealResumed(t *testing.T) {
	for _, sealedPM := range []bool{true, false} {
		var keys []string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case pmapi.PathStatus:
				json.NewEncoder(w).Encode(pmapi.Status{Sealed: sealedPM, Initialized: true})
			case pmapi.PathKey:
				var k pmapi.KeyRequest
				json.NewDecoder(r.Body).Decode(&k)
				keys = append(keys, k.Key)
				w.Write([]byte("{}"))
			default:
				http.NotFound(w, r)
			}
		}))
		s := &session{u: scenario.User{ID: "u", Key: "the-key"}, c: &client.Client{HTTP: srv.Client()}, pm: &api.Instance{ID: "pm1", Address: srv.URL}, unsealed: true}
		err := s.unsealResumed(context.Background())
		srv.Close()
		if err != nil {
			t.Fatalf("sealed=%v: %v", sealedPM, err)
		}
		if want := map[bool]int{true: 1, false: 0}[sealedPM]; len(keys) != want || (want == 1 && keys[0] != "the-key") {
			t.Errorf("sealed=%v: keys sent %q, want %d of the user's", sealedPM, keys, want)
		}
	}
}

// routeFaults records the deployment-wide faults a session asks for, and
// stops each there.
type routeFaults struct{ asked []string }

var errRouted = errors.New("routed to the deployment")

func (f *routeFaults) Deployment(_ context.Context, _ int, st scenario.Step) (DeploymentFault, error) {
	f.asked = append(f.asked, st.Kind)
	return DeploymentFault{}, errRouted
}
func (f *routeFaults) KillInstance(context.Context, string) error { return errors.New("not here") }
func (f *routeFaults) FreezeInstance(context.Context, string) (func(context.Context) error, error) {
	return nil, errors.New("not here")
}

// TestGlobalFaultsReachTheDeployment: every fault kind the scenario calls
// deployment-wide goes to Faults.Deployment, whatever its name (kill-kubelet
// once did not).
func TestGlobalFaultsReachTheDeployment(t *testing.T) {
	globals := 0
	for _, kind := range scenario.FaultKinds {
		st := scenario.Step{Do: scenario.Fault, FaultSpec: scenario.FaultSpec{Kind: kind}}
		if !st.Global() {
			continue
		}
		globals++
		f := &routeFaults{}
		s := &session{f: f, pm: &api.Instance{ID: "pm-1"}}
		if _, err := s.fault(context.Background(), st); !errors.Is(err, errRouted) || len(f.asked) != 1 {
			t.Errorf("%s: %v after %v; want it routed to the deployment once", kind, err, f.asked)
		}
	}
	if globals < 4 {
		t.Errorf("%d deployment-wide kinds; want at least kill-agent, disconnect-agent, restart-router and kill-kubelet", globals)
	}
}
