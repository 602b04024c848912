// Package pm is the permission manager's HTTP server: e-mission's data API
// (wire-compatible with the original Python client library, see
// services/pm/api), the unseal endpoint and the privacy budget, over the
// encrypted store in services/pm/store.
package pm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/obs"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/query"
	"github.com/e-mission/upc/services/pm/store"
)

// Options tune the server.
type Options struct {
	MaxBody int64 // request body limit; 0 means 64 MiB
	// Access says who the PM answers: the bearer of the instance secret
	// whose hash it holds (the owner) and the grants the owner issued.
	// The zero value answers nothing but GET /healthz; Legacy checks
	// nothing (the original client library).
	Access access.Instance
	// Now is the clock grants expire by; nil means time.Now.
	Now func() time.Time
	// QueryTimeout bounds each data request (a scan holds the store's read
	// lock, which writers wait on); 0 means DefaultQueryTimeout.
	QueryTimeout time.Duration
	// ClaimFile keeps, across restarts, the mark that the owner has used
	// this instance's secret (see claim); "" keeps it in memory only.
	ClaimFile string
}

// DefaultQueryTimeout bounds a data request: a find over a year of a user's
// data takes well under a second.
const DefaultQueryTimeout = 2 * time.Minute

// Server serves one user's PM.
type Server struct {
	st           *store.Store
	log          *slog.Logger
	maxBody      int64
	access       access.Instance
	now          func() time.Time
	grants       grantBook
	spendMu      sync.Mutex // a grant's cap is checked and charged as one step
	queryTimeout time.Duration
	// owner is who the PM answers as its owner: fixed at start, or, for a
	// warm-pool PM, set once by the router's provision (provision.go).
	owner     atomic.Pointer[owner]
	claimFile string
	// use is when the owner or a grant last called (reported in /healthz).
	use     *access.LastUse
	metrics *metrics
}

// New returns a server over st.
func New(st *store.Store, logger *slog.Logger, opts Options) *Server {
	if opts.MaxBody <= 0 {
		opts.MaxBody = 64 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = DefaultQueryTimeout
	}
	s := &Server{st: st, log: logger, maxBody: opts.MaxBody, access: opts.Access, now: opts.Now,
		grants: grantBook{byHash: map[string]*grant{}, byID: map[string]*grant{}}, queryTimeout: opts.QueryTimeout,
		claimFile: opts.ClaimFile, use: access.NewLastUse(opts.Now), metrics: newMetrics()}
	s.owner.Store(&owner{sha256: opts.Access.SHA256, claim: loadClaim(opts.ClaimFile, opts.Access.SHA256, logger)})
	return s
}

// Handler routes the PM's endpoints; every request is counted in the PM's
// metrics, refusals included.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	h := func(pattern string, fn httpx.HandlerFunc) { mux.Handle(pattern, httpx.Handle(s.log, s.logRefusal(fn))) }
	mux.HandleFunc("GET "+api.PathHealthz, s.healthz)
	h("POST "+access.ProvisionPath, s.provision)
	mux.Handle("GET "+obs.ReadyPath, obs.Ready(s.ready))
	metrics := s.metrics.Handler()
	h("GET "+obs.MetricsPath, s.ownerOrMonitor(func(w http.ResponseWriter, r *http.Request) error {
		metrics.ServeHTTP(w, r)
		return nil
	}))
	h("GET "+api.PathStatus, s.status)
	h("POST "+api.PathKey, s.ownerOnly("claim or unseal it", s.unseal))
	h("POST "+api.PathGrants, s.ownerOnly("issue grants", s.issueGrant))
	h("GET "+api.PathGrants, s.ownerOnly("list grants", s.listGrants))
	h("DELETE "+api.PathGrant, s.ownerOnly("revoke grants", s.revokeGrant))
	h("POST "+api.PathGrantCheck, s.grantOnly(s.checkGrant))
	h("POST "+api.PathInsert, s.sealedGuard(s.insert))
	h("POST "+api.PathInsertDeprecated, s.sealedGuard(s.insertDeprecated))
	h("POST "+api.PathFind, s.sealedGuard(s.find))
	h("POST "+api.PathFindOne, s.sealedGuard(s.findOne))
	h("POST "+api.PathCount, s.sealedGuard(s.count))
	h("POST "+api.PathDistinct, s.sealedGuard(s.distinct))
	h("POST "+api.PathUpdate, s.sealedGuard(s.update))
	h("POST "+api.PathUpdateDeprecated, s.sealedGuard(s.updateDeprecated))
	h("POST "+api.PathBulkUpdate, s.ownerOnly("send bulk updates", s.sealedGuard(s.bulkUpdate)))
	h("POST "+api.PathReplaceOne, s.sealedGuard(s.replaceOne))
	h("POST "+api.PathDelete, s.sealedGuard(s.delete))
	h("POST "+api.PathBudget, s.sealedGuard(s.spend))
	h("GET "+api.PathBudgetLedger, s.ownerOnly("read the privacy ledger", s.sealedGuard(s.ledger)))
	h("GET "+api.PathCollections, s.ownerOnly("list the collections", s.sealedGuard(s.collections)))
	return s.metrics.Instrument(mux, s.authenticate(s.use.Track(mux)))
}

