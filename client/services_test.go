package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/metrics"
	pipeapi "github.com/e-mission/upc/services/pipeline/api"
	pipeserver "github.com/e-mission/upc/services/pipeline/server"
	"github.com/e-mission/upc/services/pm"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// inProcess is a Router serving each service from this process: the
// services' own code over HTTP, without containers. Budget is the initial
// privacy budget of the PMs it starts.
type inProcess struct {
	t      *testing.T
	budget float64

	mu      sync.Mutex
	n       int
	live    map[string]func()
	pms     map[string]string // PM id → address
	deleted []string
}

func (r *inProcess) Launch(ctx context.Context, req api.LaunchRequest) (api.Instance, error) {
	quiet := slog.New(slog.DiscardHandler)
	// As the router does: a fresh secret per instance, given to the
	// instance as its hash, and a service bound to the PM whose grant it
	// was launched with.
	secret := access.NewToken(access.PrefixInstance)
	in := access.Instance{SHA256: access.Hash(secret)}
	if req.PM != "" {
		r.mu.Lock()
		pmAddr, ok := r.pms[req.PM]
		r.mu.Unlock()
		if !ok {
			return api.Instance{}, fmt.Errorf("no pm %s", req.PM)
		}
		if _, err := pmclient.New(pmAddr, nil, pmclient.WithToken(req.Grant)).CheckGrant(ctx); err != nil {
			return api.Instance{}, fmt.Errorf("grant: %w", err)
		}
		in.PMAddress, in.PMGrant = pmAddr, req.Grant
	}
	var srv *httptest.Server
	closeFn := func() { srv.Close() }
	switch req.Service {
	case client.PMService:
		st, err := store.Open(r.t.TempDir(), store.Options{InitialBudget: r.budget, NoSync: true})
		if err != nil {
			return api.Instance{}, err
		}
		srv = httptest.NewServer(pm.New(st, quiet, pm.Options{Access: in}).Handler())
		closeFn = func() { srv.Close(); st.Close() }
	case client.PipelineService:
		s := pipeserver.New(quiet, pipeserver.PMStores(nil))
		s.Access = in
		srv = httptest.NewServer(s.Handler())
	case client.CountService:
		s := count.NewServer(quiet, count.PMClients(nil))
		s.Access = in
		srv = httptest.NewServer(s.Handler())
	case client.MetricsService:
		s := metrics.NewServer(quiet, metrics.PMClients(nil))
		s.Access = in
		srv = httptest.NewServer(s.Handler())
	default:
		return api.Instance{}, fmt.Errorf("no in-process %s", req.Service)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	id := fmt.Sprint(req.Service, "-", r.n)
	r.live[id] = closeFn
	if req.Service == client.PMService {
		if r.pms == nil {
			r.pms = map[string]string{}
		}
		r.pms[id] = srv.URL
	}
	return api.Instance{ID: id, Service: req.Service, User: req.User, Address: srv.URL, Secret: secret}, nil
}

func (r *inProcess) Delete(_ context.Context, id string) error {
	r.mu.Lock()
	f := r.live[id]
	delete(r.live, id)
	r.deleted = append(r.deleted, id)
	r.mu.Unlock()
	if f == nil {
		return fmt.Errorf("no instance %s", id)
	}
	f()
	return nil
}

func (r *inProcess) Pause(context.Context, string) error  { return nil }
func (r *inProcess) Resume(context.Context, string) error { return nil }
func (r *inProcess) List(context.Context, string) ([]api.Instance, error) {
	return nil, nil
}

func (r *inProcess) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.live {
		f()
	}
}

