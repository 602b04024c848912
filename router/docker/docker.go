// Package docker is the router's Docker backend: it drives one machine agent
// per machine (router/docker/agent), over HTTP for remote machines or in
// process for the local engine, and lets the router core place instances by
// the machines' weights.
package docker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker/agent"
)

// Driver is one machine: an in-process *agent.Engine or an *agent.Client.
type Driver interface {
	Ping(ctx context.Context) error
	EnsureNetwork(ctx context.Context) (agent.NetworkInfo, error)
	Launch(ctx context.Context, req agent.LaunchRequest) (agent.Container, error)
	Pause(ctx context.Context, instance string) error
	Unpause(ctx context.Context, instance string) error
	Remove(ctx context.Context, instance string) error
	List(ctx context.Context) ([]agent.Container, error)
	Clear(ctx context.Context) (int, error)
	UserVolumes(ctx context.Context, user string) ([]agent.UserVolume, error)
	RemoveUserVolumes(ctx context.Context, user string) ([]agent.UserVolume, error)
	PoolLaunch(ctx context.Context, req agent.LaunchRequest) (agent.Container, error)
	Claim(ctx context.Context, req agent.ClaimRequest) (agent.Container, error)
	DrainPool(ctx context.Context) (int, error)
}

var (
	_ Driver = (*agent.Engine)(nil)
	_ Driver = (*agent.Client)(nil)

	_ router.Backend      = (*Backend)(nil)
	_ router.Clearer      = (*Backend)(nil)
	_ router.NetworkSetup = (*Backend)(nil)
	_ router.Machines     = (*Backend)(nil)
	_ router.UserData     = (*Backend)(nil)
	_ router.Storage      = (*Backend)(nil)
	_ router.PoolBackend  = (*Backend)(nil)
)

// Machine is one machine's name (its address in the configuration), its
// placement weight and its driver.
type Machine struct {
	Name   string
	Weight float64
	Driver Driver
}

// Options tune a Backend.
type Options struct {
	// PingTimeout bounds the check that a machine's agent is up. Default 5s:
	// an agent that is gone refuses at once, while a busy engine can take
	// over a second to answer (1s turned away launches at 256 users).
	PingTimeout time.Duration
	// Labels are added to every container (tests add upc.test=1).
	Labels map[string]string
}

// Backend implements router.Backend over machines.
type Backend struct {
	machines []Machine
	byName   map[string]Machine
	opts     Options
	logger   *slog.Logger

	mu    sync.Mutex
	where map[router.ID]string // instance → machine, learnt from Launch and List
}

// New checks the machines and builds a Backend.
func New(machines []Machine, opts Options, logger *slog.Logger) (*Backend, error) {
	var errs []error
	if len(machines) == 0 {
		errs = append(errs, errors.New("docker backend: no machine"))
	}
	b := &Backend{byName: map[string]Machine{}, opts: opts, where: map[router.ID]string{},
		logger: cmp.Or(logger, slog.New(slog.DiscardHandler))}
	b.opts.PingTimeout = cmp.Or(b.opts.PingTimeout, 5*time.Second)
	for i, m := range machines {
		switch {
		case m.Name == "":
			errs = append(errs, fmt.Errorf("machines[%d]: no name", i))
		case m.Driver == nil:
			errs = append(errs, fmt.Errorf("machine %s: no driver", m.Name))
		case !(m.Weight > 0):
			errs = append(errs, fmt.Errorf("machine %s: weight %v must be positive", m.Name, m.Weight))
		}
		if _, dup := b.byName[m.Name]; dup {
			errs = append(errs, fmt.Errorf("machine %s: listed twice", m.Name))
		}
		b.byName[m.Name] = m
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	b.machines = machines
	return b, nil
}

// Machines reports every machine with its weight and whether its agent
// answers now, checking them concurrently.
func (b *Backend) Machines(ctx context.Context) []router.Machine {
	out := make([]router.Machine, len(b.machines))
	var wg sync.WaitGroup
	for i, m := range b.machines {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, b.opts.PingTimeout)
			defer cancel()
			err := m.Driver.Ping(pctx)
			if err != nil {
				b.logger.Warn("machine down", "machine", m.Name, "err", err)
			}
			out[i] = router.Machine{Name: m.Name, Weight: m.Weight, Up: err == nil}
		})
	}
	wg.Wait()
	return out
}

