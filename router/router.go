package router

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
)

// Options configure a Router. Backend and Catalog are required.
type Options struct {
	Backend Backend
	Catalog *conf.Catalog
	Logger  *slog.Logger
	// HealthTimeout bounds how long a launch waits for the new instance to
	// answer its health path before removing it. Default 30s.
	HealthTimeout time.Duration
	// HTTPClient probes instances' health paths and checks grants at PMs.
	// Default: a client with a 2s per-request timeout.
	HTTPClient *http.Client
	// Users authenticates callers of Handler; nil is an empty store in
	// memory (no one but, with InsecureLegacy, the original scripts).
	Users *Users
	// InsecureLegacy lets token-less callers use the original endpoints, as
	// the original scripts do: their instances run with no access control.
	InsecureLegacy bool
	// CA issues every instance a certificate of its own at launch (renewed
	// on resume): instances serve HTTPS, and the router verifies them
	// against it. Legacy instances stay plain.
	CA *certs.CA
	// InstanceCertTTL is how long an instance's certificate lasts; 0 is
	// certs.DefaultInstanceTTL.
	InstanceCertTTL time.Duration
	// PlainHTTP launches instances without certificates when there is no
	// CA: keys, tokens and data then cross the network in clear. It must be
	// chosen explicitly (deny by default).
	PlainHTTP bool
	// MaxInstancesPerUser caps one user's live instances (0: the default,
	// DefaultMaxInstancesPerUser).
	MaxInstancesPerUser int
	// LaunchRate and LaunchBurst bound each identity's launches (admins
	// excepted): a token bucket of LaunchBurst refilled at LaunchRate a
	// second (0: the defaults).
	LaunchRate  float64
	LaunchBurst int
	// ClaimGrace is how long after its launch an instance's secret is
	// expected to have been used; past it, an unclaimed PM is replaced when
	// its user launches again (0: DefaultClaimGrace). PMs this router did
	// not launch (adopted after a restart) are replaced at once.
	ClaimGrace time.Duration
	// Now is the clock of the idle policy (Sweep); nil is time.Now.
	Now func() time.Time
	// IdleInterval is how often SweepIdle sweeps (0: derived from the
	// catalog's shortest idle duration, see SweepIdle).
	IdleInterval time.Duration
	// WarmPool is how many sealed PMs RunPool keeps started ahead of
	// launches (0: none). It needs a CA and a PoolBackend.
	WarmPool int
	// PoolFillOnce: RunPool fills the pool to WarmPool once and does not
	// replace what launches take (nor retire old ones): a benchmark's pool,
	// filled before the run and measured apart, whose refill would
	// otherwise compete with the run for the engine.
	PoolFillOnce bool
	// PoolFillParallel is how many pooled instances RunPool starts at once
	// (0: one at a time, as an operator's background refill wants; at most
	// MaxPoolFillParallel). A benchmark's pool, filled before the run, is
	// filled sooner when the engine starts several together.
	PoolFillParallel int
}

// MaxPoolFillParallel bounds Options.PoolFillParallel.
const MaxPoolFillParallel = 64

// DefaultClaimGrace: a client unseals its PM within seconds of the launch
// answer.
const DefaultClaimGrace = time.Minute

