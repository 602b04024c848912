package router

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/obs"
	"github.com/e-mission/upc/router/api"
)

// MaxBody bounds request bodies: the router's requests are a few fields.
const MaxBody = 64 << 10

// Handler serves the versioned API (/v1/...) and, beside it, the original
// service router's endpoints with their original shapes, so the original
// client scripts keep working; GET /healthz and GET /readyz to anyone, GET
// /metrics to admins and monitors. Every request is counted in the router's
// metrics, refusals included.
func Handler(r *Router, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	h := func(pattern string, f httpx.HandlerFunc) {
		mux.Handle(pattern, httpx.Handle(logger, r.logRefusals(logger, f)))
	}

	mux.HandleFunc("GET /healthz", r.handleHealthz)
	mux.Handle("GET "+obs.ReadyPath, obs.Ready(func(context.Context) error { return r.Ready() }))
	metrics := r.metrics.Handler()
	h("GET "+obs.MetricsPath, r.monitorOnly(func(w http.ResponseWriter, req *http.Request) error {
		metrics.ServeHTTP(w, req)
		return nil
	}))
	h("GET "+whoamiPath, r.handleWhoami)
	h("POST /v1/users", r.adminOnly(r.handleAddUser))
	h("GET /v1/users", r.adminOnly(r.handleUsers))
	h("DELETE /v1/users/{name}", r.adminOnly(r.handleRemoveUser))
	h("POST /v1/instances", r.handleLaunch)
	h("GET /v1/instances", r.handleList)
	h("GET /v1/instances/{id}", r.handleGet)
	h("POST /v1/instances/{id}/pause", r.handleOp(r.Pause))
	h("POST /v1/instances/{id}/resume", r.handleOp(r.Resume))
	h("DELETE /v1/instances/{id}", r.handleDelete)
	h("POST /v1/clear", r.handleClear)
	h("GET /v1/storage/{user}", r.handleStorage)
	h("DELETE /v1/storage/{user}", r.handleErase)
	h("POST /v1/networks", r.adminOnly(r.handleNetworks))

	// The original endpoints (service_router/router.py).
	h("POST /service_request", r.handleServiceRequest)
	h("POST /pause", r.handleLegacyOp(r.Pause))
	h("POST /unpause", r.handleLegacyOp(r.Resume))
	h("POST /kill", r.handleLegacyOp(r.Delete))
	h("POST /clear_containers", func(w http.ResponseWriter, req *http.Request) error {
		if _, err := r.ClearFor(req.Context(), caller(req)); err != nil {
			return status(err, false)
		}
		w.WriteHeader(http.StatusOK)
		return nil
	})
	h("POST /setup_networks", func(w http.ResponseWriter, req *http.Request) error {
		// The original scripts set up networks first: the legacy caller
		// may, as may admins; nothing is removed or exposed by it.
		if who := caller(req); !who.IsAdmin() && who.Role != RoleLegacy {
			return r.forbidden(req, "only an admin may set up networks")
		}
		if _, err := r.SetupNetworks(req.Context()); err != nil {
			return status(err, false)
		}
		w.WriteHeader(http.StatusOK)
		return nil
	})
	return r.metrics.Instrument(mux, r.authenticate(logger, mux))
}

// status maps core errors to HTTP answers. The original router answered 403
// for an unknown service and for an instance that never came up; legacy
// keeps those codes.
func status(err error, legacy bool) error {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, ErrUnknownService):
		code = http.StatusBadRequest
		if legacy {
			code = http.StatusForbidden
		}
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrForbidden):
		code = http.StatusForbidden
	case errors.Is(err, ErrUserExists), errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, ErrLimit):
		code = http.StatusTooManyRequests
		var le *LimitError
		if errors.As(err, &le) {
			return &httpx.Error{Code: code, Msg: err.Error(), Err: err, RetryAfter: le.RetryAfter}
		}
	case errors.Is(err, ErrNoMachine), errors.Is(err, ErrMachineDown):
		code = http.StatusServiceUnavailable
	case errors.Is(err, ErrPMUnreachable):
		code = http.StatusBadGateway
	case errors.Is(err, errors.ErrUnsupported):
		code = http.StatusNotImplemented
	case errors.Is(err, ErrUnhealthy):
		code = http.StatusBadGateway
		if legacy {
			code = http.StatusForbidden
		}
	}
	// The router's callers are its operators' tools: the message helps them
	// and holds nothing secret, so 5xx messages are sent too.
	return &httpx.Error{Code: code, Msg: err.Error(), Err: err}
}

