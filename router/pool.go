package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
)

// PoolBackend is a backend that starts warm-pool instances and binds one
// to a user at launch (the Docker backend). The router owns the pool: it
// makes each pooled PM's identity (its id and certificate), keeps the
// ready ones, refills in the background, and provisions a claimed PM with
// its user and secret over TLS with its own client certificate.
type PoolBackend interface {
	// PoolLaunch starts a sealed instance of spec (no User, Owner or PM;
	// its per-user volumes fresh and empty). It is no one's instance:
	// List does not report it until claimed.
	PoolLaunch(ctx context.Context, spec Spec) (Instance, error)
	// PoolClaim binds pool instance id to user (and owner) for good: its
	// labels and volumes are that user's from then on, as if launched for
	// them. ErrConflict: claimed already, or the user has stored data
	// (a pool instance starts on empty volumes only).
	PoolClaim(ctx context.Context, id ID, user, owner string) (Instance, error)
	// DrainPool removes every unclaimed pool instance and its volumes.
	DrainPool(ctx context.Context) (int, error)
}

// pool is the router's warm pool of one service (the PM): instances
// started, healthy and unclaimed, taken one by one.
type pool struct {
	size int
	svc  conf.Service
	kick chan struct{}
	// once: fill to size once, then never refill (Options.PoolFillOnce).
	once bool
	// parallel: how many instances a fill starts at once (1 or more).
	parallel int

	mu      sync.Mutex
	ready   []pooled
	filling bool
}

type pooled struct {
	in   Instance
	made time.Time
}

func newPool(size int, svc conf.Service) *pool {
	return &pool{size: size, svc: svc, kick: make(chan struct{}, 1)}
}

// take removes and returns the oldest ready instance, and wakes the
// filler.
func (p *pool) take() (pooled, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.wake()
	if len(p.ready) == 0 {
		return pooled{}, false
	}
	x := p.ready[0]
	p.ready = p.ready[1:]
	return x, true
}

func (p *pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Ready is how many pooled instances wait to be claimed.
func (p *pool) Ready() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

// poolAge is how long a pooled instance waits before it is replaced, so
// the certificate it was started with (the router renews only claimed
// instances') is never near its end when claimed.
func (r *Router) poolAge() time.Duration { return r.certTTL / 4 }

// PoolReady reports the warm pool: how many pooled instances wait to be
// claimed, and the configured size (0, 0 without a pool).
func (r *Router) PoolReady() (ready, size int) {
	if r.pool == nil {
		return 0, 0
	}
	return r.pool.Ready(), r.pool.size
}

// RunPool keeps the warm pool filled until ctx ends: it first removes
// what a previous router left in the pool (unclaimed, so no one's), then
// starts pooled instances one at a time (a machine of 2 cores is not
// flooded with starts) whenever fewer than the size wait, and on the end
// of ctx removes the unclaimed ones: nothing of the pool outlives the
// router. With PoolFillOnce it stops filling once the pool is full. Without
// a pool it returns at once.
func (r *Router) RunPool(ctx context.Context) {
	if r.pool == nil {
		return
	}
	pb := r.backend.(PoolBackend) // New checked it
	if n, err := pb.DrainPool(ctx); err != nil {
		r.logger.Warn("warm pool: could not remove what an earlier router left", "err", err.Error())
	} else if n > 0 {
		r.logger.Info("warm pool: removed unclaimed instances an earlier router left", "removed", n)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		r.pool.mu.Lock()
		r.pool.ready = nil
		r.pool.mu.Unlock()
		n, err := pb.DrainPool(dctx)
		r.logger.Info("warm pool drained", "removed", n, "err", err)
	}()
	backoff := time.Duration(0)
	t := time.NewTicker(max(r.poolAge()/4, time.Second))
	defer t.Stop()
	r.pool.wake()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.pool.kick:
		case <-t.C:
		}
		r.retireOld(ctx)
		for ctx.Err() == nil && r.pool.Ready() < r.pool.size {
			if err := r.fillSome(ctx, pb, min(r.pool.parallel, r.pool.size-r.pool.Ready())); err != nil {
				if ctx.Err() != nil {
					return
				}
				backoff = min(max(2*backoff, time.Second), 30*time.Second)
				r.logger.Warn("warm pool: could not start a pooled instance", "service", r.pool.svc.Name, "retry_in", backoff, "err", err.Error())
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				continue
			}
			backoff = 0
		}
		if r.pool.once && r.pool.Ready() >= r.pool.size {
			// Filled: what launches take is not replaced, and the
			// pool is drained when ctx ends.
			<-ctx.Done()
			return
		}
	}
}