// withDay starts a PM for a user of r, unsealed, holding a real day.
func withDay(t *testing.T, r *inProcess, user string) (*client.Client, api.Instance) {
	t.Helper()
	ctx := context.Background()
	c := &client.Client{Router: r, User: user}
	inst, err := r.Launch(ctx, api.LaunchRequest{Service: client.PMService, User: user})
	if err != nil {
		t.Fatal(err)
	}
	c.PMSecret = inst.Secret
	if err := c.PM(inst.Address).UnsealRandom(ctx, strings.Repeat("ab", 32)); err != nil {
		t.Fatal(err)
	}
	entries, err := client.LoadDay(filepath.Join(realdata.DirT(t), "shankari_2016-08-10"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Upload(ctx, inst.Address, entries); err != nil {
		t.Fatal(err)
	}
	return c, inst
}

// Around the day's first trip start (from its ground truth), for the whole day.
const countQuery = `{"offset": 100, "alpha": 0.05, "start_ts": 1470700800, "end_ts": 1470960000,
  "sel_region": {"geometry": {"type": "Polygon", "coordinates": [[[-122.091, 37.387], [-122.081, 37.387], [-122.081, 37.397], [-122.091, 37.397], [-122.091, 37.387]]]}}}`

const metricsQuery = `{"offset": 1100, "alpha": 0.5, "start_time": {"year": 2016, "month": 8, "day": 10, "timezone": "America/Los_Angeles"},
  "end_time": {"year": 2016, "month": 8, "day": 11, "timezone": "America/Los_Angeles"}, "freq": "DAILY", "metric": "count"}`

// TestServicesInProcess: the user's typed calls of the pipeline, count and
// metrics services, each launched and deleted through WithService, over the
// services' real handlers and a real PM holding a real day.
func TestServicesInProcess(t *testing.T) {
	ctx := context.Background()
	r := &inProcess{t: t, budget: 1, live: map[string]func(){}}
	defer r.closeAll()
	c, pmInst := withDay(t, r, "u1")

	var trips int
	err := c.WithService(ctx, client.PipelineService, pmInst, func(inst api.Instance) error {
		res, err := c.RunPipeline(ctx, inst, pipeapi.Request{PMAddress: pmInst.Address})
		trips = res.Written["analysis/cleaned_trip"]
		return err
	})
	if err != nil || trips == 0 {
		t.Fatalf("pipeline: %d trips, %v", trips, err)
	}

	cq, err := client.ParseCountQuery([]byte(countQuery))
	if err != nil {
		t.Fatal(err)
	}
	var cres count.ResponseV1
	err = c.WithService(ctx, client.CountService, pmInst, func(inst api.Instance) error {
		cres, err = c.Count(ctx, inst, count.Request{PMAddress: pmInst.Address, Query: cq, QueryID: "q-count"})
		return err
	})
	if err != nil || cres.Results == nil || *cres.Results != 1 || cres.PrivacyCost <= 0 {
		t.Fatalf("count: %+v, %v; want 1 at a cost", cres, err)
	}

	mq, err := client.ParseMetricsQuery([]byte(metricsQuery))
	if err != nil {
		t.Fatal(err)
	}
	mq.PMAddress = pmInst.Address
	var mres metrics.LocalDateResponseV1
	err = c.WithService(ctx, client.MetricsService, pmInst, func(inst api.Instance) error {
		mres, err = c.Metrics(ctx, inst, mq)
		return err
	})
	if err != nil || len(mres.Results) != len(client.DefaultModes) || mres.PrivacyCost <= 0 {
		t.Fatalf("metrics: %+v, %v; want a value for each default mode at a cost", mres, err)
	}

	r.mu.Lock()
	deleted, live := len(r.deleted), len(r.live)
	r.mu.Unlock()
	if deleted != 3 || live != 1 {
		t.Errorf("%d instances deleted, %d live; want the three services deleted and the PM live", deleted, live)
	}
}

// TestServicesRefusals: a budget that cannot pay is ErrNoBudget with the
// answer; a service's error answer carries its status; WithService deletes
// the instance when the call fails and names both failures.
func TestServicesRefusals(t *testing.T) {
	ctx := context.Background()
	r := &inProcess{t: t, budget: 0.01, live: map[string]func(){}}
	defer r.closeAll()
	c, pmInst := withDay(t, r, "u2")
	cq, err := client.ParseCountQuery([]byte(countQuery))
	if err != nil {
		t.Fatal(err)
	}
	err = c.WithService(ctx, client.CountService, pmInst, func(inst api.Instance) error {
		res, err := c.Count(ctx, inst, count.Request{PMAddress: pmInst.Address, Query: cq})
		if res.Success {
			t.Errorf("answer %+v: success with no budget", res)
		}
		return err
	})
	if !errors.Is(err, client.ErrNoBudget) {
		t.Errorf("count with no budget: %v, want ErrNoBudget", err)
	}

	// B's PM, and B's bound count service asked about A's PM.
	other := &inProcess{t: t, budget: 1, live: map[string]func(){}}
	defer other.closeAll()
	_, otherPM := withDay(t, other, "u3")
	err = c.WithService(ctx, client.CountService, pmInst, func(inst api.Instance) error {
		_, err := c.Count(ctx, inst, count.Request{PMAddress: otherPM.Address, Query: cq})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "bound to another PM") {
		t.Errorf("count naming another user's PM: %v, want the service's 403 and its message", err)
	}
	// Without its secret, a service answers nobody.
	err = c.WithService(ctx, client.CountService, pmInst, func(inst api.Instance) error {
		inst.Secret = ""
		_, err := c.Count(ctx, inst, count.Request{Query: cq})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("count without the service's secret: %v, want 401", err)
	}

	boom := errors.New("boom")
	err = c.WithService(ctx, client.MetricsService, pmInst, func(inst api.Instance) error {
		r.Delete(ctx, inst.ID) // gone before WithService deletes it
		return boom
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "delete Metrics instance") {
		t.Errorf("failed call: %v, want the call's error and the failed delete", err)
	}
	if _, err := c.RunPipeline(ctx, pmInst, pipeapi.Request{PMAddress: pmInst.Address}); err == nil {
		t.Error("a pipeline run against a PM's address passed")
	}
	r.mu.Lock()
	live := len(r.live)
	r.mu.Unlock()
	if live != 1 {
		t.Errorf("%d instances live, want only the PM", live)
	}
}
