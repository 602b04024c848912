// Package server is the pipeline service of a user's private cloud: it runs
// the intake pipeline over the user's PM. POST /run_pipeline keeps the
// original body ({"pm_address", "uuid"}); POST /v1/run answers with what the
// run did.
package server

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/obs"
	"github.com/e-mission/upc/services/internal/pmbind"
	"github.com/e-mission/upc/services/pipeline"
	"github.com/e-mission/upc/services/pipeline/api"
	"github.com/e-mission/upc/services/pipeline/pmstore"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// Connector returns the Store of user in the PM at pmAddress, reached
// bearing grant ("" for none).
type Connector func(pmAddress, grant, user string) pipeline.Store

// PMStores connects through pmclient over hc (nil: http.DefaultClient). An
// address without a scheme gets http://.
func PMStores(hc *http.Client) Connector {
	return func(addr, grant, user string) pipeline.Store {
		return pmstore.New(pmclient.New(pmbind.Normalize(addr), hc, pmclient.WithToken(grant)), user)
	}
}

// Server is the pipeline service.
type Server struct {
	Logger  *slog.Logger
	Connect Connector
	// Access says who may call the service (the bearer of its instance
	// secret) and which PM it reaches: bound to one, shared (each request
	// names its PM and grant) or legacy (see services/internal/pmbind). The
	// zero value answers nothing but /healthz.
	Access access.Instance

	mu      sync.Mutex
	running map[string]*sync.Mutex // one run at a time per user's PM
}

// New returns a pipeline server.
func New(logger *slog.Logger, connect Connector) *Server {
	return &Server{Logger: logger, Connect: connect, running: map[string]*sync.Mutex{}}
}

// Request is the body of both endpoints.
type Request = api.Request

// Result is the versioned answer.
type Result = api.Result

// Handler serves /run_pipeline, /v1/run, /healthz and /readyz (open: ready
// once serving), and /metrics (its requests by route and code) to the
// bearer of the instance secret or a monitor's client certificate, as
// access.Guard decides.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+api.PathRunOriginal, httpx.Handle(s.Logger, func(w http.ResponseWriter, r *http.Request) error {
		res, err := s.run(w, r)
		if err != nil {
			return err
		}
		// The original answered 200 with no body; its client only checks r.ok.
		return httpx.WriteJSON(w, http.StatusOK, map[string]bool{"success": res.Success})
	}))
	mux.Handle("POST "+api.PathRun, httpx.Handle(s.Logger, func(w http.ResponseWriter, r *http.Request) error {
		res, err := s.run(w, r)
		if err != nil {
			return err
		}
		return httpx.WriteJSON(w, http.StatusOK, res)
	}))
	// Authenticated requests are use; the health probe that reports it is not.
	use := access.NewLastUse(nil)
	mux.HandleFunc("GET /healthz", use.Healthz)
	m := obs.New()
	mux.Handle("GET "+obs.ReadyPath, obs.Ready(obs.Always))
	mux.Handle("GET "+obs.MetricsPath, m.Handler())
	return m.Instrument(mux, access.Guard(s.Access, s.Logger, use.Track(mux)))
}

func (s *Server) lock(key string) func() {
	s.mu.Lock()
	m, ok := s.running[key]
	if !ok {
		m = &sync.Mutex{}
		s.running[key] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (s *Server) run(w http.ResponseWriter, r *http.Request) (Result, error) {
	var req Request
	if err := httpx.Decode(w, r, &req, httpx.DecodeOptions{}); err != nil {
		return Result{}, err
	}
	target, err := pmbind.Resolve(s.Access, req.PMAddress, req.Grant)
	if err != nil {
		return Result{}, err
	}
	if err := req.Validate(); err != nil {
		return Result{}, httpx.BadRequest("invalid pipeline request: %w", err)
	}
	defer s.lock(pmbind.Normalize(target.Address) + "\x00" + req.UUID)()
	res, err := Run(r.Context(), s.Connect(target.Address, target.Grant, req.UUID), req.UUID, s.Logger)
	if err != nil {
		code := http.StatusBadGateway
		if pmbind.Refused(err) {
			code = http.StatusForbidden // the PM refused the grant, or this use of it
		}
		return Result{}, &httpx.Error{Code: code, Msg: "pipeline run failed: " + err.Error(), Err: err}
	}
	s.Logger.Info("pipeline run", "uuid", req.UUID, "written", res.Written)
	return res, nil
}

// counting wraps a Store and counts inserted entries by key.
type counting struct {
	pipeline.Store
	mu sync.Mutex
	n  map[string]int
}

func (c *counting) Insert(ctx context.Context, coll string, es []pipeline.Entry) error {
	if err := c.Store.Insert(ctx, coll, es); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range es {
		c.n[e.Metadata.Key]++
	}
	return nil
}

// Run runs the whole pipeline for user over st.
func Run(ctx context.Context, st pipeline.Store, user string, logger *slog.Logger) (Result, error) {
	cs := &counting{Store: st, n: map[string]int{}}
	run := &pipeline.Run{Store: cs, UserID: user, Seed: pipeline.DefaultSeed, Logger: logger}
	if err := run.Execute(ctx); err != nil {
		return Result{}, err
	}
	res := Result{Success: true, UUID: user, StageMillis: map[string]float64{}, Written: cs.n}
	for k, d := range run.Timing() {
		res.StageMillis[k] = float64(d) / float64(time.Millisecond)
	}
	return res, nil
}