// retireOld removes pooled instances older than poolAge; the filler
// replaces them.
func (r *Router) retireOld(ctx context.Context) {
	r.pool.mu.Lock()
	var old []pooled
	r.pool.ready = slices.DeleteFunc(r.pool.ready, func(x pooled) bool {
		if time.Since(x.made) > r.poolAge() {
			old = append(old, x)
			return true
		}
		return false
	})
	r.pool.mu.Unlock()
	for _, x := range old {
		if err := r.backend.Destroy(ctx, x.in.ID); err != nil && !errors.Is(err, ErrNotFound) {
			r.logger.Warn("warm pool: could not retire an old pooled instance", "instance", x.in.ID, "err", err.Error())
		}
	}
}

// fillSome starts n pooled instances together (fillOne each) and returns
// when all are ready or failed, with their errors.
func (r *Router) fillSome(ctx context.Context, pb PoolBackend, n int) error {
	if n <= 1 {
		return r.fillOne(ctx, pb)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = r.fillOne(ctx, pb) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// fillOne starts one pooled instance, waits for its health answer and
// adds it to the ready ones.
func (r *Router) fillOne(ctx context.Context, pb PoolBackend) error {
	svc := r.pool.svc
	id := newID()
	env := r.routerEnv(svc)
	env[access.EnvPooled] = "1"
	cert, key, err := r.ca.IssueInstance(string(id), r.certTTL)
	if err != nil {
		return err
	}
	env[certs.EnvCert], env[certs.EnvKey], env[certs.EnvCA] = string(cert), string(key), string(r.ca.CertPEM)
	spec := Spec{ID: id, TLS: true, Service: svc.Name, Image: svc.Image, Digest: svc.Digest, Port: svc.Port,
		Health: svc.Health, Env: env, Resources: svc.Resources, Volumes: svc.Volumes}
	if ms, ok := r.backend.(Machines); ok {
		up := slices.DeleteFunc(ms.Machines(ctx), func(m Machine) bool { return !m.Up })
		m, ok := r.placer.pick(up)
		if !ok {
			return ErrNoMachine
		}
		spec.Machine = m
	}
	// The start itself is not cut short by the pool's end: an engine
	// finishes a create whose caller went away, and the container would
	// appear after the drain. The health wait is, and removes it.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.healthTimeout)
	in, err := pb.PoolLaunch(lctx, spec)
	cancel()
	if err != nil {
		return fmt.Errorf("start pooled %s: %w", svc.Name, err)
	}
	if in.Simulated {
		// A pooled PM is provisioned by a call to it: one on a simulated
		// node, which runs no process, could never be handed out.
		err = fmt.Errorf("%w: it is on a simulated node, which runs no process to provision", ErrUnhealthy)
	} else {
		err = r.waitHealthy(ctx, in.ID, in.Address+svc.Health)
	}
	if err != nil {
		if derr := r.backend.Destroy(context.WithoutCancel(ctx), in.ID); derr != nil && !errors.Is(derr, ErrNotFound) {
			err = errors.Join(err, fmt.Errorf("remove it: %w", derr))
		}
		return fmt.Errorf("pooled %s %s on %s: %w", svc.Name, in.ID, in.Machine, err)
	}
	r.pool.mu.Lock()
	r.pool.ready = append(r.pool.ready, pooled{in: in, made: time.Now()})
	n := len(r.pool.ready)
	r.pool.mu.Unlock()
	r.logger.Info("warm pool: pooled instance ready", "instance", in.ID, "service", svc.Name, "machine", in.Machine, "ready", n, "size", r.pool.size)
	return nil
}

// fromPool launches o from the warm pool when it can: a PM (not legacy,
// not bound) for a user with no stored data anywhere, with a pooled one
// ready. The pooled PM is claimed for the user (its labels and volumes
// theirs for good), then provisioned with the user and the hash of a new
// secret. ok false: launch the usual way (nothing was changed, or a
// pooled instance was spent and removed).
func (r *Router) fromPool(ctx context.Context, o launchOrder, svc conf.Service) (in Instance, ok bool) {
	if r.pool == nil || svc.Name != r.pool.svc.Name || o.legacy || o.pm != "" {
		return Instance{}, false
	}
	if ud, has := r.backend.(UserData); has {
		// A user with data gets a PM on it; one who may have some on a
		// silent machine gets the usual launch's answer.
		if _, found, err := ud.MachineWithData(ctx, o.user); err != nil || found {
			return Instance{}, false
		}
	}
	start := time.Now()
	x, ok := r.pool.take()
	if !ok {
		return Instance{}, false
	}
	pb := r.backend.(PoolBackend)
	spend := func(stage string, err error) (Instance, bool) {
		r.logger.Warn("warm pool: a pooled instance could not be used, launching the usual way", "instance", x.in.ID,
			"stage", stage, "user", o.user, "err", err.Error())
		if derr := r.backend.Destroy(context.WithoutCancel(ctx), x.in.ID); derr != nil && !errors.Is(derr, ErrNotFound) {
			r.logger.Warn("warm pool: could not remove the pooled instance", "instance", x.in.ID, "err", derr.Error())
		}
		return Instance{}, false
	}
	claimed, err := pb.PoolClaim(ctx, x.in.ID, o.user, o.owner)
	if err != nil {
		return spend("claim", err)
	}
	secret := access.NewToken(access.PrefixInstance)
	if err := r.provision(ctx, claimed, access.Provision{User: o.user, SHA256: access.Hash(secret)}); err != nil {
		return spend("provision", err)
	}
	r.metrics.observeLaunch(svc.Name, outcomeOK, time.Since(start))
	claimed.User, claimed.Owner, claimed.PM, claimed.Secret = o.user, o.owner, "", ""
	r.mu.Lock()
	r.instances[claimed.ID] = claimed
	r.launched[claimed.ID] = time.Now()
	r.used[claimed.ID] = r.now()
	r.mu.Unlock()
	r.logger.Info("launched", "instance", claimed.ID, "service", claimed.Service, "user", o.user, "owner", o.owner,
		"pool", true, "machine", claimed.Machine, "address", claimed.Address, "ready", time.Since(start))
	claimed.Secret = secret
	return claimed, true
}

// provision hands a claimed pooled PM its user and owner's secret hash,
// over TLS with the router's client certificate, checking that in itself
// answers (its certificate names it).
func (r *Router) provision(ctx context.Context, in Instance, p access.Provision) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.Address+access.ProvisionPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.renewer.Do(req)
	if err != nil {
		return fmt.Errorf("provision %s: %w", in.ID, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 ||
		!slices.Contains(resp.TLS.PeerCertificates[0].DNSNames, certs.InstanceName(string(in.ID))) {
		return fmt.Errorf("provision %s: answered by another instance", in.ID)
	}
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("provision %s: %s: %s", in.ID, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// routerEnv is svc's environment less what only the router decides.
func (r *Router) routerEnv(svc conf.Service) map[string]string {
	env := maps.Clone(svc.Env)
	if env == nil {
		env = map[string]string{}
	}
	for _, k := range []string{access.EnvSHA256, access.EnvLegacy, access.EnvPMAddress, access.EnvPMGrant, access.EnvPooled,
		certs.EnvCert, certs.EnvKey, certs.EnvCA, certs.EnvPlain} {
		delete(env, k)
	}
	return env
}
