package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/obs"
)

// maxBody bounds agent requests: a launch request is a few hundred bytes.
const maxBody = 256 << 10

// Handler serves e over HTTP for a router on another machine: only to
// callers bearing opts.Token, and launching only opts.Images (see
// HandlerOptions; the zero value refuses everything but GET /healthz and
// GET /readyz). GET /metrics also answers a monitor's client certificate
// (access.Monitor). The router's in-process use of an Engine needs neither.
func Handler(e *Engine, logger *slog.Logger, opts HandlerOptions) http.Handler {
	var sum string
	if opts.Token != "" {
		sum = access.Hash(opts.Token)
	}
	images := catalog(slices.Clone(opts.Images))
	m := newMetrics()
	mux := http.NewServeMux()
	h := func(pattern string, f httpx.HandlerFunc) { mux.Handle(pattern, httpx.Handle(logger, f)) }
	h("GET /healthz", func(w http.ResponseWriter, r *http.Request) error {
		if err := e.Ping(r.Context()); err != nil {
			return &httpx.Error{Code: http.StatusServiceUnavailable, Msg: "docker engine does not answer", Err: err}
		}
		return httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET "+obs.ReadyPath, obs.Ready(func(ctx context.Context) error {
		if e.Ping(ctx) != nil {
			return errEngineDown
		}
		return nil
	}))
	mux.Handle("GET "+obs.MetricsPath, m.Handler())
	h("POST /v1/network", func(w http.ResponseWriter, r *http.Request) error {
		if err := emptyBody(w, r); err != nil {
			return err
		}
		n, err := e.EnsureNetwork(r.Context())
		if err != nil {
			return status(err)
		}
		return httpx.WriteJSON(w, http.StatusOK, n)
	})
	// launch serves both launches: a user's instance, and a warm-pool PM
	// (no user yet) that the router later claims for one.
	launch := func(pool bool) func(http.ResponseWriter, *http.Request) error {
		return func(w http.ResponseWriter, r *http.Request) error {
			var req LaunchRequest
			if err := httpx.Decode(w, r, &req, httpx.DecodeOptions{MaxBody: maxBody}); err != nil {
				return err
			}
			req.Pool = pool
			if err := req.Validate(); err != nil {
				return status(err)
			}
			start := time.Now()
			if err := images.check(r.Context(), req, e.imageID); err != nil {
				m.observe(opLaunch, err, start)
				logger.Warn("refused", append([]any{"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err.Error()}, describe(req)...)...)
				return status(err)
			}
			c, err := e.Launch(r.Context(), req) // req.Pool says which
			m.observe(opLaunch, err, start)
			if err != nil {
				return status(err)
			}
			return httpx.WriteJSON(w, http.StatusCreated, c)
		}
	}
	h("POST /v1/containers", launch(false))
	h("POST /v1/pool", launch(true))
	h("POST /v1/pool/{instance}/claim", func(w http.ResponseWriter, r *http.Request) error {
		var req ClaimRequest
		if err := httpx.Decode(w, r, &req, httpx.DecodeOptions{MaxBody: maxBody}); err != nil {
			return err
		}
		if req.Instance != "" && req.Instance != r.PathValue("instance") {
			return status(fmt.Errorf("%w: body names instance %q, the path %q", ErrInvalid, req.Instance, r.PathValue("instance")))
		}
		req.Instance = r.PathValue("instance")
		c, err := e.Claim(r.Context(), req)
		if err != nil {
			return status(err)
		}
		return httpx.WriteJSON(w, http.StatusOK, c)
	})
	h("POST /v1/pool/drain", func(w http.ResponseWriter, r *http.Request) error {
		if err := emptyBody(w, r); err != nil {
			return err
		}
		n, err := e.DrainPool(r.Context())
		if err != nil {
			return status(err)
		}
		return httpx.WriteJSON(w, http.StatusOK, ClearResult{Removed: n})
	})
	h("GET /v1/containers", func(w http.ResponseWriter, r *http.Request) error {
		cs, err := e.List(r.Context())
		if err != nil {
			return status(err)
		}
		return httpx.WriteJSON(w, http.StatusOK, ContainerList{Containers: cs})
	})
	op := func(name string, f func(*Engine, context.Context, string) error) httpx.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) error {
			if err := emptyBody(w, r); err != nil {
				return err
			}
			start := time.Now()
			err := f(e, r.Context(), r.PathValue("instance"))
			m.observe(name, err, start)
			if err != nil {
				return status(err)
			}
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	h("POST /v1/containers/{instance}/pause", op(opPause, (*Engine).Pause))
	h("POST /v1/containers/{instance}/unpause", op(opUnpause, (*Engine).Unpause))
	h("DELETE /v1/containers/{instance}", op(opRemove, (*Engine).Remove))
	h("GET /v1/volumes", func(w http.ResponseWriter, r *http.Request) error {
		vs, err := e.UserVolumes(r.Context(), r.URL.Query().Get("user"))
		if err != nil {
			return status(err)
		}
		return httpx.WriteJSON(w, http.StatusOK, VolumeList{Volumes: vs})
	})
	h("DELETE /v1/volumes", func(w http.ResponseWriter, r *http.Request) error {
		if err := emptyBody(w, r); err != nil {
			return err
		}
		vs, err := e.RemoveUserVolumes(r.Context(), r.URL.Query().Get("user"))
		if err != nil {
			return status(err)
		}
		return httpx.WriteJSON(w, http.StatusOK, VolumeList{Volumes: vs})
	})
	h("POST /v1/clear", func(w http.ResponseWriter, r *http.Request) error {
		if err := emptyBody(w, r); err != nil {
			return err
		}
		n, err := e.Clear(r.Context())
		if err != nil {
			return status(err)
		}
		return httpx.WriteJSON(w, http.StatusOK, ClearResult{Removed: n})
	})
	return m.Instrument(mux, requireToken(sum, logger, mux))
}

func emptyBody(w http.ResponseWriter, r *http.Request) error {
	var v struct{}
	return httpx.Decode(w, r, &v, httpx.DecodeOptions{MaxBody: maxBody, AllowEmpty: true})
}

func status(err error) error {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrForbidden):
		code = http.StatusForbidden
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	}
	// The agent's only caller is the router, which reports the message on.
	return &httpx.Error{Code: code, Msg: err.Error(), Err: err}
}
