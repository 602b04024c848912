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
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/metrics"
	pipeserver "github.com/e-mission/upc/services/pipeline/server"
	"github.com/e-mission/upc/services/pm"
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
	deleted []string
}

func (r *inProcess) Launch(_ context.Context, req api.LaunchRequest) (api.Instance, error) {
	quiet := slog.New(slog.DiscardHandler)
	var srv *httptest.Server
	closeFn := func() { srv.Close() }
	switch req.Service {
	case client.PMService:
		st, err := store.Open(r.t.TempDir(), store.Options{InitialBudget: r.budget, NoSync: true})
		if err != nil {
			return api.Instance{}, err
		}
		srv = httptest.NewServer(pm.New(st, quiet, pm.Options{}).Handler())
		closeFn = func() { srv.Close(); st.Close() }
	case client.PipelineService:
		srv = httptest.NewServer(pipeserver.New(quiet, pipeserver.PMStores(nil)).Handler())
	case client.CountService:
		srv = httptest.NewServer(count.NewServer(quiet, count.PMClients(nil)).Handler())
	case client.MetricsService:
		srv = httptest.NewServer(metrics.NewServer(quiet, metrics.PMClients(nil)).Handler())
	default:
		return api.Instance{}, fmt.Errorf("no in-process %s", req.Service)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	id := fmt.Sprint(req.Service, "-", r.n)
	r.live[id] = closeFn
	return api.Instance{ID: id, Service: req.Service, User: req.User, Address: srv.URL}, nil
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
	err := c.WithService(ctx, client.PipelineService, func(inst api.Instance) error {
		res, err := c.RunPipeline(ctx, inst.Address, pmInst.Address)
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
	err = c.WithService(ctx, client.CountService, func(inst api.Instance) error {
		cres, err = c.Count(ctx, inst.Address, count.Request{PMAddress: pmInst.Address, Query: cq, QueryID: "q-count"})
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
	err = c.WithService(ctx, client.MetricsService, func(inst api.Instance) error {
		mres, err = c.Metrics(ctx, inst.Address, mq)
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
	err = c.WithService(ctx, client.CountService, func(inst api.Instance) error {
		res, err := c.Count(ctx, inst.Address, count.Request{PMAddress: pmInst.Address, Query: cq})
		if res.Success {
			t.Errorf("answer %+v: success with no budget", res)
		}
		return err
	})
	if !errors.Is(err, client.ErrNoBudget) {
		t.Errorf("count with no budget: %v, want ErrNoBudget", err)
	}

	err = c.WithService(ctx, client.CountService, func(inst api.Instance) error {
		_, err := c.Count(ctx, inst.Address, count.Request{Query: cq}) // no pm_address
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "pm_address is required") {
		t.Errorf("count without a PM: %v, want the service's 400 and its message", err)
	}

	boom := errors.New("boom")
	err = c.WithService(ctx, client.MetricsService, func(inst api.Instance) error {
		r.Delete(ctx, inst.ID) // gone before WithService deletes it
		return boom
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "delete Metrics instance") {
		t.Errorf("failed call: %v, want the call's error and the failed delete", err)
	}
	if _, err := c.RunPipeline(ctx, pmInst.Address, pmInst.Address); err == nil {
		t.Error("a pipeline run against a PM's address passed")
	}
	r.mu.Lock()
	live := len(r.live)
	r.mu.Unlock()
	if live != 1 {
		t.Errorf("%d instances live, want only the PM", live)
	}
}