// Router is the service router's core: it launches catalog services for
// users on its backend, tracks the instances, and rebuilds that view from
// the backend's labels after a restart.
type Router struct {
	backend       Backend
	catalog       *conf.Catalog
	logger        *slog.Logger
	healthTimeout time.Duration
	client        *http.Client
	placer        placer
	users         *Users
	// insecureLegacy: see Options.InsecureLegacy.
	insecureLegacy bool
	ca             *certs.CA
	certTTL        time.Duration
	// renewer calls instances with the router's client certificate.
	renewer *http.Client
	lim     *limits
	metrics *metrics
	// rebuilt: Rebuild has replaced the view at least once (Ready).
	rebuilt atomic.Bool

	claimGrace time.Duration
	// pool is the warm pool of PMs (pool.go); nil without one.
	pool *pool

	mu        sync.RWMutex
	instances map[ID]Instance
	// launched holds when this router launched each instance it did; the
	// others were adopted from the backend.
	launched map[ID]time.Time

	// The idle policy (idle.go): now is its clock; idleSince holds, for
	// each paused instance, when its idle time began (its pause, less the
	// idle time it had then; after a restart, the restart); used holds the
	// last launch or resume here, which the instance's own count may miss.
	now          func() time.Time
	idleInterval time.Duration
	idleSince    map[ID]time.Time
	used         map[ID]time.Time
}

