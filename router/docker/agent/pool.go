package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// The warm pool on Docker. A pool container is a sealed instance started
// before anyone asks for it (LaunchRequest.Pool): labelled upc.pool, naming
// no user, each per-user volume a fresh pool volume of its own. Docker
// cannot change a container's or a volume's labels once made, so a claim
// binds the container to its user with new volumes instead: for each pool
// volume, a claim volume under the user's VolumeName, labelled as the
// user's (upc.user, upc.volume, upc.agent) and naming the pool volume it
// stands for (upc.bind), the instance (upc.claim) and its owner. Everything
// that finds a user's data by its labels (the next launch, placement, the
// storage listing, an erase) finds the claim and follows it to the pool
// volume; List reads a claimed pool container's user and owner from it.
const (
	LabelPool       = "upc.pool"        // on a pool container and its pool volumes: the instance
	LabelBind       = "upc.bind"        // on a claim volume: the pool volume holding the data
	LabelClaim      = "upc.claim"       // on a claim volume: the pool instance it claimed
	LabelClaimOwner = "upc.claim.owner" // on a claim volume: that instance's owner
)

// ClaimRequest binds one pool container to a user.
type ClaimRequest struct {
	Instance string `json:"instance"`
	User     string `json:"user"`
	Owner    string `json:"owner,omitempty"`
}

// Validate reports every problem with r at once.
func (r ClaimRequest) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"instance", r.Instance}, {"user", r.User}} {
		if !nameRE.MatchString(f.v) {
			errs = append(errs, fmt.Errorf("%s: %q must be 1-63 letters, digits, '_', '.' or '-'", f.name, f.v))
		}
	}
	if r.Owner != "" && !nameRE.MatchString(r.Owner) {
		errs = append(errs, fmt.Errorf("owner: %q must be 1-63 letters, digits, '_', '.' or '-'", r.Owner))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// PoolVolumeName is the volume a pool container of agentName mounts for its
// per-user volume vol until a claim binds it.
func PoolVolumeName(agentName, instance, vol string) string {
	return "upc-" + agentName + "-pool-" + instance + "-" + vol
}

// PoolLaunch starts one warm-pool container (req.Pool is set for it).
func (e *Engine) PoolLaunch(ctx context.Context, req LaunchRequest) (Container, error) {
	req.Pool = true
	return e.Launch(ctx, req)
}

// poolVolume creates the fresh pool volume vol of pool instance.
func (e *Engine) poolVolume(ctx context.Context, instance, vol string) (string, error) {
	name := PoolVolumeName(e.opts.Name, instance, vol)
	labels := map[string]string{LabelPool: instance, LabelVolume: vol, LabelAgent: e.opts.Name}
	for k, v := range e.opts.Labels {
		labels[k] = v
	}
	created, err := e.cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: name, Labels: labels})
	if err != nil {
		return "", fmt.Errorf("create pool volume %s: %w", name, err)
	}
	if l := created.Volume.Labels; l[LabelPool] != instance || l[LabelUser] != "" {
		return "", fmt.Errorf("%w: pool volume %s already exists and is not instance %s's", ErrConflict, name, instance)
	}
	return name, nil
}

// boundVolume is the pool volume a claim volume (labels) stands for,
// checked to be this agent's pool volume vol.
func (e *Engine) boundVolume(ctx context.Context, labels map[string]string, vol string) (string, error) {
	name := labels[LabelBind]
	v, err := e.cli.VolumeInspect(ctx, name, client.VolumeInspectOptions{})
	if err != nil {
		return "", fmt.Errorf("the pool volume %s of %s's claim: %w", name, labels[LabelUser], err)
	}
	l := v.Volume.Labels
	if l[LabelPool] == "" || l[LabelPool] != labels[LabelClaim] || l[LabelAgent] != e.opts.Name || l[LabelVolume] != vol {
		e.logger.Warn("refused a claim naming a volume that is not its pool volume", "volume", name, "user", labels[LabelUser])
		return "", fmt.Errorf("%w: volume %s is not the pool volume %s of instance %s on agent %s", ErrForbidden, name, vol, labels[LabelClaim], e.opts.Name)
	}
	return name, nil
}

type claimed struct{ user, owner string }

// claims maps every claimed pool instance of this agent (or only instance,
// when not "") to its user and owner, from the claim volumes.
func (e *Engine) claims(ctx context.Context, instance string) (map[string]claimed, error) {
	label := LabelClaim
	if instance != "" {
		label += "=" + instance
	}
	res, err := e.cli.VolumeList(ctx, client.VolumeListOptions{Filters: e.filter().Add("label", label)})
	if err != nil {
		return nil, fmt.Errorf("list claims: %w", err)
	}
	out := map[string]claimed{}
	for _, v := range res.Items {
		out[v.Labels[LabelClaim]] = claimed{user: v.Labels[LabelUser], owner: v.Labels[LabelClaimOwner]}
	}
	return out, nil
}