// Launch starts spec on spec.Machine (the core's placement), or on the only
// machine when there is one.
func (b *Backend) Launch(ctx context.Context, spec router.Spec) (router.Instance, error) {
	return b.launch(ctx, spec, Driver.Launch)
}

// PoolLaunch starts a warm-pool instance of spec on spec.Machine: a
// container naming no user, on fresh pool volumes (agent.Engine.Claim).
func (b *Backend) PoolLaunch(ctx context.Context, spec router.Spec) (router.Instance, error) {
	if spec.User != "" || spec.Owner != "" || spec.PM != "" {
		return router.Instance{}, fmt.Errorf("%w: a pooled instance names no user, owner or pm", router.ErrInvalid)
	}
	return b.launch(ctx, spec, Driver.PoolLaunch)
}

// PoolClaim binds pool instance id to user and owner on its machine.
func (b *Backend) PoolClaim(ctx context.Context, id router.ID, user, owner string) (router.Instance, error) {
	m, err := b.machineOf(ctx, id)
	if err != nil {
		return router.Instance{}, err
	}
	c, err := m.Driver.Claim(ctx, agent.ClaimRequest{Instance: string(id), User: user, Owner: owner})
	if err != nil {
		return router.Instance{}, fmt.Errorf("machine %s: %w", m.Name, mapErr(err))
	}
	return instance(m.Name, c), nil
}

// DrainPool removes every machine's unclaimed pool instances; a machine
// that does not answer is named in the error.
func (b *Backend) DrainPool(ctx context.Context) (int, error) {
	n := 0
	var errs []error
	for _, m := range b.machines {
		k, err := m.Driver.DrainPool(ctx)
		n += k
		if err != nil {
			errs = append(errs, fmt.Errorf("drain the pool of machine %s: %w", m.Name, err))
		}
	}
	return n, errors.Join(errs...)
}

func (b *Backend) launch(ctx context.Context, spec router.Spec, start func(Driver, context.Context, agent.LaunchRequest) (agent.Container, error)) (router.Instance, error) {
	name := spec.Machine
	if name == "" { // no placement from the core: the first machine that is up
		for _, m := range b.Machines(ctx) {
			if m.Up {
				name = m.Name
				break
			}
		}
		if name == "" {
			return router.Instance{}, router.ErrNoMachine
		}
	}
	m, ok := b.byName[name]
	if !ok {
		return router.Instance{}, fmt.Errorf("%w: no machine %q", router.ErrInvalid, name)
	}
	req := agent.LaunchRequest{
		Instance: string(spec.ID), Service: spec.Service, User: spec.User, Owner: spec.Owner, PM: string(spec.PM),
		Image: spec.Image, Digest: spec.Digest, Port: spec.Port, Env: spec.Env,
		CPUMillis: spec.Resources.CPUMillis, MemoryMB: spec.Resources.MemoryMB, Labels: b.opts.Labels, TLS: spec.TLS,
	}
	for _, v := range spec.Volumes {
		req.Volumes = append(req.Volumes, agent.Volume{Name: v.Name, Path: v.Path, PerUser: v.PerUser})
	}
	c, err := start(m.Driver, ctx, req)
	if err != nil {
		return router.Instance{}, fmt.Errorf("machine %s: %w", m.Name, mapErr(err))
	}
	b.mu.Lock()
	b.where[spec.ID] = m.Name
	b.mu.Unlock()
	return instance(m.Name, c), nil
}

func instance(machine string, c agent.Container) router.Instance {
	st := router.StateDead
	switch c.State {
	case "running":
		st = router.StateRunning
	case "paused":
		st = router.StatePaused
	}
	return router.Instance{
		ID: router.ID(c.Instance), Service: c.Service, User: c.User, Owner: c.Owner, PM: router.ID(c.PM),
		Machine: machine, Address: c.Address,
		Image: c.Image, Digest: c.Digest, State: st, Created: c.Created,
	}
}