func wire(in Instance) api.Instance {
	out := api.Instance{
		ID: string(in.ID), Service: in.Service, User: in.User, Address: in.Address,
		Image: in.Image, Digest: in.Digest, Machine: in.Machine, State: string(in.State), Created: in.Created,
		Owner: in.Owner, PM: string(in.PM), Secret: in.Secret,
	}
	if in.State == StatePaused {
		out.Hint = PausedHint(in.ID)
	}
	return out
}

// PausedHint is what the router tells a caller of a paused instance: it
// answers nothing until resumed.
func PausedHint(id ID) string {
	return fmt.Sprintf("paused: resume it with POST /v1/instances/%s/resume", id)
}

func (r *Router) handleLaunch(w http.ResponseWriter, req *http.Request) error {
	var body api.LaunchRequest
	if err := httpx.Decode(w, req, &body, httpx.DecodeOptions{MaxBody: MaxBody}); err != nil {
		return err
	}
	if body.Service == "" {
		return httpx.BadRequest("service: required")
	}
	in, err := r.LaunchAs(req.Context(), caller(req), body)
	if err != nil {
		return status(r.metrics.refusal(err), false)
	}
	return httpx.WriteJSON(w, http.StatusCreated, wire(in))
}

func (r *Router) handleList(w http.ResponseWriter, req *http.Request) error {
	q := req.URL.Query()
	for k := range q {
		if k != "user" {
			return httpx.BadRequest("unknown query parameter %q (known: user)", k)
		}
	}
	ins, err := r.ListFor(caller(req), q.Get("user"))
	if err != nil {
		return status(err, false)
	}
	out := api.InstanceList{Instances: make([]api.Instance, len(ins))}
	for i, in := range ins {
		out.Instances[i] = wire(in)
	}
	return httpx.WriteJSON(w, http.StatusOK, out)
}

func (r *Router) handleGet(w http.ResponseWriter, req *http.Request) error {
	in, err := r.Own(caller(req), ID(req.PathValue("id")))
	if err != nil {
		return status(err, false)
	}
	return httpx.WriteJSON(w, http.StatusOK, wire(in))
}

func (r *Router) handleOp(op func(ctx context.Context, id ID) error) httpx.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) error {
		if err := noBody(w, req); err != nil {
			return err
		}
		id := ID(req.PathValue("id"))
		if _, err := r.Own(caller(req), id); err != nil {
			return status(err, false)
		}
		if err := op(req.Context(), id); err != nil {
			return status(err, false)
		}
		in, err := r.Get(id)
		if err != nil {
			return status(err, false)
		}
		return httpx.WriteJSON(w, http.StatusOK, wire(in))
	}
}

