package router_test

// Unit tests of the router's access control: an in-process router over a
// fake backend (no containers: each instance is a path on one test HTTP
// server, which also plays the PMs' grant check). The same rules run on the
// real backends in the Docker and Kubernetes tests.

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/routerclient"
	pmapi "github.com/e-mission/upc/services/pm/api"
)

// fakeBackend keeps instances in memory; their addresses are paths of srv,
// which answers every health probe and, for PMs, the grant check.
type fakeBackend struct {
	srv *httptest.Server

	mu     sync.Mutex
	specs  map[router.ID]router.Spec
	state  map[router.ID]router.State
	grants map[string]string // grant token → service, valid at every PM (keyed below)
	pmOf   map[string]router.ID
	// claimed, when it holds an instance, is what its /healthz says of
	// its claim (else it answers no body, as services do).
	claimed map[router.ID]bool
	// idle, when it holds an instance, is the idle time its /healthz
	// reports (idle_seconds).
	idle map[router.ID]time.Duration
	// vols are the users' per-user volumes, made by launches and kept until
	// erased; erasing, when set, is waited on by each erase (to hold one
	// open), and wiped records each erase's wipe spec.
	vols     map[string][]router.StoredVolume
	erasing  chan struct{}
	erasures chan string // when set, gets each erase's user as it begins
	wiped    []router.Spec
}