func mapErr(err error) error {
	switch {
	case errors.Is(err, agent.ErrNotFound):
		return fmt.Errorf("%w: %w", router.ErrNotFound, err)
	case errors.Is(err, agent.ErrInvalid):
		return fmt.Errorf("%w: %w", router.ErrInvalid, err)
	case errors.Is(err, agent.ErrConflict):
		return fmt.Errorf("%w: %w", router.ErrConflict, err)
	case errors.Is(err, agent.ErrForbidden):
		// An image that is not the catalog's (a swapped tag), another
		// user's volume: the router answers 403 with the machine's reason.
		return forbidden{err}
	}
	return err
}

// forbidden is a machine's refusal, matching router.ErrForbidden without
// saying "forbidden" twice.
type forbidden struct{ error }

func (f forbidden) Is(target error) bool { return target == router.ErrForbidden }
func (f forbidden) Unwrap() error        { return f.error }

// machineOf finds which machine runs id, asking every machine if this
// backend has not seen it yet (a router that restarted).
func (b *Backend) machineOf(ctx context.Context, id router.ID) (Machine, error) {
	b.mu.Lock()
	name, ok := b.where[id]
	b.mu.Unlock()
	if ok {
		return b.byName[name], nil
	}
	if _, err := b.List(ctx); err != nil {
		return Machine{}, err
	}
	b.mu.Lock()
	name, ok = b.where[id]
	b.mu.Unlock()
	if !ok {
		return Machine{}, fmt.Errorf("%w: %s", router.ErrNotFound, id)
	}
	return b.byName[name], nil
}

func (b *Backend) op(ctx context.Context, id router.ID, verb string, f func(Driver, context.Context, string) error) error {
	m, err := b.machineOf(ctx, id)
	if err != nil {
		return err
	}
	if err := f(m.Driver, ctx, string(id)); err != nil {
		return fmt.Errorf("machine %s: %w", m.Name, mapErr(err))
	}
	return nil
}

// Pause freezes an instance's container.
func (b *Backend) Pause(ctx context.Context, id router.ID) error {
	return b.op(ctx, id, "pause", Driver.Pause)
}

// Resume unpauses an instance's container.
func (b *Backend) Resume(ctx context.Context, id router.ID) error {
	return b.op(ctx, id, "resume", Driver.Unpause)
}

// Destroy removes an instance's container; per-user volumes stay.
func (b *Backend) Destroy(ctx context.Context, id router.ID) error {
	err := b.op(ctx, id, "remove", Driver.Remove)
	if err == nil || errors.Is(err, router.ErrNotFound) {
		b.mu.Lock()
		delete(b.where, id)
		b.mu.Unlock()
	}
	return err
}

// List asks every machine for its labelled containers. A machine that does
// not answer is named in the error (router.ErrMachineDown), beside what the
// others answered: the router adopts those and the rest once it answers.
func (b *Backend) List(ctx context.Context) ([]router.Instance, error) {
	type result struct {
		cs  []agent.Container
		err error
	}
	res := make([]result, len(b.machines))
	var wg sync.WaitGroup
	for i, m := range b.machines {
		wg.Go(func() {
			cs, err := m.Driver.List(ctx)
			res[i] = result{cs, err}
		})
	}
	wg.Wait()
	var out []router.Instance
	var errs []error
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, r := range res {
		name := b.machines[i].Name
		if r.err != nil {
			errs = append(errs, fmt.Errorf("list machine %s: %w: %w", name, router.ErrMachineDown, r.err))
			continue
		}
		for _, c := range r.cs {
			b.where[router.ID(c.Instance)] = name
			out = append(out, instance(name, c))
		}
	}
	return out, errors.Join(errs...)
}

// Clear removes every labelled container on every machine.
func (b *Backend) Clear(ctx context.Context) (int, error) {
	n := 0
	var errs []error
	for _, m := range b.machines {
		k, err := m.Driver.Clear(ctx)
		n += k
		if err != nil {
			errs = append(errs, fmt.Errorf("clear machine %s: %w", m.Name, err))
		}
	}
	b.mu.Lock()
	b.where = map[router.ID]string{}
	b.mu.Unlock()
	return n, errors.Join(errs...)
}

