package router

import (
	"context"
	"log/slog"
	"net/http"
	"strings"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/obs"
	"github.com/e-mission/upc/router/api"
)

// whoamiPath is GET /v1/whoami, which every identity may call.
const whoamiPath = "/v1/whoami"

type identityKey struct{}

// WithIdentity returns ctx carrying who made the request.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity the authentication middleware put in
// ctx.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// original reports whether path is one of the original router's endpoints,
// the only ones a token-less caller may use (with insecure_legacy).
func original(path string) bool {
	switch path {
	case "/service_request", "/pause", "/unpause", "/kill", "/clear_containers", "/setup_networks":
		return true
	}
	return false
}

// authenticate puts the caller's identity in each request's context. Every
// request but GET /healthz and GET /readyz bears "Authorization: Bearer
// <token>" of a user of the store or of the admin; no token or an unknown
// one answers 401. With insecure_legacy, a token-less request to an original
// endpoint is the legacy identity.
func (r *Router) authenticate(logger *slog.Logger, next http.Handler) http.Handler {
	refuse := func(w http.ResponseWriter, req *http.Request, msg string) {
		logger.Warn("refused", "method", req.Method, "path", req.URL.Path, "remote", req.RemoteAddr, "status", http.StatusUnauthorized, "reason", msg)
		httpx.WriteJSON(w, http.StatusUnauthorized, api.Error{Error: msg})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if access.Open(req) {
			next.ServeHTTP(w, req)
			return
		}
		tok, ok := access.Bearer(req)
		var id Identity
		switch {
		case !ok && r.insecureLegacy && original(req.URL.Path):
			id = Identity{Name: LegacyName, Role: RoleLegacy}
		case !ok:
			refuse(w, req, "no credential: send Authorization: Bearer <your upcu_ token> (upc users add makes one)")
			return
		default:
			if id, ok = r.users.Authenticate(tok); !ok {
				refuse(w, req, "unknown credential")
				return
			}
		}
		if id.Role == api.RoleMonitor && req.URL.Path != obs.MetricsPath && req.URL.Path != whoamiPath {
			// A monitor is a scraper's credential: nothing but the metrics
			// (and who it is), whatever the route would let a user do.
			const msg = "a monitor reads " + obs.MetricsPath + " only"
			logger.Warn("refused", "method", req.Method, "path", req.URL.Path, "identity", id.Name, "role", id.Role,
				"remote", req.RemoteAddr, "status", http.StatusForbidden, "reason", msg)
			httpx.WriteJSON(w, http.StatusForbidden, api.Error{Error: msg})
			return
		}
		next.ServeHTTP(w, req.WithContext(WithIdentity(req.Context(), id)))
	})
}

// caller is the request's identity; the middleware always sets one.
func caller(req *http.Request) Identity {
	id, ok := IdentityFrom(req.Context())
	if !ok {
		// Only reachable if a handler is served without authenticate:
		// nobody, who may do nothing.
		return Identity{Name: "", Role: ""}
	}
	return id
}

// forbidden is a 403 naming the refusal (logRefusals logs it with the
// caller's identity).
func (r *Router) forbidden(req *http.Request, format string, args ...any) error {
	err := httpx.Errorf(http.StatusForbidden, format, args...)
	err.Err = ErrForbidden
	return err
}

// adminOnly refuses everyone but admins.
func (r *Router) adminOnly(f httpx.HandlerFunc) httpx.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) error {
		if !caller(req).IsAdmin() {
			return r.forbidden(req, "only an admin may do this")
		}
		return f(w, req)
	}
}

func (r *Router) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	body := map[string]any{"status": "ok"}
	if r.insecureLegacy {
		body["insecure_legacy"] = true
	}
	httpx.WriteJSON(w, http.StatusOK, body)
}

func (r *Router) handleWhoami(w http.ResponseWriter, req *http.Request) error {
	id := caller(req)
	return httpx.WriteJSON(w, http.StatusOK, api.User{Name: id.Name, Role: id.Role})
}

func (r *Router) handleAddUser(w http.ResponseWriter, req *http.Request) error {
	var body api.NewUser
	if err := httpx.Decode(w, req, &body, httpx.DecodeOptions{MaxBody: MaxBody}); err != nil {
		return err
	}
	u, err := r.users.Add(strings.TrimSpace(body.Name), strings.TrimSpace(body.Role))
	if err != nil {
		return status(err, false)
	}
	r.logger.Info("user added", "user", u.Name, "role", u.Role, "by", caller(req).Name)
	return httpx.WriteJSON(w, http.StatusCreated, u)
}

func (r *Router) handleUsers(w http.ResponseWriter, req *http.Request) error {
	return httpx.WriteJSON(w, http.StatusOK, api.UserList{Users: r.users.List()})
}

func (r *Router) handleRemoveUser(w http.ResponseWriter, req *http.Request) error {
	name := req.PathValue("name")
	if err := r.users.Remove(name); err != nil {
		return status(err, false)
	}
	r.logger.Info("user removed", "user", name, "by", caller(req).Name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