// healthz answers that the PM serves and, to the router, whether its owner
// has claimed it (a legacy PM has no secret to lose: it counts as claimed),
// and how long since the owner or a grant last called it.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	claimed := s.access.Legacy || s.owner.Load().claim.done.Load()
	h := access.Health{Status: "ok", Claimed: &claimed, IdleSeconds: s.use.IdleSeconds()}
	httpx.WriteJSON(w, http.StatusOK, h.ForCaller(r))
}

// logRefusal logs the 401s and 403s of authorization (the store's own 403s,
// such as a sealed PM's, are logged as any failed request is).
func (s *Server) logRefusal(next httpx.HandlerFunc) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		err := next(w, r)
		var he *httpx.Error
		if errors.Is(err, errDenied) && errors.As(err, &he) {
			c := callerOf(r)
			who := "owner"
			if c.g != nil {
				who = "grant " + c.g.ID
			}
			s.log.Warn("refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "caller", who, "status", he.Code, "reason", he.Msg)
		}
		return err
	}
}

// storeError maps the store's errors to statuses. Messages never echo
// document values or the key.
func storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrSealed):
		return &httpx.Error{Code: http.StatusForbidden, Msg: store.ErrSealed.Error()}
	case errors.Is(err, store.ErrWrongKey), errors.Is(err, store.ErrAlreadyUnsealed):
		return &httpx.Error{Code: http.StatusForbidden, Msg: err.Error()}
	case errors.Is(err, store.ErrInvalid):
		return &httpx.Error{Code: http.StatusBadRequest, Msg: err.Error()}
	case errors.Is(err, store.ErrDuplicateID), errors.Is(err, store.ErrConflict):
		return &httpx.Error{Code: http.StatusConflict, Msg: err.Error()}
	case errors.Is(err, store.ErrCanceled) && errors.Is(err, context.DeadlineExceeded):
		return &httpx.Error{Code: http.StatusServiceUnavailable, Msg: "the query ran past this PM's time limit and was stopped; narrow its filter or add a limit"}
	case errors.Is(err, store.ErrCanceled):
		// The caller has gone: nobody reads this answer.
		return &httpx.Error{Code: statusClientClosed, Msg: "the caller went away; the query was stopped"}
	case errors.Is(err, store.ErrLedger):
		return &httpx.Error{Code: http.StatusServiceUnavailable, Msg: err.Error() + ": this PM answers no spend until its owner restores the volume"}
	}
	return err
}

// statusClientClosed is logged for a request whose caller went away before
// its answer (nginx's 499: no client sees it).
const statusClientClosed = 499

// sealedGuard refuses data requests while sealed and bounds each by the
// query time limit; a query stops when its caller goes away.
func (s *Server) sealedGuard(next httpx.HandlerFunc) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if s.st.Sealed() {
			return storeError(store.ErrSealed)
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.queryTimeout)
		defer cancel()
		return storeError(next(w, r.WithContext(ctx)))
	}
}

func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	return httpx.Decode(w, r, v, httpx.DecodeOptions{MaxBody: s.maxBody, UseNumber: true})
}

// collections lists the collections holding documents (the owner's
// export reads each).
func (s *Server) collections(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.st.Collections()
	if err != nil {
		return err
	}
	return httpx.WriteJSON(w, http.StatusOK, api.Collections{Collections: cs})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	return httpx.WriteJSON(w, http.StatusOK, s.statusNow())
}

// statusNow is the PM's state, with the ledger's head once unsealed.
func (s *Server) statusNow() api.Status {
	st := api.Status{Sealed: s.st.Sealed(), Initialized: s.st.Initialized()}
	head, err := s.st.LedgerHead()
	st.LedgerHead = head
	if err != nil {
		st.LedgerError = err.Error()
	}
	return st
}

// unseal accepts {"key": "..."} (with an optional "key_kind"), a bare JSON
// string or a bare integer: the original client library sent each in turn.
func (s *Server) unseal(w http.ResponseWriter, r *http.Request) error {
	var raw json.RawMessage
	if err := httpx.Decode(w, r, &raw, httpx.DecodeOptions{MaxBody: 64 << 10}); err != nil {
		return err
	}
	key, kind, err := parseKey(raw)
	if err != nil {
		return err
	}
	if err := s.st.UnsealKind([]byte(key), kind); err != nil {
		if errors.Is(err, store.ErrWrongKey) || errors.Is(err, store.ErrAlreadyUnsealed) || errors.Is(err, store.ErrInvalid) {
			s.log.Warn("unseal refused", "reason", err.Error())
			return storeError(err)
		}
		return fmt.Errorf("unseal: %w", err)
	}
	st := s.statusNow()
	if st.LedgerError != "" {
		s.log.Error("unsealed; the privacy ledger fails its check", "err", st.LedgerError)
	} else {
		s.log.Info("unsealed")
	}
	return httpx.WriteJSON(w, http.StatusOK, st)
}