// Claim binds the running, unclaimed pool container req.Instance to
// req.User, who must have no data on this machine yet (a user with data
// gets a container of their own on it): once claimed, the container and
// its volumes are that user's for good. Claims of one engine are made one
// at a time, so no container is claimed twice.
func (e *Engine) Claim(ctx context.Context, req ClaimRequest) (Container, error) {
	if err := req.Validate(); err != nil {
		return Container{}, err
	}
	e.claimMu.Lock()
	defer e.claimMu.Unlock()
	c, err := e.find(ctx, req.Instance)
	if err != nil {
		return Container{}, fmt.Errorf("claim: %w", err)
	}
	switch {
	case !c.Pool:
		return Container{}, fmt.Errorf("%w: instance %s is not a warm-pool instance", ErrConflict, req.Instance)
	case c.User != "":
		return Container{}, fmt.Errorf("%w: instance %s is claimed already", ErrConflict, req.Instance)
	case c.State != "running":
		return Container{}, fmt.Errorf("%w: pool instance %s is %s, not running", ErrConflict, req.Instance, c.State)
	}
	if vs, err := e.UserVolumes(ctx, req.User); err != nil {
		return Container{}, fmt.Errorf("claim: %w", err)
	} else if len(vs) > 0 {
		return Container{}, fmt.Errorf("%w: %s has data on this machine (%s): a pool instance starts on empty volumes only", ErrConflict, req.User, vs[0].Name)
	}
	var made []string
	undo := func(cause error) (Container, error) {
		e.removeVolumes(context.WithoutCancel(ctx), made)
		return Container{}, cause
	}
	// The pool volumes as the container mounts them (the listing read
	// them): one Docker call fewer on the launch's path.
	for _, vol := range slices.Sorted(maps.Keys(c.poolVolumes)) {
		pv := c.poolVolumes[vol]
		name := VolumeName(e.opts.Name, req.User, vol)
		labels := map[string]string{LabelUser: req.User, LabelVolume: vol, LabelAgent: e.opts.Name,
			LabelBind: pv, LabelClaim: req.Instance}
		if req.Owner != "" {
			labels[LabelClaimOwner] = req.Owner
		}
		for k, v := range e.opts.Labels {
			labels[k] = v
		}
		created, err := e.cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: name, Labels: labels})
		if err != nil {
			return undo(fmt.Errorf("claim %s for %s: create volume %s: %w", req.Instance, req.User, name, err))
		}
		if created.Volume.Labels[LabelClaim] != req.Instance || created.Volume.Labels[LabelBind] != pv {
			// Creating an existing volume returns it: the user's own,
			// made meanwhile by a launch, stays as it is.
			return undo(fmt.Errorf("%w: %s's volume %s appeared meanwhile", ErrConflict, req.User, name))
		}
		made = append(made, name)
	}
	c.User, c.Owner = req.User, req.Owner
	e.logger.Info("claimed a pool instance", "instance", req.Instance, "user", req.User, "owner", req.Owner, "volumes", len(made))
	return c, nil
}

// DrainPool removes every unclaimed pool container of this agent, with
// its pool volumes, and reports how many containers went. Pool volumes
// whose container is gone (an agent killed mid-launch) go too.
func (e *Engine) DrainPool(ctx context.Context) (int, error) {
	cs, err := e.list(ctx, e.filter().Add("label", LabelPool))
	if err != nil {
		return 0, fmt.Errorf("drain pool: %w", err)
	}
	n := 0
	var errs []error
	live := map[string]bool{}
	for _, c := range cs {
		live[c.Instance] = true
		if c.User != "" {
			continue
		}
		if err := e.remove(ctx, c); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	claims, err := e.claims(ctx, "")
	if err != nil {
		return n, errors.Join(append(errs, err)...)
	}
	res, err := e.cli.VolumeList(ctx, client.VolumeListOptions{Filters: e.filter().Add("label", LabelPool)})
	if err != nil {
		return n, errors.Join(append(errs, fmt.Errorf("drain pool: list volumes: %w", err))...)
	}
	for _, v := range res.Items {
		inst := v.Labels[LabelPool]
		if _, ok := claims[inst]; ok || live[inst] {
			continue
		}
		errs = append(errs, e.removeVolumes(ctx, []string{v.Name}))
	}
	return n, errors.Join(errs...)
}

// removePoolVolumes removes pool instance's pool volumes, unless a claim
// made them a user's.
func (e *Engine) removePoolVolumes(ctx context.Context, instance string) error {
	claims, err := e.claims(ctx, "")
	if err != nil {
		return err
	}
	if _, ok := claims[instance]; ok {
		return nil
	}
	res, err := e.cli.VolumeList(ctx, client.VolumeListOptions{Filters: e.filter().Add("label", LabelPool+"="+instance)})
	if err != nil {
		return fmt.Errorf("list pool volumes of %s: %w", instance, err)
	}
	var names []string
	for _, v := range res.Items {
		names = append(names, v.Name)
	}
	return e.removeVolumes(ctx, names)
}

// removeVolumes removes volumes by name; one already gone is no error.
func (e *Engine) removeVolumes(ctx context.Context, names []string) error {
	var errs []error
	for _, n := range names {
		if _, err := e.cli.VolumeRemove(ctx, n, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove volume %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// dataVolumes are the Docker volumes holding v's data: v itself, and for a
// claim volume the pool volume it stands for too.
func dataVolumes(v UserVolume, bind string) []string {
	if bind == "" {
		return []string{v.Name}
	}
	return []string{bind, v.Name}
}
