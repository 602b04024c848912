package aggregator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/pipeline/server"
	"github.com/e-mission/upc/services/pm"
	"github.com/e-mission/upc/services/pm/store"
)

// inProcess is a Router that starts each service as an in-process HTTP
// server (the PM with its production settings: fsync on, the default KDF).
// It stands in for the router and the engine only in BenchmarkUserCPU, which
// measures what the services themselves cost per user, without containers.
type inProcess struct {
	b    *testing.B
	mu   sync.Mutex
	live map[string]func()
	pms  map[string]string // PM id → address
	n    int
}

func (r *inProcess) Launch(ctx context.Context, req api.LaunchRequest) (api.Instance, error) {
	quiet := slog.New(slog.DiscardHandler)
	// As the router does: a secret per instance, and services bound to the
	// PM whose grant they were launched with.
	secret := access.NewToken(access.PrefixInstance)
	in := access.Instance{SHA256: access.Hash(secret)}
	if req.PM != "" {
		r.mu.Lock()
		in.PMAddress, in.PMGrant = r.pms[req.PM], req.Grant
		r.mu.Unlock()
	}
	var srv *httptest.Server
	var closeFn func()
	switch req.Service {
	case "pm", "PM":
		st, err := store.Open(r.b.TempDir(), store.Options{InitialBudget: 1})
		if err != nil {
			return api.Instance{}, err
		}
		srv = httptest.NewServer(pm.New(st, quiet, pm.Options{Access: in}).Handler())
		closeFn = func() { srv.Close(); st.Close() }
	case client.PipelineService:
		s := server.New(quiet, server.PMStores(nil))
		s.Access = in
		srv = httptest.NewServer(s.Handler())
		closeFn = srv.Close
	case client.CountService:
		s := count.NewServer(quiet, count.PMClients(nil))
		s.Access = in
		srv = httptest.NewServer(s.Handler())
		closeFn = srv.Close
	default:
		return api.Instance{}, fmt.Errorf("no in-process %s", req.Service)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	id := fmt.Sprint(r.n)
	r.live[id] = closeFn
	if req.Service == "pm" || req.Service == "PM" {
		r.pms[id] = srv.URL
	}
	return api.Instance{ID: id, Service: req.Service, User: req.User, Address: srv.URL, Secret: secret}, nil
}

func (r *inProcess) Delete(_ context.Context, id string) error {
	r.mu.Lock()
	f := r.live[id]
	delete(r.live, id)
	r.mu.Unlock()
	if f != nil {
		f()
	}
	return nil
}

func (r *inProcess) Pause(context.Context, string) error  { return nil }
func (r *inProcess) Resume(context.Context, string) error { return nil }
func (r *inProcess) List(context.Context, string) ([]api.Instance, error) {
	return nil, nil
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkUserCPU runs the aggregator's whole per-user flow (PM unseal,
// batched upload, pipeline, count query, delete) over the six real days with
// every service in this process, and reports the CPU time per user: the
// services' own share of a run, without the container engine's.
//
//	go test -run '^$' -bench BenchmarkUserCPU -benchtime 3x ./aggregator/
func BenchmarkUserCPU(b *testing.B) {
	src := realdata.DirT(b)
	dir := b.TempDir()
	// The real days (stored compressed), each a user of its own.
	days, err := DayFiles(src)
	if err != nil {
		b.Fatal(err)
	}
	var files []string
	for _, d := range days {
		raw, err := realdata.ReadFile(d)
		if err != nil {
			b.Fatal(err)
		}
		f := filepath.Join(dir, strings.TrimSuffix(filepath.Base(d), ".gz"))
		if err := os.WriteFile(f, raw, 0o600); err != nil {
			b.Fatal(err)
		}
		files = append(files, f)
	}
	q, err := ParseQuery(Count, []byte(`{"offset": 100, "alpha": 0.05, "start_ts": 1000000000, "end_ts": 2000000000,
		"sel_region": {"geometry": {"type": "Polygon", "coordinates": [[[-122.06, 37.38], [-122.04, 37.38], [-122.04, 37.39], [-122.06, 37.39], [-122.06, 37.38]]]}}}`))
	if err != nil {
		b.Fatal(err)
	}
	var cpu time.Duration
	users := 0
	for i := 0; i < b.N; i++ {
		r := &inProcess{b: b, live: map[string]func(){}, pms: map[string]string{}}
		c0 := processCPU()
		res, err := Run(context.Background(), files, Options{Router: r, HTTP: &http.Client{}, Query: q, Parallel: 2, SharedServices: true, // in process, plain
			RunID: fmt.Sprint("bench-", i), Progress: io.Discard})
		cpu += processCPU() - c0
		if err != nil {
			b.Fatal(err)
		}
		if res.NumberParticipants != len(files) {
			b.Fatalf("%d of %d users answered: %+v", res.NumberParticipants, len(files), res.PerUser)
		}
		users += len(files)
	}
	b.ReportMetric(float64(cpu.Milliseconds())/float64(users), "cpu-ms/user")
}
