package pm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/query"
	"github.com/e-mission/upc/services/pm/store"
)

// Who may call what (docs/security.md): the bearer of the instance secret
// (whose hash the router gave the PM) is the owner and may do everything; the
// bearer of a grant the owner issued may do what the grant names and nothing
// else; anyone else is refused. Grants live in memory: they end with the
// process.

// Limits on what the owner may ask of a grant.
const (
	defaultGrantTTL = time.Hour
	maxGrantTTL     = 720 * time.Hour
	maxStreams      = 1000
	maxNameLen      = 100
	// grantKeep is how long an expired grant stays listed.
	grantKeep = 24 * time.Hour
)

// grant is an issued grant as the PM keeps it: the token's hash, never the
// token.
type grant struct {
	api.Grant // Token empty
	hash      string
}

// readAll and writeAll report whether the grant's scope is every stream.
func (g *grant) readAll() bool  { return slices.Contains(g.Read, api.Wildcard) }
func (g *grant) writeAll() bool { return slices.Contains(g.Write, api.Wildcard) }

func (g *grant) mayWrite(key string) bool {
	return g.writeAll() || (key != "" && slices.Contains(g.Write, key))
}

// grantBook holds the grants issued by this process.
type grantBook struct {
	mu     sync.Mutex
	byHash map[string]*grant
	byID   map[string]*grant
}

// caller is who bears a request: the owner, a grant's holder, or a monitor
// (a client certificate that reads /metrics only: access.Monitor).
type caller struct {
	owner   bool
	g       *grant
	monitor bool
}

type callerKey struct{}

func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c
}

// authenticate finds who bears r: no credential is 401, a wrong, unknown,
// expired or revoked one 403; every refusal is logged with the method, path
// and remote address. GET /healthz and GET /readyz need nothing, GET
// /metrics takes a monitor's client certificate too; a legacy PM checks
// nothing.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.access.Legacy {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{owner: true})))
			return
		}
		if access.Open(r) {
			next.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == access.ProvisionPath {
			next.ServeHTTP(w, r) // the router's certificate, checked there
			return
		}
		o := s.owner.Load()
		if s.access.Pooled && o.sha256 == "" {
			s.refuse(w, r, &httpx.Error{Code: http.StatusServiceUnavailable, Err: errDenied,
				Msg: "this PM is in the warm pool and has no owner yet: launch a PM through the router"})
			return
		}
		if access.Monitor(r) {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{monitor: true})))
			return
		}
		tok, ok := access.Bearer(r)
		var c caller
		var err *httpx.Error
		switch {
		case !ok:
			err = deny(http.StatusUnauthorized, "this PM answers only its owner and the grants they issued: send Authorization: Bearer <instance secret or grant>")
		case access.Match(tok, o.sha256):
			c.owner = true
			o.claim.mark()
		default:
			c.g, err = s.grantFor(tok)
		}
		if err != nil {
			s.refuse(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

// errDenied marks the refusals of access control (deny), so that they are
// logged as such.
var errDenied = errors.New("access refused")

// deny is a refusal of access control: code is 401 or 403.
func deny(code int, format string, args ...any) *httpx.Error {
	return &httpx.Error{Code: code, Msg: fmt.Sprintf(format, args...), Err: errDenied}
}

// refuse answers a refusal of authenticate and logs it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err *httpx.Error) {
	s.log.Warn("refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "caller", "unknown", "status", err.Code, "reason", err.Msg)
	httpx.WriteJSON(w, err.Code, httpx.ErrorBody{Error: err.Msg})
}

// grantFor returns the valid grant whose token is tok, or a 403.
func (s *Server) grantFor(tok string) (*grant, *httpx.Error) {
	s.grants.mu.Lock()
	g := s.grants.byHash[access.Hash(tok)]
	var cp grant
	if g != nil {
		cp = *g
	}
	s.grants.mu.Unlock()
	switch {
	case g == nil:
		return nil, deny(http.StatusForbidden, "wrong credential for this PM")
	case cp.Revoked:
		return nil, deny(http.StatusForbidden, "grant %s was revoked", cp.ID)
	case !s.now().Before(cp.Expires):
		return nil, deny(http.StatusForbidden, "grant %s expired at %s", cp.ID, cp.Expires.UTC().Format(time.RFC3339))
	}
	return &cp, nil
}

// ownerOnly refuses every caller but the owner.
func (s *Server) ownerOnly(what string, next httpx.HandlerFunc) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !callerOf(r).owner {
			return deny(http.StatusForbidden, "only this PM's owner may %s", what)
		}
		return next(w, r)
	}
}