// New checks opts and builds a Router with an empty view; call Rebuild to
// adopt what the backend already runs.
func New(opts Options) (*Router, error) {
	var errs []error
	if opts.Backend == nil {
		errs = append(errs, errors.New("router: no backend"))
	}
	if opts.Catalog == nil {
		errs = append(errs, errors.New("router: no catalog"))
	} else if err := opts.Catalog.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("router: catalog: %w", err))
	}
	if opts.CA == nil && !opts.PlainHTTP {
		errs = append(errs, errors.New("router: no CA to give instances certificates: give one (router.ca_cert_path, router.ca_key_path), or choose plain HTTP explicitly"))
	}
	if opts.MaxInstancesPerUser < 0 || opts.LaunchRate < 0 || opts.LaunchBurst < 0 {
		errs = append(errs, fmt.Errorf("router: limits must not be negative (instances per user %d, launch rate %v, burst %d)",
			opts.MaxInstancesPerUser, opts.LaunchRate, opts.LaunchBurst))
	}
	if opts.InstanceCertTTL < 0 {
		errs = append(errs, fmt.Errorf("router: instance certificate lifetime %s is negative", opts.InstanceCertTTL))
	}
	if opts.ClaimGrace < 0 {
		errs = append(errs, fmt.Errorf("router: claim grace %s is negative", opts.ClaimGrace))
	}
	if opts.IdleInterval < 0 {
		errs = append(errs, fmt.Errorf("router: idle sweep interval %s is negative", opts.IdleInterval))
	}
	if opts.PoolFillParallel < 0 || opts.PoolFillParallel > MaxPoolFillParallel {
		errs = append(errs, fmt.Errorf("router: warm pool fill parallelism %d is not between 0 and %d", opts.PoolFillParallel, MaxPoolFillParallel))
	}
	if opts.WarmPool < 0 {
		errs = append(errs, fmt.Errorf("router: warm pool size %d is negative", opts.WarmPool))
	}
	if opts.WarmPool > 0 {
		if _, ok := opts.Backend.(PoolBackend); !ok && opts.Backend != nil {
			errs = append(errs, fmt.Errorf("router: warm pool of %d: this backend keeps no warm pool of the router's", opts.WarmPool))
		}
		if opts.CA == nil {
			errs = append(errs, fmt.Errorf("router: warm pool of %d: no CA (a pooled PM is provisioned over TLS, by the router's client certificate alone)", opts.WarmPool))
		}
		if opts.Catalog != nil {
			if _, ok := opts.Catalog.Lookup("pm"); !ok {
				errs = append(errs, fmt.Errorf("router: warm pool of %d: the catalog has no pm", opts.WarmPool))
			}
		}
	}
	if opts.HealthTimeout < 0 {
		errs = append(errs, fmt.Errorf("router: health timeout %s is negative", opts.HealthTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r := &Router{
		backend:        opts.Backend,
		catalog:        opts.Catalog,
		logger:         cmp.Or(opts.Logger, slog.New(slog.DiscardHandler)),
		healthTimeout:  cmp.Or(opts.HealthTimeout, 30*time.Second),
		client:         opts.HTTPClient,
		instances:      map[ID]Instance{},
		launched:       map[ID]time.Time{},
		claimGrace:     cmp.Or(opts.ClaimGrace, DefaultClaimGrace),
		users:          opts.Users,
		insecureLegacy: opts.InsecureLegacy,
		ca:             opts.CA,
		certTTL:        cmp.Or(opts.InstanceCertTTL, certs.DefaultInstanceTTL),
		lim:            newLimits(opts.MaxInstancesPerUser, opts.LaunchRate, opts.LaunchBurst),
		now:            opts.Now,
		idleInterval:   opts.IdleInterval,
		idleSince:      map[ID]time.Time{},
		used:           map[ID]time.Time{},
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.users == nil {
		r.users, _ = OpenUsers("", "")
	}
	if opts.WarmPool > 0 {
		svc, _ := opts.Catalog.Lookup("pm")
		r.pool = newPool(opts.WarmPool, svc)
		r.pool.once = opts.PoolFillOnce
		r.pool.parallel = max(opts.PoolFillParallel, 1)
	}
	r.metrics = newMetrics(r)
	if r.ca != nil {
		roots, err := certs.Pool(r.ca.CertPEM)
		if err != nil {
			return nil, fmt.Errorf("router: %w", err)
		}
		// The router's own client certificate: instances take renewals
		// only from it (and agents only its calls), and tell only it
		// whether a PM was claimed and how long an instance has been idle.
		cert, err := r.ca.RouterClient(r.ca.Cert.NotAfter.Sub(time.Now()))
		if err != nil {
			return nil, fmt.Errorf("router: client certificate: %w", err)
		}
		if r.client == nil {
			probe := certs.InstanceTransport(roots)
			probe.TLSClientConfig.Certificates = []tls.Certificate{cert}
			r.client = &http.Client{Timeout: 2 * time.Second, Transport: probe}
		}
		tr := certs.InstanceTransport(roots)
		tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
		r.renewer = &http.Client{Timeout: 10 * time.Second, Transport: tr}
	}
	if r.client == nil {
		r.client = &http.Client{Timeout: 2 * time.Second}
	}
	return r, nil
}

var (
	userRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	idRE   = regexp.MustCompile(`^[a-f0-9]{12}$`)
)

// ValidUser reports whether user may name a user: it becomes part of
// container, volume and pod names, so it is restricted to what all accept.
func ValidUser(user string) error {
	if !userRE.MatchString(user) {
		return fmt.Errorf("%w: user %q must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", ErrInvalid, user)
	}
	return nil
}

// ValidID reports whether id has the shape of an instance ID.
func ValidID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%w: instance id %q must be 12 lowercase hex digits", ErrInvalid, id)
	}
	return nil
}

func newID() ID {
	var b [6]byte
	rand.Read(b[:])
	return ID(hex.EncodeToString(b[:]))
}

// Rebuild replaces the router's view with what the backend reports, and
// removes leftovers no one owns: instances that no longer run (a launch cut
// short by a crash) or that lack a user or service label.
//
// A machine that does not answer (ErrMachineDown) does not stop it: what the
// others run is adopted, and the error, returned after, names the machines
// whose instances stay unknown (Adopt takes them in once they answer).
func (r *Router) Rebuild(ctx context.Context) error {
	all, err := r.backend.List(ctx)
	if err != nil && !errors.Is(err, ErrMachineDown) {
		return fmt.Errorf("rebuild: %w", err)
	}
	partial := err
	view := map[ID]Instance{}
	for _, in := range all {
		if in.State == StateDead || in.User == "" || in.Service == "" {
			r.logger.Info("removing leftover", "instance", in.ID, "service", in.Service, "user", in.User, "state", in.State)
			if err := r.backend.Destroy(ctx, in.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("rebuild: remove leftover %s: %w", in.ID, err)
			}
			continue
		}
		view[in.ID] = in
	}
	now := r.now()
	r.mu.Lock()
	r.instances = view
	idleSince := map[ID]time.Time{}
	for id, in := range view {
		if in.State != StatePaused {
			continue
		}
		// A pause this router did not see counts from now.
		idleSince[id] = cmp.Or(r.idleSince[id], now)
	}
	r.idleSince = idleSince
	for id := range r.used {
		if _, ok := view[id]; !ok {
			delete(r.used, id)
		}
	}
	r.mu.Unlock()
	r.rebuilt.Store(true)
	r.logger.Info("rebuilt view from labels", "instances", len(view), "listed", len(all))
	if partial != nil {
		return fmt.Errorf("rebuild: %w", partial)
	}
	return nil
}

// Adopt adds to the view the live instances the backend lists that it lacks
// (those of a machine that did not answer at Rebuild), leaving the rest as
// it is; like Rebuild, it reports machines that still do not answer.
func (r *Router) Adopt(ctx context.Context) error {
	all, err := r.backend.List(ctx)
	if err != nil && !errors.Is(err, ErrMachineDown) {
		return fmt.Errorf("adopt: %w", err)
	}
	n := 0
	r.mu.Lock()
	for _, in := range all {
		if _, known := r.instances[in.ID]; known || in.State == StateDead || in.User == "" || in.Service == "" {
			continue
		}
		r.instances[in.ID] = in
		if in.State == StatePaused {
			r.idleSince[in.ID] = r.now()
		}
		n++
	}
	r.mu.Unlock()
	if n > 0 {
		r.logger.Info("adopted instances of machines that answer again", "instances", n)
	}
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	return nil
}

// Lookup finds a catalog service by name or alias.
func (r *Router) Lookup(service string) (conf.Service, error) {
	svc, ok := r.catalog.Lookup(service)
	if !ok {
		return conf.Service{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownService, service, strings.Join(r.catalog.Names(), ", "))
	}
	return svc, nil
}

// Launch starts service for user, owned by user, and returns once it
// answers its health path. It is the in-process launch (tests, tools that
// hold the core): no role is checked. The answer carries the instance's new
// secret (Instance.Secret), which the router keeps no copy of.
func (r *Router) Launch(ctx context.Context, service, user string) (Instance, error) {
	return r.launch(ctx, launchOrder{service: service, user: user, owner: user})
}

// launchOrder is one launch the caller has been allowed.
type launchOrder struct {
	service, user, owner string
	// legacy runs the instance with no access control (UPC_INSECURE_LEGACY=1,
	// no secret): a token-less original script under insecure_legacy.
	legacy bool
	// pm, pmAddress and grant bind a service to one PM.
	pm               ID
	pmAddress, grant string
}

// launch starts o. An instance that never answers is removed and the error
// says why.
func (r *Router) launch(ctx context.Context, o launchOrder) (Instance, error) {
	svc, err := r.Lookup(o.service)
	if err != nil {
		return Instance{}, err
	}
	if err := ValidUser(o.user); err != nil {
		return Instance{}, err
	}
	release, err := r.admit(o.user, svc)
	var running *RunningError
	if errors.As(err, &running) && r.replaceUnclaimed(ctx, running.Instance) {
		release, err = r.admit(o.user, svc)
	}
	if err != nil {
		return Instance{}, fmt.Errorf("launch %s for %s: %w", svc.Name, o.user, err)
	}
	defer release()
	if in, ok := r.fromPool(ctx, o, svc); ok {
		return in, nil
	}
	// The catalog cannot set what the router decides.
	env := r.routerEnv(svc)
	var secret string
	if o.legacy {
		env[access.EnvLegacy] = "1"
	} else {
		secret = access.NewToken(access.PrefixInstance)
		env[access.EnvSHA256] = access.Hash(secret)
	}
	if o.pm != "" {
		env[access.EnvPMAddress] = o.pmAddress
		env[access.EnvPMGrant] = o.grant
	}
	id := newID()
	useTLS := r.ca != nil && !o.legacy
	if useTLS {
		cert, key, err := r.ca.IssueInstance(string(id), r.certTTL)
		if err != nil {
			return Instance{}, fmt.Errorf("launch %s for %s: %w", svc.Name, o.user, err)
		}
		env[certs.EnvCert], env[certs.EnvKey], env[certs.EnvCA] = string(cert), string(key), string(r.ca.CertPEM)
	} else if !o.legacy {
		// The router's operator chose plain HTTP (Options.PlainHTTP): the
		// instance is told so, or it would refuse to start.
		env[certs.EnvPlain] = "1"
	}
	spec := Spec{
		ID:        id,
		TLS:       useTLS,
		Service:   svc.Name,
		User:      o.user,
		Owner:     o.owner,
		PM:        o.pm,
		Image:     svc.Image,
		Digest:    svc.Digest,
		Port:      svc.Port,
		Health:    svc.Health,
		Env:       env,
		Resources: svc.Resources,
		Volumes:   svc.Volumes,
	}
	user := o.user
	if ms, ok := r.backend.(Machines); ok {
		machine, err := r.place(ctx, ms, spec)
		if err != nil {
			return Instance{}, fmt.Errorf("launch %s for %s: %w", svc.Name, user, err)
		}
		spec.Machine = machine
	}
	start := time.Now()
	in, err := r.backend.Launch(ctx, spec)
	if err != nil {
		r.metrics.observeLaunch(svc.Name, outcomeFailed, time.Since(start))
		return Instance{}, fmt.Errorf("launch %s for %s: %w", svc.Name, user, err)
	}
	started := time.Since(start)
	if in.Simulated {
		// Nothing runs on a simulated node: the pod's Ready status, which
		// the backend waited for, is all there is to wait for.
		r.logger.Debug("simulated instance: no health wait", "instance", in.ID, "machine", in.Machine)
	} else if err := r.waitHealthy(ctx, in.ID, in.Address+svc.Health); err != nil {
		r.metrics.observeLaunch(svc.Name, outcomeUnhealthy, time.Since(start))
		// The caller's context may be what ended the wait: still clean up.
		if derr := r.backend.Destroy(context.WithoutCancel(ctx), in.ID); derr != nil && !errors.Is(derr, ErrNotFound) {
			err = errors.Join(err, fmt.Errorf("remove unhealthy instance: %w", derr))
		}
		return Instance{}, fmt.Errorf("launch %s for %s on %s: %w", svc.Name, user, in.Machine, err)
	}
	r.metrics.observeLaunch(svc.Name, outcomeOK, time.Since(start))
	// What the backend reports is what a rebuild will see; the owner and
	// the binding are the router's, whatever a backend forgot.
	in.Owner, in.PM, in.Secret = o.owner, o.pm, ""
	r.mu.Lock()
	r.instances[in.ID] = in
	r.launched[in.ID] = time.Now()
	r.used[in.ID] = r.now()
	r.mu.Unlock()
	r.logger.Info("launched", "instance", in.ID, "service", in.Service, "user", user, "owner", o.owner, "pm", o.pm,
		"legacy", o.legacy, "machine", in.Machine, "address", in.Address, "started", started, "ready", time.Since(start))
	in.Secret = secret
	return in, nil
}

// place picks the machine for spec: the one holding the user's data if the
// service has per-user volumes (refused while that machine is down: never
// started elsewhere on an empty volume), else by weight among the machines
// that are up.
func (r *Router) place(ctx context.Context, ms Machines, spec Spec) (string, error) {
	machines := ms.Machines(ctx)
	if !slices.ContainsFunc(machines, func(x Machine) bool { return x.Up }) {
		return "", ErrNoMachine
	}
	if ud, ok := r.backend.(UserData); ok && slices.ContainsFunc(spec.Volumes, func(v conf.Volume) bool { return v.PerUser }) {
		m, found, err := ud.MachineWithData(ctx, spec.User)
		if err != nil {
			return "", fmt.Errorf("find %s's data: %w", spec.User, err)
		}
		if found {
			if !slices.ContainsFunc(machines, func(x Machine) bool { return x.Name == m && x.Up }) {
				return "", fmt.Errorf("%w: machine %s holds %s's data; the PM can start only there", ErrMachineDown, m, spec.User)
			}
			return m, nil
		}
	}
	m, ok := r.placer.pick(machines)
	if !ok {
		return "", ErrNoMachine
	}
	return m, nil
}

// waitHealthy polls url until it answers 2xx, the health timeout passes, or
// ctx ends, with a bounded exponential backoff: 2ms growing to 20ms, since
// probes are cheap and a coarser step would add its slack to every launch.
func (r *Router) waitHealthy(ctx context.Context, id ID, url string) error {
	ctx, cancel := context.WithTimeout(ctx, r.healthTimeout)
	defer cancel()
	delay := 2 * time.Millisecond
	var last error
	for {
		err := r.probe(ctx, id, url)
		if err == nil {
			return nil
		}
		// A probe cut short by the deadline itself says nothing of the
		// instance: report the last one that finished (a 503, say).
		if last == nil || ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w at %s within %s: last probe: %v", ErrUnhealthy, url, r.healthTimeout, last)
		case <-time.After(delay):
		}
		delay = min(delay*3/2, 20*time.Millisecond)
	}
}