func newFake(t testing.TB) *fakeBackend {
	f := &fakeBackend{specs: map[router.ID]router.Spec{}, state: map[router.ID]router.State{},
		grants: map[string]string{}, pmOf: map[string]router.ID{}, claimed: map[router.ID]bool{}, idle: map[router.ID]time.Duration{},
		vols: map[string][]router.StoredVolume{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// serve: /i/<id>/healthz answers 200; /i/<id>/v1/grants/check answers the
// bearer's grant if that PM issued it, else 403, as a PM does.
func (f *fakeBackend) serve(w http.ResponseWriter, r *http.Request) {
	rest, _ := strings.CutPrefix(r.URL.Path, "/i/")
	id, path, _ := strings.Cut(rest, "/")
	switch "/" + path {
	case "/healthz":
		f.mu.Lock()
		c, ok := f.claimed[router.ID(id)]
		idle, iok := f.idle[router.ID(id)]
		f.mu.Unlock()
		if ok || iok {
			h := access.Health{Status: "ok"}
			if ok {
				h.Claimed = &c
			}
			if iok {
				s := int64(idle / time.Second)
				h.IdleSeconds = &s
			}
			httpx.WriteJSON(w, http.StatusOK, h)
			return
		}
		w.WriteHeader(http.StatusOK)
	case pmapi.PathGrantCheck:
		tok, ok := access.Bearer(r)
		f.mu.Lock()
		svc, known := f.grants[tok]
		pm := f.pmOf[tok]
		f.mu.Unlock()
		if !ok {
			httpx.WriteJSON(w, http.StatusUnauthorized, api.Error{Error: "no credential"})
			return
		}
		if !known || string(pm) != id {
			httpx.WriteJSON(w, http.StatusForbidden, api.Error{Error: "wrong credential"})
			return
		}
		httpx.WriteJSON(w, http.StatusOK, pmapi.Grant{ID: "g1", Service: svc, Expires: time.Now().Add(time.Hour)})
	default:
		http.NotFound(w, r)
	}
}

// grant makes a grant of pm for service.
func (f *fakeBackend) grant(pm router.ID, service string) string {
	tok := access.NewToken(access.PrefixGrant)
	f.mu.Lock()
	f.grants[tok], f.pmOf[tok] = service, pm
	f.mu.Unlock()
	return tok
}

func (f *fakeBackend) spec(id string) router.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.specs[router.ID(id)]
}

func (f *fakeBackend) inst(s router.Spec) router.Instance {
	return router.Instance{ID: s.ID, Service: s.Service, User: s.User, Owner: s.Owner, PM: s.PM,
		Address: f.srv.URL + "/i/" + string(s.ID), Image: s.Image, State: f.state[s.ID], Created: time.Now()}
}

func (f *fakeBackend) Launch(_ context.Context, s router.Spec) (router.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs[s.ID], f.state[s.ID] = s, router.StateRunning
	for _, v := range s.Volumes {
		name := "vol-" + s.User + "-" + v.Name
		if v.PerUser && !slices.ContainsFunc(f.vols[s.User], func(x router.StoredVolume) bool { return x.Name == name }) {
			f.vols[s.User] = append(f.vols[s.User], router.StoredVolume{Name: name, Volume: v.Name, Machine: "fake"})
		}
	}
	return f.inst(s), nil
}

func (f *fakeBackend) UserStorage(_ context.Context, user string) ([]router.StoredVolume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.vols[user]), nil
}

// EraseUserStorage refuses, as the real backends do, while an instance
// mounts one of the user's volumes.
func (f *fakeBackend) EraseUserStorage(_ context.Context, user string, wipe router.Spec) ([]router.StoredVolume, error) {
	f.mu.Lock()
	wait, began := f.erasing, f.erasures
	f.mu.Unlock()
	if began != nil {
		began <- user
	}
	if wait != nil {
		<-wait
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, s := range f.specs {
		if s.User == user && slices.ContainsFunc(s.Volumes, func(v conf.Volume) bool { return v.PerUser }) {
			return nil, fmt.Errorf("%w: instance %s mounts %s's volume", router.ErrConflict, id, user)
		}
	}
	f.wiped = append(f.wiped, wipe)
	gone := f.vols[user]
	delete(f.vols, user)
	return gone, nil
}

func (f *fakeBackend) set(id router.ID, st router.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.specs[id]; !ok {
		return router.ErrNotFound
	}
	f.state[id] = st
	return nil
}

func (f *fakeBackend) Pause(_ context.Context, id router.ID) error {
	return f.set(id, router.StatePaused)
}
func (f *fakeBackend) Resume(_ context.Context, id router.ID) error {
	return f.set(id, router.StateRunning)
}
func (f *fakeBackend) Destroy(_ context.Context, id router.ID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.specs[id]; !ok {
		return router.ErrNotFound
	}
	delete(f.specs, id)
	return nil
}

func (f *fakeBackend) List(context.Context) ([]router.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []router.Instance
	for _, s := range f.specs {
		out = append(out, f.inst(s))
	}
	return out, nil
}

var testCatalog = &conf.Catalog{Services: []conf.Service{
	{Name: "pm", Aliases: []string{"PM"}, Image: "upc/pm", Port: 8080, Health: "/healthz",
		Env:     map[string]string{"UPC_PM_DATA": "/data", access.EnvLegacy: "1", certs.EnvCert: "catalog-cert", certs.EnvPlain: "1"}, // the router overrides the catalog's access and TLS settings
		Volumes: []conf.Volume{{Name: "data", Path: "/data", PerUser: true}}},
	{Name: "count", Image: "upc/count", Port: 8080, Health: "/healthz"},
	{Name: "metrics", Image: "upc/metrics", Port: 8080, Health: "/healthz"},
}}

// accessEnv is a router with users alice, bob (role user) and rex
// (researcher), and the admin.
type accessEnv struct {
	ca                                 *certs.CA // nil: instances launched plain
	fake                               *fakeBackend
	core                               *router.Router
	users                              *router.Users
	srv                                *httptest.Server
	admin, alice, bob, rex             *routerclient.Client
	adminTok, aliceTok, bobTok, rexTok string
	logs                               *strings.Builder
}

func newAccessEnv(t testing.TB, legacy bool, ca ...*certs.CA) *accessEnv {
	t.Helper()
	e := &accessEnv{fake: newFake(t), adminTok: strings.Repeat("z", 40), logs: &strings.Builder{}}
	if len(ca) > 0 {
		e.ca = ca[0]
	}
	var err error
	if e.users, err = router.OpenUsers("", e.adminTok); err != nil {
		t.Fatal(err)
	}
	e.core = e.router(t, legacy)
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, e.logs}, nil))
	e.srv = httptest.NewServer(router.Handler(e.core, logger))
	t.Cleanup(e.srv.Close)
	add := func(name, role string) (*routerclient.Client, string) {
		u, err := e.users.Add(name, role)
		if err != nil {
			t.Fatal(err)
		}
		return e.client(t, u.Token), u.Token
	}
	e.admin = e.client(t, e.adminTok)
	e.alice, e.aliceTok = add("alice", api.RoleUser)
	e.bob, e.bobTok = add("bob", api.RoleUser)
	e.rex, e.rexTok = add("rex", api.RoleResearcher)
	return e
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (e *accessEnv) router(t testing.TB, legacy bool) *router.Router {
	r, err := router.New(router.Options{Backend: e.fake, Catalog: testCatalog, Users: e.users, InsecureLegacy: legacy,
		HealthTimeout: 5 * time.Second, CA: e.ca, PlainHTTP: e.ca == nil})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *accessEnv) client(t testing.TB, token string) *routerclient.Client {
	c, err := routerclient.New(e.srv.URL, routerclient.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// do sends a raw request; token "" sends none.
func (e *accessEnv) do(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func code(err error) int {
	var se *routerclient.Error
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// endpoints is every route but /healthz and /readyz, with a body each
// accepts.
func endpoints(id string) [][3]string {
	return [][3]string{
		{"POST", "/v1/instances", `{"service":"count","user":"alice"}`},
		{"GET", "/v1/instances", ""},
		{"GET", "/v1/instances/" + id, ""},
		{"POST", "/v1/instances/" + id + "/pause", ""},
		{"POST", "/v1/instances/" + id + "/resume", ""},
		{"DELETE", "/v1/instances/" + id, ""},
		{"POST", "/v1/clear", ""},
		{"POST", "/v1/networks", ""},
		{"GET", "/v1/storage/alice", ""},
		{"DELETE", "/v1/storage/alice", ""},
		{"GET", "/v1/whoami", ""},
		{"POST", "/v1/users", `{"name":"mallory","role":"admin"}`},
		{"GET", "/v1/users", ""},
		{"DELETE", "/v1/users/alice", ""},
		{"POST", "/service_request", `{"service":"PM"}`},
		{"POST", "/pause", `{"address":"x"}`},
		{"POST", "/unpause", `{"address":"x"}`},
		{"POST", "/kill", `{"address":"x"}`},
		{"POST", "/clear_containers", ""},
		{"POST", "/setup_networks", ""},
		{"GET", "/metrics", ""},
	}
}

// TestAccessNoCredential: every endpoint but /healthz answers 401 without
// a token, with an unknown one, with an instance secret or with a malformed
// header; nothing is launched or removed.
func TestAccessNoCredential(t *testing.T) {
	e := newAccessEnv(t, false)
	ctx := context.Background()
	in, err := e.alice.Launch(ctx, "pm", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range endpoints(in.ID) {
		for _, tok := range []string{"", "upcu_wrong", in.Secret, e.aliceTok + "x", strings.Repeat("z", 39)} {
			if c, body := e.do(t, ep[0], ep[1], tok, ep[2]); c != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q: %d %s, want 401", ep[0], ep[1], tok, c, body)
			}
		}
		req, _ := http.NewRequest(ep[0], e.srv.URL+ep[1], strings.NewReader(ep[2]))
		req.Header.Set("Authorization", e.aliceTok) // no "Bearer "
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s with a header without Bearer: %v %v", ep[0], ep[1], resp.StatusCode, err)
		}
	}
	if c, body := e.do(t, "GET", "/healthz", "", ""); c != 200 || strings.Contains(body, "insecure_legacy") {
		t.Fatalf("healthz: %d %s", c, body)
	}
	if l, _ := e.admin.List(ctx, ""); len(l) != 1 {
		t.Fatalf("after the refused calls the router has %+v", l)
	}
	if !strings.Contains(e.logs.String(), "refused") {
		t.Fatal("401s are not logged")
	}
}

// TestAccessOwnInstancesOnly: user B reaches none of user A's instances
// (403, the same answer as for a missing one), lists only their own; the
// admin reaches all and gets 404 for a missing instance.
func TestAccessOwnInstancesOnly(t *testing.T) {
	e := newAccessEnv(t, false)
	ctx := context.Background()
	a, err := e.alice.Launch(ctx, "PM", "")
	if err != nil {
		t.Fatal(err)
	}
	if a.User != "alice" || a.Owner != "alice" || !strings.HasPrefix(a.Secret, access.PrefixInstance) {
		t.Fatalf("alice's launch: %+v", a)
	}
	env := e.fake.spec(a.ID).Env
	if env[access.EnvSHA256] != access.Hash(a.Secret) || env[access.EnvLegacy] != "" || e.fake.spec(a.ID).Owner != "alice" {
		t.Fatalf("instance env %v, owner %q: want the secret's hash, no legacy flag", env, e.fake.spec(a.ID).Owner)
	}
	b, err := e.bob.Launch(ctx, "count", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if a.Secret == b.Secret {
		t.Fatal("two launches share a secret")
	}
	if got, err := e.alice.Get(ctx, a.ID); err != nil || got.Secret != "" || got.Owner != "alice" {
		t.Fatalf("get: %+v %v (the secret is sent only at launch)", got, err)
	}

	missing := "0123456789ab"
	for _, id := range []string{a.ID, missing} {
		ops := map[string]func() error{
			"get":    func() error { _, err := e.bob.Get(ctx, id); return err },
			"pause":  func() error { _, err := e.bob.Pause(ctx, id); return err },
			"resume": func() error { _, err := e.bob.Resume(ctx, id); return err },
			"delete": func() error { return e.bob.Delete(ctx, id) },
		}
		for name, op := range ops {
			err := op()
			if code(err) != http.StatusForbidden || !strings.Contains(err.Error(), "no instance "+id+" of yours") {
				t.Errorf("bob %s %s: %v, want 403 no instance of yours", name, id, err)
			}
		}
	}
	if _, err := e.rex.Get(ctx, a.ID); code(err) != http.StatusForbidden {
		t.Errorf("researcher get of alice's PM: %v", err)
	}
	if got, _ := e.alice.Get(ctx, a.ID); got.State != "running" {
		t.Fatalf("bob's refused calls changed alice's PM: %+v", got)
	}
	if !strings.Contains(e.logs.String(), "identity=bob") {
		t.Error("refusals are not logged with the caller's identity")
	}

	if l, err := e.bob.List(ctx, ""); err != nil || len(l) != 1 || l[0].ID != b.ID {
		t.Fatalf("bob lists %+v %v, want only his", l, err)
	}
	if l, err := e.bob.List(ctx, "alice"); err != nil || len(l) != 0 {
		t.Fatalf("bob lists alice's: %+v %v", l, err)
	}
	if l, err := e.admin.List(ctx, ""); err != nil || len(l) != 2 {
		t.Fatalf("admin lists %+v %v", l, err)
	}
	if _, err := e.admin.Get(ctx, missing); code(err) != http.StatusNotFound {
		t.Fatalf("admin get of a missing instance: %v, want 404", err)
	}

	// The owner acts on their own; the admin on anyone's.
	if in, err := e.alice.Pause(ctx, a.ID); err != nil || in.State != "paused" {
		t.Fatalf("alice pauses her PM: %+v %v", in, err)
	}
	if _, err := e.alice.Resume(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.Delete(ctx, b.ID); err != nil {
		t.Fatalf("admin deletes bob's: %v", err)
	}

	// A restarted router (a rebuild from the backend's labels) keeps the owners.
	r2 := e.router(t, false)
	if err := r2.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	bobID, _ := e.users.Authenticate(e.bobTok)
	aliceID, _ := e.users.Authenticate(e.aliceTok)
	if _, err := r2.Own(bobID, router.ID(a.ID)); !errors.Is(err, router.ErrForbidden) {
		t.Fatalf("after a rebuild bob owns alice's PM: %v", err)
	}
	if in, err := r2.Own(aliceID, router.ID(a.ID)); err != nil || in.Owner != "alice" {
		t.Fatalf("after a rebuild: %+v %v", in, err)
	}
	if err := e.alice.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
}

// TestAccessAdminOnly: clear, networks and users are admins'.
func TestAccessAdminOnly(t *testing.T) {
	e := newAccessEnv(t, false)
	ctx := context.Background()
	if _, err := e.alice.Launch(ctx, "pm", ""); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*routerclient.Client{e.alice, e.rex} {
		if _, err := c.Clear(ctx); code(err) != http.StatusForbidden {
			t.Errorf("clear by a non-admin: %v", err)
		}
		if _, err := c.SetupNetworks(ctx); code(err) != http.StatusForbidden {
			t.Errorf("networks by a non-admin: %v", err)
		}
		if _, err := c.AddUser(ctx, "mallory", api.RoleAdmin); code(err) != http.StatusForbidden {
			t.Errorf("add user by a non-admin: %v", err)
		}
		if _, err := c.Users(ctx); code(err) != http.StatusForbidden {
			t.Errorf("list users by a non-admin: %v", err)
		}
		if err := c.RemoveUser(ctx, "bob"); code(err) != http.StatusForbidden {
			t.Errorf("remove user by a non-admin: %v", err)
		}
		for _, p := range []string{"/clear_containers", "/setup_networks"} {
			if c, body := e.do(t, "POST", p, e.aliceTok, ""); c != http.StatusForbidden {
				t.Errorf("%s by alice: %d %s", p, c, body)
			}
		}
	}
	if l, _ := e.admin.List(ctx, ""); len(l) != 1 {
		t.Fatalf("a refused clear removed instances: %+v", l)
	}
	if _, err := e.bob.Whoami(ctx); err != nil {
		t.Fatalf("a refused remove removed bob: %v", err)
	}
	if me, err := e.rex.Whoami(ctx); err != nil || me.Name != "rex" || me.Role != api.RoleResearcher || me.Token != "" {
		t.Fatalf("whoami: %+v %v", me, err)
	}
	if me, err := e.admin.Whoami(ctx); err != nil || me.Name != "admin" || me.Role != api.RoleAdmin {
		t.Fatalf("admin whoami: %+v %v", me, err)
	}
	if ms, err := e.admin.SetupNetworks(ctx); err != nil || len(ms) != 0 {
		t.Fatalf("admin networks: %v %v", ms, err)
	}
	u, err := e.admin.AddUser(ctx, "carol", api.RoleUser)
	if err != nil || !strings.HasPrefix(u.Token, access.PrefixUser) {
		t.Fatalf("admin adds carol: %+v %v", u, err)
	}
	if l, err := e.admin.Users(ctx); err != nil || len(l) != 4 || slices.ContainsFunc(l, func(u api.User) bool { return u.Token != "" }) {
		t.Fatalf("users: %+v %v", l, err)
	}
	if err := e.admin.RemoveUser(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client(t, u.Token).Whoami(ctx); code(err) != http.StatusUnauthorized {
		t.Fatalf("a removed user: %v, want 401", err)
	}
	if n, err := e.admin.Clear(ctx); err != nil || n != 1 {
		t.Fatalf("admin clear: %d %v", n, err)
	}
}

// TestAccessLaunchRules: who may launch what, for whom, bound to which PM.
func TestAccessLaunchRules(t *testing.T) {
	e := newAccessEnv(t, false)
	ctx := context.Background()
	pmA, err := e.alice.Launch(ctx, "pm", "alice")
	if err != nil {
		t.Fatal(err)
	}
	pmB, err := e.bob.Launch(ctx, "pm", "")
	if err != nil {
		t.Fatal(err)
	}
	countGrant := e.fake.grant(router.ID(pmA.ID), "count")
	metricsGrant := e.fake.grant(router.ID(pmA.ID), "metrics")
	bobsGrant := e.fake.grant(router.ID(pmB.ID), "count")

	refused := []struct {
		name string
		c    *routerclient.Client
		req  api.LaunchRequest
		code int
	}{
		{"user for another", e.alice, api.LaunchRequest{Service: "pm", User: "bob"}, 403},
		{"user for another, count", e.bob, api.LaunchRequest{Service: "count", User: "alice"}, 403},
		{"user for a legacy user", e.alice, api.LaunchRequest{Service: "pm", User: "legacy-1"}, 403},
		{"admin without user", e.admin, api.LaunchRequest{Service: "pm"}, 400},
		{"admin for a legacy user", e.admin, api.LaunchRequest{Service: "pm", User: "legacy-1"}, 400},
		{"researcher a PM", e.rex, api.LaunchRequest{Service: "pm", User: "rex"}, 403},
		{"researcher a PM for alice", e.rex, api.LaunchRequest{Service: "PM", User: "alice"}, 403},
		{"researcher a bound PM", e.rex, api.LaunchRequest{Service: "pm", PM: pmA.ID, Grant: countGrant}, 403},
		{"researcher unbound count", e.rex, api.LaunchRequest{Service: "count"}, 403},
		{"researcher wrong grant", e.rex, api.LaunchRequest{Service: "count", PM: pmA.ID, Grant: access.NewToken(access.PrefixGrant)}, 403},
		{"researcher grant of another PM", e.rex, api.LaunchRequest{Service: "count", PM: pmA.ID, Grant: bobsGrant}, 403},
		{"researcher grant for another service", e.rex, api.LaunchRequest{Service: "count", PM: pmA.ID, Grant: metricsGrant}, 403},
		{"researcher grant, missing PM", e.rex, api.LaunchRequest{Service: "count", PM: "0123456789ab", Grant: countGrant}, 403},
		{"researcher grant, not a PM", e.rex, api.LaunchRequest{Service: "count", PM: "", Grant: countGrant}, 400},
		{"researcher instance secret as grant", e.rex, api.LaunchRequest{Service: "count", PM: pmA.ID, Grant: pmA.Secret}, 400},
		{"researcher grant, other user", e.rex, api.LaunchRequest{Service: "count", User: "bob", PM: pmA.ID, Grant: countGrant}, 400},
		{"user bound to another's PM", e.bob, api.LaunchRequest{Service: "count", PM: pmA.ID, Grant: countGrant}, 403},
		{"user binds a PM", e.alice, api.LaunchRequest{Service: "pm", PM: pmA.ID, Grant: countGrant}, 400},
	}
	for _, c := range refused {
		if _, err := c.c.LaunchWith(ctx, c.req); code(err) != c.code {
			t.Errorf("%s: %v, want %d", c.name, err, c.code)
		}
	}
	if l, _ := e.admin.List(ctx, ""); len(l) != 2 {
		t.Fatalf("refused launches launched: %+v", l)
	}

	// A researcher with alice's grant for count: bound to alice's PM.
	in, err := e.rex.LaunchWith(ctx, api.LaunchRequest{Service: "count", PM: pmA.ID, Grant: countGrant})
	if err != nil {
		t.Fatalf("researcher's bound launch: %v", err)
	}
	if in.User != "alice" || in.Owner != "rex" || in.PM != pmA.ID || !strings.HasPrefix(in.Secret, access.PrefixInstance) {
		t.Fatalf("bound launch answered %+v", in)
	}
	env := e.fake.spec(in.ID).Env
	if env[access.EnvPMAddress] != pmA.Address || env[access.EnvPMGrant] != countGrant || env[access.EnvSHA256] != access.Hash(in.Secret) {
		t.Fatalf("bound instance env %v", env)
	}
	if _, err := e.alice.Get(ctx, in.ID); code(err) != 403 {
		t.Fatalf("the PM's owner reaches the researcher's instance: %v (owners act on what they launched)", err)
	}
	if _, err := e.rex.Get(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	// Alice binds her own count to her PM; admin may bind too.
	if in, err := e.alice.LaunchWith(ctx, api.LaunchRequest{Service: "count", PM: pmA.ID, Grant: countGrant}); err != nil || in.Owner != "alice" || in.PM != pmA.ID {
		t.Fatalf("alice's bound launch: %+v %v", in, err)
	}
	if _, err := e.admin.LaunchWith(ctx, api.LaunchRequest{Service: "metrics", PM: pmA.ID, Grant: metricsGrant}); err != nil {
		t.Fatalf("admin's bound launch: %v", err)
	}
	if _, err := e.admin.LaunchWith(ctx, api.LaunchRequest{Service: "metrics", PM: "0123456789ab", Grant: metricsGrant}); code(err) != 404 {
		t.Fatalf("admin's bound launch on a missing PM: %v", err)
	}
	// Users launch unbound services for themselves; the admin for anyone.
	if in, err := e.bob.Launch(ctx, "count", ""); err != nil || in.User != "bob" || in.Owner != "bob" {
		t.Fatalf("bob's count: %+v %v", in, err)
	}
	if in, err := e.admin.Launch(ctx, "pm", "dora"); err != nil || in.User != "dora" || in.Owner != "admin" {
		t.Fatalf("admin's launch for dora: %+v %v", in, err)
	}
}

// TestAccessOriginalEndpoints: without insecure_legacy the original
// endpoints need a token and act as its identity; with it, a token-less
// caller is "legacy": its launches are for legacy-* users with no access
// control, and it reaches only its own instances.
func TestAccessOriginalEndpoints(t *testing.T) {
	ctx := context.Background()
	t.Run("secure", func(t *testing.T) {
		e := newAccessEnv(t, false)
		c, body := e.do(t, "POST", "/service_request", e.aliceTok, `{"service":"PM"}`)
		if c != 200 || !strings.Contains(body, `"secret":"upcs_`) {
			t.Fatalf("service_request with alice's token: %d %s", c, body)
		}
		l, _ := e.alice.List(ctx, "")
		if len(l) != 1 || l[0].User != "alice" {
			t.Fatalf("alice's original launch: %+v", l)
		}
		addr := `{"address":"` + l[0].Address + `"}`
		for _, p := range []string{"/pause", "/unpause", "/kill"} {
			if c, body := e.do(t, "POST", p, e.bobTok, addr); c != 403 || !strings.Contains(body, "of yours") {
				t.Errorf("bob %s alice's: %d %s", p, c, body)
			}
			if c, body := e.do(t, "POST", p, "", addr); c != 401 {
				t.Errorf("token-less %s: %d %s", p, c, body)
			}
		}
		if c, body := e.do(t, "POST", "/service_request", e.bobTok, `{"service":"PM","user":"alice"}`); c != 403 {
			t.Errorf("bob's service_request for alice: %d %s", c, body)
		}
		if c, body := e.do(t, "POST", "/kill", e.aliceTok, addr); c != 200 {
			t.Fatalf("alice kills her own: %d %s", c, body)
		}
	})
	t.Run("insecure_legacy", func(t *testing.T) {
		e := newAccessEnv(t, true)
		if c, body := e.do(t, "GET", "/healthz", "", ""); c != 200 || !strings.Contains(body, `"insecure_legacy":true`) {
			t.Fatalf("healthz: %d %s", c, body)
		}
		alices, err := e.alice.Launch(ctx, "pm", "")
		if err != nil {
			t.Fatal(err)
		}
		c, body := e.do(t, "POST", "/service_request", "", `{"service":"PM"}`)
		if c != 200 || strings.Contains(body, "secret") {
			t.Fatalf("token-less service_request: %d %s", c, body)
		}
		c, _ = e.do(t, "POST", "/service_request", "", `{"service":"PM","user":"alice"}`)
		if c != 200 {
			t.Fatal(c)
		}
		all, _ := e.admin.List(ctx, "")
		var legacy []api.Instance
		for _, in := range all {
			if in.Owner == router.LegacyName {
				legacy = append(legacy, in)
				env := e.fake.spec(in.ID).Env
				if !strings.HasPrefix(in.User, "legacy-") || env[access.EnvLegacy] != "1" || env[access.EnvSHA256] != "" {
					t.Errorf("legacy launch %+v with env %v", in, env)
				}
			}
		}
		if len(legacy) != 2 || !slices.ContainsFunc(legacy, func(in api.Instance) bool { return in.User == "legacy-alice" }) {
			t.Fatalf("legacy launches: %+v", legacy)
		}
		// Token-less callers reach neither alice's instance nor the v1 API.
		if c, body := e.do(t, "POST", "/kill", "", `{"address":"`+alices.Address+`"}`); c != 403 {
			t.Fatalf("token-less kill of alice's PM: %d %s", c, body)
		}
		for _, ep := range endpoints(alices.ID) {
			if !strings.HasPrefix(ep[1], "/v1/") {
				continue
			}
			if c, _ := e.do(t, ep[0], ep[1], "", ep[2]); c != 401 {
				t.Errorf("token-less %s %s under insecure_legacy: %d", ep[0], ep[1], c)
			}
		}
		if c, _ := e.do(t, "POST", "/setup_networks", "", ""); c != 200 {
			t.Fatalf("token-less setup_networks: %d", c)
		}
		if c, body := e.do(t, "POST", "/pause", "", `{"address":"`+legacy[0].Address+`"}`); c != 200 {
			t.Fatalf("token-less pause of its own: %d %s", c, body)
		}
		if c, body := e.do(t, "POST", "/clear_containers", "", ""); c != 200 {
			t.Fatalf("token-less clear_containers: %d %s", c, body)
		}
		if l, _ := e.admin.List(ctx, ""); len(l) != 1 || l[0].ID != alices.ID {
			t.Fatalf("token-less clear_containers left %+v, want only alice's PM", l)
		}
	})
}

// TestLaunchIssuesCertificates: with a CA, each instance the router
// launches gets a certificate of its own naming it (and the CA to trust),
// marked TLS for its backend; a legacy instance gets none; a catalog entry
// cannot set the certificate variables. Without a CA and without an
// explicit choice of plain HTTP, no router is made.
func TestLaunchIssuesCertificates(t *testing.T) {
	ca := certstest.New(t)
	e := newAccessEnv(t, true, ca.CA)
	ctx := context.Background()
	in, err := e.alice.Launch(ctx, "pm", "alice")
	if err != nil {
		t.Fatal(err)
	}
	spec := e.fake.spec(string(in.ID))
	if !spec.TLS {
		t.Error("spec.TLS is off")
	}
	s, err := certs.ServingFromEnv(func(k string) string { return spec.Env[k] }, false)
	if err != nil {
		t.Fatalf("the instance could not serve with what the router gave it: %v", err)
	}
	if got := s.Keypair.Leaf().DNSNames; len(got) != 1 || got[0] != certs.InstanceName(string(in.ID)) {
		t.Errorf("certificate names %v, want %s", got, certs.InstanceName(string(in.ID)))
	}
	if err := certs.VerifyInstance(ca.Pool(), []*x509.Certificate{s.Keypair.Leaf()}); err != nil {
		t.Error(err)
	}
	if left := time.Until(s.Keypair.Leaf().NotAfter); left > certs.DefaultInstanceTTL || left < certs.DefaultInstanceTTL-time.Hour {
		t.Errorf("certificate lasts %s, want about %s", left, certs.DefaultInstanceTTL)
	}
	// Two instances never share a key.
	in2, err := e.admin.Launch(ctx, "pm", "carol")
	if err != nil {
		t.Fatal(err)
	}
	if e.fake.spec(string(in2.ID)).Env[certs.EnvKey] == spec.Env[certs.EnvKey] {
		t.Error("two instances got the same key")
	}
	// A token-less original script's instance is legacy: plain, no certificate.
	code, body := e.do(t, "POST", "/service_request", "", `{"service": "PM", "user": "legacy-user"}`)
	if code != 200 {
		t.Fatalf("legacy launch: %d %s", code, body)
	}
	legacy := 0
	for id, sp := range e.fake.specs {
		if sp.User != "legacy-user" {
			continue
		}
		legacy++
		if sp.TLS || sp.Env[certs.EnvCert] != "" || sp.Env[certs.EnvPlain] != "" {
			t.Errorf("legacy instance %s: TLS %v, certificate or catalog variables set", id, sp.TLS)
		}
	}
	if legacy != 1 {
		t.Errorf("%d legacy instances, want 1", legacy)
	}
	if spec.Env[certs.EnvPlain] != "" {
		t.Error("the catalog's UPC_PLAIN_HTTP reached the instance")
	}
	if _, err := router.New(router.Options{Backend: e.fake, Catalog: testCatalog}); err == nil || !strings.Contains(err.Error(), "no CA") {
		t.Errorf("router without CA or plain choice: %v", err)
	}
}