// MachineWithData reports the machine holding user's per-user volumes. When
// none of the machines that answer holds them and one does not answer, the
// answer is router.ErrMachineDown: the data may be there, and a PM started
// elsewhere would open an empty volume in its place.
func (b *Backend) MachineWithData(ctx context.Context, user string) (string, bool, error) {
	var down []string
	for _, m := range b.machines {
		vs, err := m.Driver.UserVolumes(ctx, user)
		if err != nil {
			if errors.Is(err, agent.ErrInvalid) {
				return "", false, mapErr(err)
			}
			down = append(down, m.Name)
			continue
		}
		if len(vs) > 0 {
			return m.Name, true, nil
		}
	}
	if len(down) > 0 {
		return "", false, fmt.Errorf("%w: machine %s may hold %s's data, so no PM starts elsewhere until it answers (or the operator takes it out of the configuration)",
			router.ErrMachineDown, strings.Join(down, ", "), user)
	}
	return "", false, nil
}

// userVolumes asks every machine, concurrently, for user's volumes. A
// machine that does not answer is named in the error (router.ErrMachineDown):
// it may hold some.
func (b *Backend) userVolumes(ctx context.Context, user string) ([][]agent.UserVolume, error) {
	out := make([][]agent.UserVolume, len(b.machines))
	errs := make([]error, len(b.machines))
	var wg sync.WaitGroup
	for i, m := range b.machines {
		wg.Go(func() {
			out[i], errs[i] = m.Driver.UserVolumes(ctx, user)
		})
	}
	wg.Wait()
	var down []string
	for i, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, agent.ErrInvalid):
			return nil, mapErr(err)
		default:
			b.logger.Warn("machine does not answer for a user's volumes", "machine", b.machines[i].Name, "user", user, "err", err)
			down = append(down, b.machines[i].Name)
		}
	}
	if len(down) > 0 {
		return out, fmt.Errorf("%w: machine %s may hold %s's data", router.ErrMachineDown, strings.Join(down, ", "), user)
	}
	return out, nil
}

func stored(machine string, vs []agent.UserVolume) []router.StoredVolume {
	out := make([]router.StoredVolume, 0, len(vs))
	for _, v := range vs {
		out = append(out, router.StoredVolume{Name: v.Name, Volume: v.Volume, Machine: machine})
	}
	return out
}

// UserStorage lists user's per-user volumes on every machine.
func (b *Backend) UserStorage(ctx context.Context, user string) ([]router.StoredVolume, error) {
	per, err := b.userVolumes(ctx, user)
	if err != nil {
		return nil, err
	}
	out := []router.StoredVolume{}
	for i, vs := range per {
		out = append(out, stored(b.machines[i].Name, vs)...)
	}
	return out, nil
}

// EraseUserStorage removes user's per-user volumes from every machine that
// holds some; Docker deletes each volume's directory with it, so nothing
// needs running (wipe is not used). It begins only once every machine has
// answered: one that does not may hold the user's data, and an erase that
// left it there would be no erase (router.ErrMachineDown, nothing removed).
// A volume a container still mounts is router.ErrConflict.
func (b *Backend) EraseUserStorage(ctx context.Context, user string, _ router.Spec) ([]router.StoredVolume, error) {
	per, err := b.userVolumes(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("nothing erased: %w", err)
	}
	out := []router.StoredVolume{}
	for i, vs := range per {
		if len(vs) == 0 {
			continue
		}
		m := b.machines[i]
		removed, err := m.Driver.RemoveUserVolumes(ctx, user)
		out = append(out, stored(m.Name, removed)...)
		if err != nil {
			return out, fmt.Errorf("machine %s: %w", m.Name, mapErr(err))
		}
	}
	return out, nil
}

// SetupNetworks makes sure every machine has the UPC network.
func (b *Backend) SetupNetworks(ctx context.Context) ([]string, error) {
	var names []string
	var errs []error
	for _, m := range b.machines {
		if _, err := m.Driver.EnsureNetwork(ctx); err != nil {
			errs = append(errs, fmt.Errorf("machine %s: %w", m.Name, err))
			continue
		}
		names = append(names, m.Name)
	}
	return names, errors.Join(errs...)
}