// ownerOrMonitor lets the owner and monitors through: the PM's metrics,
// which hold counts and ε, never data, streams or grants.
func (s *Server) ownerOrMonitor(next httpx.HandlerFunc) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if c := callerOf(r); !c.owner && !c.monitor {
			return deny(http.StatusForbidden, "only this PM's owner or a monitor may read its metrics")
		}
		return next(w, r)
	}
}

// grantOnly refuses every caller but a grant's holder.
func (s *Server) grantOnly(next httpx.HandlerFunc) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if callerOf(r).g == nil {
			return deny(http.StatusForbidden, "no grant: this call answers the grant its caller bears")
		}
		return next(w, r)
	}
}

// readScope restricts a read's filter to the streams the caller may read.
func readScope(r *http.Request, f *query.Filter) (*query.Filter, error) {
	g := callerOf(r).g
	if g == nil || g.readAll() {
		return f, nil
	}
	if len(g.Read) == 0 {
		return nil, deny(http.StatusForbidden, "grant %s reads nothing", g.ID)
	}
	return f.Within("metadata.key", g.Read)
}

// writeScope restricts an update's or delete's filter to the streams the
// caller may write; check (nil for the owner) refuses a written document
// outside them.
func writeScope(r *http.Request, f *query.Filter) (*query.Filter, func(map[string]any) error, error) {
	g := callerOf(r).g
	if g == nil {
		return f, nil, nil
	}
	if len(g.Write) == 0 {
		return nil, nil, deny(http.StatusForbidden, "grant %s writes nothing", g.ID)
	}
	check := func(doc map[string]any) error {
		key := ""
		if md, ok := doc["metadata"].(map[string]any); ok {
			key, _ = md["key"].(string)
		}
		if !g.mayWrite(key) {
			return outOfScope(g, key)
		}
		return nil
	}
	if g.writeAll() {
		return f, check, nil
	}
	nf, err := f.Within("metadata.key", g.Write)
	return nf, check, err
}

func outOfScope(g *grant, key string) error {
	if key == "" {
		return deny(http.StatusForbidden, "grant %s may not write a document without a metadata.key", g.ID)
	}
	return deny(http.StatusForbidden, "grant %s may not write stream %q", g.ID, key)
}

// checkInsert refuses documents outside the caller's write scope.
func checkInsert(r *http.Request, docs []store.Doc) error {
	g := callerOf(r).g
	if g == nil {
		return nil
	}
	for _, d := range docs {
		if k := d.Key(); !g.mayWrite(k) {
			return outOfScope(g, k)
		}
	}
	return nil
}