// probe asks url once. Over TLS the answer must come from instance id
// itself (its certificate names it): an address can be reused within seconds
// (a node port freed by a deleted instance), and a proxy's stale rule or a
// pooled connection could carry the probe to the instance that held it
// before. Probes open a connection each, never a pooled one, for the same
// reason.
func (r *Router) probe(ctx context.Context, id ID, url string) error {
	_, err := r.health(ctx, id, url)
	return err
}

// health asks instance id's health path at url, over a connection of its
// own, and checks that id answers (its certificate names it).
func (r *Router) health(ctx context.Context, id ID, url string) (access.Health, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return access.Health{}, err
	}
	req.Close = true
	resp, err := r.client.Do(req)
	if err != nil {
		return access.Health{}, err
	}
	defer resp.Body.Close()
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		if leaf := resp.TLS.PeerCertificates[0]; !slices.Contains(leaf.DNSNames, certs.InstanceName(string(id))) {
			return access.Health{}, fmt.Errorf("answered by another instance (%s), not %s", strings.Join(leaf.DNSNames, ", "), id)
		}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return access.Health{}, fmt.Errorf("status %s", resp.Status)
	}
	var h access.Health
	// Instances of other services may answer anything 2xx; only a PM's
	// body says whether it was claimed.
	_ = json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&h)
	return h, nil
}