func parseKey(raw json.RawMessage) (string, store.KeyKind, error) {
	t := strings.TrimSpace(string(raw))
	switch {
	case strings.HasPrefix(t, "{"):
		var kr map[string]json.RawMessage
		if err := json.Unmarshal(raw, &kr); err != nil {
			return "", "", httpx.BadRequest("key body must be {\"key\": \"...\"}")
		}
		for k := range kr {
			if k != "key" && k != "key_kind" {
				return "", "", httpx.BadRequest("unknown field %q in key body; expected {\"key\": \"...\", \"key_kind\": \"passphrase\" or \"random\"}", k)
			}
		}
		v, ok := kr["key"]
		if !ok {
			return "", "", httpx.BadRequest("key body has no \"key\" field")
		}
		kind := store.Passphrase
		if kk, ok := kr["key_kind"]; ok {
			var k string
			if err := json.Unmarshal(kk, &k); err != nil || (k != string(store.Passphrase) && k != string(store.RandomKey)) {
				return "", "", httpx.BadRequest("key_kind must be %q or %q", store.Passphrase, store.RandomKey)
			}
			kind = store.KeyKind(k)
		}
		key, _, err := parseKey(v)
		return key, kind, err
	case strings.HasPrefix(t, "\""):
		var k string
		if err := json.Unmarshal(raw, &k); err != nil {
			return "", "", httpx.BadRequest("key must be a JSON string")
		}
		if k == "" {
			return "", "", httpx.BadRequest("key is empty")
		}
		return k, store.Passphrase, nil
	default:
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil || strings.ContainsAny(t, ".eE-") {
			return "", "", httpx.BadRequest("key must be a string (or a non-negative integer)")
		}
		return n.String(), store.Passphrase, nil
	}
}

// target resolves which collection a request addresses.
func target(stage, db, coll string, idx api.Indices) (string, string, error) {
	var errs []error
	switch {
	case coll != "":
		if stage != "" && stage != coll {
			errs = append(errs, errors.New("stage_name and collection disagree"))
		}
		if db == "" {
			db = api.DefaultDatabase
		}
	case stage != "":
		if db == "" {
			db = api.DefaultDatabase
		}
		coll = stage
	default:
		errs = append(errs, errors.New("no collection: send \"stage_name\", or \"database\" and \"collection\""))
	}
	for _, n := range []struct{ what, v string }{{"database", db}, {"collection", coll}} {
		if n.v == "" {
			continue
		}
		if len(n.v) > 120 || strings.ContainsAny(n.v, "\x00$/\\ ") || strings.HasPrefix(n.v, "system.") {
			errs = append(errs, fmt.Errorf("%s name %q is not valid (at most 120 characters, none of NUL $ / \\ space, not system.*)", n.what, n.v))
		}
	}
	if err := validateIndices(idx); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return "", "", httpx.BadRequest("%v", errors.Join(errs...))
	}
	return db, coll, nil
}

// validateIndices checks the library's index declarations: name (paths joined
// by "\n") → [[direction or type per path], sparse].
func validateIndices(idx api.Indices) error {
	var errs []error
	for name, spec := range idx {
		parts := strings.Split(name, "\n")
		a, ok := spec.([]any)
		if !ok || len(a) != 2 {
			errs = append(errs, fmt.Errorf("index %q must be [[types...], sparse]", name))
			continue
		}
		types, ok := a[0].([]any)
		if !ok || len(types) != len(parts) {
			errs = append(errs, fmt.Errorf("index %q needs one type per path (%d)", name, len(parts)))
		}
		for _, t := range types {
			switch x := t.(type) {
			case string:
				if x != "hashed" && x != "2dsphere" && x != "2d" && x != "text" {
					errs = append(errs, fmt.Errorf("index %q: unknown index type %q", name, x))
				}
			case json.Number:
				if x != "1" && x != "-1" {
					errs = append(errs, fmt.Errorf("index %q: direction must be 1 or -1", name))
				}
			default:
				errs = append(errs, fmt.Errorf("index %q: each type must be 1, -1 or a name such as \"2dsphere\"", name))
			}
		}
		if _, ok := a[1].(bool); !ok {
			errs = append(errs, fmt.Errorf("index %q: sparse must be true or false", name))
		}
	}
	return errors.Join(errs...)
}

func compileFilter(f map[string]any, what string) (*query.Filter, error) {
	c, err := query.Compile(f)
	if err != nil {
		return nil, httpx.BadRequest("%s: %v", what, err)
	}
	return c, nil
}