// issueGrant answers POST /v1/grants (owner only).
func (s *Server) issueGrant(w http.ResponseWriter, r *http.Request) error {
	var req api.GrantRequest
	if err := httpx.Decode(w, r, &req, httpx.DecodeOptions{MaxBody: 1 << 20}); err != nil {
		return err
	}
	ttl, err := validGrant(req)
	if err != nil {
		return err
	}
	now := s.now()
	g := &grant{Grant: api.Grant{ID: "g" + randomHex(12), Service: req.Service, Read: dedupe(req.Read), Write: dedupe(req.Write),
		Spend: req.Spend, Expires: now.Add(ttl).UTC()}}
	tok := access.NewToken(access.PrefixGrant)
	g.hash = access.Hash(tok)
	s.grants.mu.Lock()
	for h, old := range s.grants.byHash { // forget grants long expired
		if now.Sub(old.Expires) > grantKeep {
			delete(s.grants.byHash, h)
			delete(s.grants.byID, old.ID)
		}
	}
	s.grants.byHash[g.hash] = g
	s.grants.byID[g.ID] = g
	s.grants.mu.Unlock()
	s.log.Info("grant issued", "grant", g.ID, "service", g.Service, "reads", len(g.Read), "writes", len(g.Write), "spend", g.Spend, "expires", g.Expires)
	out := g.Grant
	out.Token = tok
	return httpx.WriteJSON(w, http.StatusCreated, out)
}

func validGrant(req api.GrantRequest) (time.Duration, error) {
	var errs []error
	if req.Service == "" || len(req.Service) > maxNameLen {
		errs = append(errs, fmt.Errorf("service must name who the grant is for (1 to %d characters)", maxNameLen))
	}
	for what, l := range map[string][]string{"read": req.Read, "write": req.Write} {
		if len(l) > maxStreams {
			errs = append(errs, fmt.Errorf("%s: at most %d streams", what, maxStreams))
		}
		for _, k := range l {
			if k == "" || len(k) > 200 {
				errs = append(errs, fmt.Errorf("%s: a stream is 1 to 200 characters (or %q for all)", what, api.Wildcard))
				break
			}
		}
	}
	if math.IsNaN(req.Spend) || math.IsInf(req.Spend, 0) || req.Spend < 0 {
		errs = append(errs, errors.New("spend must be a number ≥ 0"))
	}
	ttl := defaultGrantTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > maxGrantTTL {
			errs = append(errs, fmt.Errorf("ttl %q must be a duration above 0 and at most %v, such as 1h", req.TTL, maxGrantTTL))
		}
		ttl = d
	}
	if err := errors.Join(errs...); err != nil {
		return 0, httpx.BadRequest("%v", err)
	}
	return ttl, nil
}

func dedupe(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	out := slices.Clone(l)
	sort.Strings(out)
	return slices.Compact(out)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("pm: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// withSpent is g as answered: with what it has spent, when the budget can
// tell (an unsealed PM).
func (s *Server) withSpent(g api.Grant) api.Grant {
	g.Token = ""
	if !s.st.Sealed() {
		if spent, err := s.st.GrantSpent(g.ID); err == nil {
			g.Spent = spent
		}
	}
	return g
}

// listGrants answers GET /v1/grants (owner only).
func (s *Server) listGrants(w http.ResponseWriter, r *http.Request) error {
	s.grants.mu.Lock()
	l := make([]api.Grant, 0, len(s.grants.byID))
	for _, g := range s.grants.byID {
		l = append(l, g.Grant)
	}
	s.grants.mu.Unlock()
	sort.Slice(l, func(i, j int) bool {
		if !l[i].Expires.Equal(l[j].Expires) {
			return l[i].Expires.Before(l[j].Expires)
		}
		return l[i].ID < l[j].ID
	})
	for i := range l {
		l[i] = s.withSpent(l[i])
	}
	return httpx.WriteJSON(w, http.StatusOK, api.GrantList{Grants: l})
}

// revokeGrant answers DELETE /v1/grants/{id} (owner only).
func (s *Server) revokeGrant(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	s.grants.mu.Lock()
	g := s.grants.byID[id]
	if g != nil {
		g.Revoked = true
	}
	s.grants.mu.Unlock()
	if g == nil {
		return httpx.Errorf(http.StatusNotFound, "no grant %q", id)
	}
	s.log.Info("grant revoked", "grant", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkGrant answers POST /v1/grants/check: the caller's grant.
func (s *Server) checkGrant(w http.ResponseWriter, r *http.Request) error {
	return httpx.WriteJSON(w, http.StatusOK, s.withSpent(callerOf(r).g.Grant))
}