func (r *Router) handleDelete(w http.ResponseWriter, req *http.Request) error {
	if _, err := r.Own(caller(req), ID(req.PathValue("id"))); err != nil {
		return status(err, false)
	}
	if err := r.Delete(req.Context(), ID(req.PathValue("id"))); err != nil {
		return status(err, false)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (r *Router) handleClear(w http.ResponseWriter, req *http.Request) error {
	if err := noBody(w, req); err != nil {
		return err
	}
	n, err := r.ClearFor(req.Context(), caller(req))
	if err != nil {
		return status(err, false)
	}
	return httpx.WriteJSON(w, http.StatusOK, api.ClearResult{Removed: n})
}

func storageAnswer(user string, vs []StoredVolume) api.Storage {
	out := api.Storage{User: user, Volumes: make([]api.StoredVolume, len(vs))}
	for i, v := range vs {
		out.Volumes[i] = api.StoredVolume{Name: v.Name, Volume: v.Volume, Machine: v.Machine}
	}
	return out
}

func (r *Router) handleStorage(w http.ResponseWriter, req *http.Request) error {
	user := req.PathValue("user")
	vs, err := r.StorageFor(req.Context(), caller(req), user)
	if err != nil {
		return status(err, false)
	}
	return httpx.WriteJSON(w, http.StatusOK, storageAnswer(user, vs))
}

func (r *Router) handleErase(w http.ResponseWriter, req *http.Request) error {
	if err := noBody(w, req); err != nil {
		return err
	}
	user := req.PathValue("user")
	vs, err := r.EraseFor(req.Context(), caller(req), user)
	if err != nil {
		return status(err, false)
	}
	return httpx.WriteJSON(w, http.StatusOK, storageAnswer(user, vs))
}

func (r *Router) handleNetworks(w http.ResponseWriter, req *http.Request) error {
	if err := noBody(w, req); err != nil {
		return err
	}
	ms, err := r.SetupNetworks(req.Context())
	if err != nil {
		return status(err, false)
	}
	return httpx.WriteJSON(w, http.StatusOK, api.NetworksResult{Machines: ms})
}

// noBody accepts an empty body or an empty JSON object, nothing else.
func noBody(w http.ResponseWriter, req *http.Request) error {
	var v struct{}
	return httpx.Decode(w, req, &v, httpx.DecodeOptions{MaxBody: MaxBody, AllowEmpty: true})
}

// handleServiceRequest is the original POST /service_request: {"service":
// "PM"} → {"address": "http://host:port"}. The original had no users; a
// request without one gets a user of its own ("legacy-<id>"), so two such
// PMs never share a per-user volume.
func (r *Router) handleServiceRequest(w http.ResponseWriter, req *http.Request) error {
	var body api.ServiceRequest
	// The original (bottle) ignored fields it did not read.
	if err := httpx.Decode(w, req, &body, httpx.DecodeOptions{MaxBody: MaxBody, AllowUnknown: true}); err != nil {
		return err
	}
	if body.Service == "" {
		return httpx.BadRequest(`service: required, e.g. {"service": "PM"}`)
	}
	who := caller(req)
	if who.Role != RoleLegacy {
		// With a token, the original endpoint is POST /v1/instances in the
		// original shape; the secret rides along (the original scripts
		// send no token, so never see it).
		in, err := r.LaunchAs(req.Context(), who, api.LaunchRequest{Service: body.Service, User: body.User})
		if err != nil {
			return status(r.metrics.refusal(err), true)
		}
		return httpx.WriteJSON(w, http.StatusOK, api.AddressResponse{Address: in.Address, Secret: in.Secret})
	}
	// The token-less original scripts (insecure_legacy): a user of their
	// own, "legacy-<id>" (or "legacy-<their user>"), never a real user's
	// data, and an instance with no access control.
	user := "legacy-" + string(newID())
	if body.User != "" {
		user = body.User
		if !strings.HasPrefix(user, LegacyName+"-") {
			user = LegacyName + "-" + user
		}
	}
	host, _, _ := net.SplitHostPort(req.RemoteAddr)
	if err := r.lim.allow(LegacyName + "@" + host); err != nil {
		return status(r.metrics.refusal(err), true)
	}
	in, err := r.launch(req.Context(), launchOrder{service: body.Service, user: user, owner: who.Name, legacy: true})
	if err != nil {
		return status(r.metrics.refusal(err), true)
	}
	return httpx.WriteJSON(w, http.StatusOK, api.AddressResponse{Address: in.Address})
}

// handleLegacyOp is the original /pause, /unpause and /kill: {"address":
// ...} → 200 with an empty body.
func (r *Router) handleLegacyOp(op func(ctx context.Context, id ID) error) httpx.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) error {
		var body api.AddressRequest
		if err := httpx.Decode(w, req, &body, httpx.DecodeOptions{MaxBody: MaxBody, AllowUnknown: true}); err != nil {
			return err
		}
		in, err := r.OwnByAddress(caller(req), body.Address)
		if err != nil {
			return status(fmt.Errorf("address: %w", err), true)
		}
		if err := op(req.Context(), in.ID); err != nil {
			return status(err, true)
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}
}

// logRefusals logs every 403 with the caller's identity.
func (r *Router) logRefusals(logger *slog.Logger, f httpx.HandlerFunc) httpx.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) error {
		err := f(w, req)
		if errors.Is(err, ErrForbidden) {
			who := caller(req)
			logger.Warn("refused", "method", req.Method, "path", req.URL.Path, "identity", who.Name, "role", who.Role,
				"remote", req.RemoteAddr, "reason", err.Error())
		}
		return err
	}
}

// RequireToken wraps h so every request but GET /healthz must carry
// "Authorization: Bearer <token>".
func RequireToken(token string, logger *slog.Logger, h http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/healthz" && subtle.ConstantTimeCompare([]byte(req.Header.Get("Authorization")), want) != 1 {
			httpx.Handle(logger, func(http.ResponseWriter, *http.Request) error {
				return httpx.Errorf(http.StatusUnauthorized, "missing or wrong bearer token")
			}).ServeHTTP(w, req)
			return
		}
		h.ServeHTTP(w, req)
	})
}