// replaceUnclaimed removes the running PM id if its secret has never been
// used and cannot still be on its way: adopted from the backend (launched
// by a router that stopped, perhaps before answering) or launched here more
// than the claim grace ago. Its user, launching again, then gets a new one
// on the same volume; nothing is lost, since no one could call it. It
// reports whether it removed id.
func (r *Router) replaceUnclaimed(ctx context.Context, id ID) bool {
	r.mu.RLock()
	in, ok := r.instances[id]
	at, here := r.launched[id]
	r.mu.RUnlock()
	if !ok || in.State != StateRunning || in.Simulated || (here && time.Since(at) < r.claimGrace) {
		return false
	}
	svc, err := r.Lookup(in.Service)
	if err != nil {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	h, err := r.health(pctx, id, in.Address+svc.Health)
	cancel()
	if err != nil || h.Claimed == nil || *h.Claimed {
		return false
	}
	r.logger.Warn("replacing an unclaimed instance: its secret was never used (a launch not answered, or answered to a caller that went away)",
		"instance", id, "service", in.Service, "user", in.User, "adopted", !here)
	if err := r.Delete(context.WithoutCancel(ctx), id); err != nil {
		r.logger.Warn("could not replace the unclaimed instance", "instance", id, "err", err.Error())
		return false
	}
	return true
}

// Get returns the instance with the given id.
func (r *Router) Get(id ID) (Instance, error) {
	if err := ValidID(string(id)); err != nil {
		return Instance{}, err
	}
	r.mu.RLock()
	in, ok := r.instances[id]
	r.mu.RUnlock()
	if !ok {
		return Instance{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return in, nil
}

// ByAddress finds the instance serving address (the original API's handle).
func (r *Router) ByAddress(address string) (Instance, error) {
	address = strings.TrimRight(strings.TrimSpace(address), "/")
	if address == "" {
		return Instance{}, fmt.Errorf("%w: address is empty", ErrInvalid)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, in := range r.instances {
		if in.Address == address {
			return in, nil
		}
	}
	return Instance{}, fmt.Errorf("%w: no instance at address %q", ErrNotFound, address)
}

// Pause freezes an instance; it keeps its address and data.
func (r *Router) Pause(ctx context.Context, id ID) error {
	return r.pause(ctx, id, r.now())
}

// pause pauses id, whose idle time (for the idle policy) began at since.
func (r *Router) pause(ctx context.Context, id ID, since time.Time) error {
	if err := r.transition(ctx, id, "pause", r.backend.Pause, StatePaused); err != nil {
		return err
	}
	r.mu.Lock()
	if _, ok := r.instances[id]; ok {
		r.idleSince[id] = since
	}
	r.mu.Unlock()
	return nil
}

// Resume unfreezes a paused instance.
func (r *Router) Resume(ctx context.Context, id ID) error {
	if err := r.transition(ctx, id, "resume", r.backend.Resume, StateRunning); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.idleSince, id)
	if _, ok := r.instances[id]; ok {
		r.used[id] = r.now()
	}
	r.mu.Unlock()
	in, err := r.Get(id)
	if err != nil || r.renewer == nil || in.Simulated || !strings.HasPrefix(in.Address, "https://") {
		return nil
	}
	// A resumed instance gets a fresh certificate, so one paused for long
	// does not come back with an expired one. A failed renewal leaves it
	// running on its current certificate: logged, not fatal.
	if err := r.renew(ctx, in); err != nil {
		r.logger.Warn("certificate renewal failed", "instance", id, "err", err)
	}
	return nil
}

// RenewCertificates renews the certificate of every running TLS instance
// every TTL/4 until ctx ends, so an instance that runs longer than its
// certificate's lifetime keeps a valid one (a paused one is renewed when
// resumed). A router restarted mid-way renews everything at its first tick.
func (r *Router) RenewCertificates(ctx context.Context) {
	if r.renewer == nil {
		return
	}
	t := time.NewTicker(r.certTTL / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, failed := r.RenewAll(ctx)
		r.logger.Info("renewed instance certificates", "renewed", n, "failed", failed)
	}
}

// RenewAll renews every running TLS instance's certificate now and says
// how many were renewed and how many failed (logged one by one).
func (r *Router) RenewAll(ctx context.Context) (renewed, failed int) {
	if r.renewer == nil {
		return 0, 0
	}
	r.mu.RLock()
	var todo []Instance
	for _, in := range r.instances {
		if in.State == StateRunning && !in.Simulated && strings.HasPrefix(in.Address, "https://") {
			todo = append(todo, in)
		}
	}
	r.mu.RUnlock()
	for _, in := range todo {
		if err := r.renew(ctx, in); err != nil {
			r.logger.Warn("certificate renewal failed", "instance", in.ID, "err", err)
			failed++
			continue
		}
		renewed++
	}
	return renewed, failed
}

// renew issues in a new certificate and hands it over at its renewal
// path, as the router's client certificate alone may.
func (r *Router) renew(ctx context.Context, in Instance) error {
	cert, key, err := r.ca.IssueInstance(string(in.ID), r.certTTL)
	if err != nil {
		return err
	}
	body, err := json.Marshal(certs.Renewal{Cert: string(cert), Key: string(key)})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.healthTimeout)
	defer cancel()
	delay := 10 * time.Millisecond
	for {
		// A resumed pod may take a moment to answer again: retry until the
		// health timeout.
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, in.Address+certs.RenewPath, bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := r.renewer.Do(req)
		if err == nil {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				r.logger.Info("certificate renewed", "instance", in.ID)
				return nil
			}
			return fmt.Errorf("renew %s: %s: %s", in.ID, resp.Status, bytes.TrimSpace(msg))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("renew %s: %w", in.ID, err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 500*time.Millisecond)
	}
}

func (r *Router) transition(ctx context.Context, id ID, verb string, op func(context.Context, ID) error, to State) error {
	if _, err := r.Get(id); err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	if err := op(ctx, id); err != nil {
		if errors.Is(err, ErrNotFound) {
			r.forget(id)
		}
		return fmt.Errorf("%s %s: %w", verb, id, err)
	}
	r.mu.Lock()
	if in, ok := r.instances[id]; ok {
		in.State = to
		r.instances[id] = in
	}
	r.mu.Unlock()
	r.logger.Info(verb, "instance", id)
	return nil
}

// Delete removes an instance. Per-user volumes stay.
func (r *Router) Delete(ctx context.Context, id ID) error {
	if _, err := r.Get(id); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := r.backend.Destroy(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	r.forget(id)
	r.logger.Info("deleted", "instance", id)
	return nil
}

func (r *Router) forget(id ID) {
	r.mu.Lock()
	delete(r.instances, id)
	delete(r.launched, id)
	delete(r.idleSince, id)
	delete(r.used, id)
	r.mu.Unlock()
}

// List returns the known instances, all or one user's, oldest first.
func (r *Router) List(user string) ([]Instance, error) {
	if user != "" {
		if err := ValidUser(user); err != nil {
			return nil, err
		}
	}
	r.mu.RLock()
	out := make([]Instance, 0, len(r.instances))
	for _, in := range r.instances {
		if user == "" || in.User == user {
			out = append(out, in)
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b Instance) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Clear removes every UPC instance the backend holds (only labelled ones),
// known to this router or not. Per-user volumes stay.
func (r *Router) Clear(ctx context.Context) (int, error) {
	n := 0
	if c, ok := r.backend.(Clearer); ok {
		removed, err := c.Clear(ctx)
		if err != nil {
			return removed, fmt.Errorf("clear: %w", err)
		}
		n = removed
	} else {
		all, err := r.backend.List(ctx)
		if err != nil {
			return 0, fmt.Errorf("clear: %w", err)
		}
		for _, in := range all {
			if err := r.backend.Destroy(ctx, in.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return n, fmt.Errorf("clear: %w", err)
			}
			n++
		}
	}
	r.mu.Lock()
	r.instances = map[ID]Instance{}
	r.idleSince = map[ID]time.Time{}
	r.used = map[ID]time.Time{}
	r.mu.Unlock()
	if r.pool != nil { // the backend's clear removed the pooled ones too: refill
		r.pool.mu.Lock()
		r.pool.ready = nil
		r.pool.mu.Unlock()
		r.pool.wake()
	}
	r.logger.Info("cleared", "removed", n)
	return n, nil
}

// SetupNetworks prepares the backend's networks, where it has any.
func (r *Router) SetupNetworks(ctx context.Context) ([]string, error) {
	ns, ok := r.backend.(NetworkSetup)
	if !ok {
		return []string{}, nil
	}
	ms, err := ns.SetupNetworks(ctx)
	if err != nil {
		return nil, fmt.Errorf("setup networks: %w", err)
	}
	return ms, nil
}
