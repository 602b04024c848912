package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/internal/owndata"
)

// Options configure an Engine.
type Options struct {
	// Network is the Docker network instances join (created if missing).
	Network string
	// BindIP is the host address published ports bind to: "gateway" (the
	// network's gateway address: reachable from the host and from containers,
	// and traffic stays on our network) or an IP literal.
	BindIP string
	// Advertise is the host put in instance addresses; empty means the bind IP.
	Advertise string
	// NetworkLabels are extra labels for the network if the agent creates it.
	NetworkLabels map[string]string
	// Labels are put on every container and volume the agent creates (the
	// e2e harness adds its run's upc.deployment label to clean up by it).
	Labels map[string]string
	// Name is the agent's name (default "upc"), put in the upc.agent label:
	// agents sharing one engine need distinct names.
	Name string
	// PidsLimit caps the processes (threads included) of each instance;
	// default DefaultPidsLimit.
	PidsLimit int64
	// NetworkMode is NetworkBridge (default: each instance on Network, its
	// port published by Docker) or NetworkHost (each instance in the host's
	// network stack, listening on BindIP at a port the agent allocates
	// from HostPorts).
	NetworkMode string
	// HostPorts is the inclusive range host-mode ports come from; default
	// DefaultHostPorts.
	HostPorts [2]int
}

// Network modes (Options.NetworkMode).
const (
	NetworkBridge = "bridge"
	NetworkHost   = "host"
)

// DefaultHostPorts lies below Linux's ephemeral ports (32768-60999), so no
// outgoing connection holds a port an instance needs.
var DefaultHostPorts = [2]int{20000, 23999}

// Hardening of every instance container (see docs/security.md#hardening).
const (
	// DefaultPidsLimit bounds an instance's processes and threads: a Go
	// service uses a few dozen threads; a fork bomb stops here.
	DefaultPidsLimit = 256
)

// TmpfsOptions mount the only writable path besides volumes, /tmp: small,
// in memory, no executables, no set-uid, owned by the images' user (Docker
// copies the image's /tmp into the tmpfs, mode and all, but leaves it
// root's: the user could not write it otherwise).
var TmpfsOptions = fmt.Sprintf("rw,noexec,nosuid,size=16m,uid=%d,gid=%d", images.UID, images.GID)

// DefaultNetwork is the network instances join unless configured otherwise.
const DefaultNetwork = "upc"

// Engine drives the local Docker Engine.
type Engine struct {
	cli    *client.Client
	opts   Options
	logger *slog.Logger

	mu      sync.Mutex
	claimMu sync.Mutex // one claim at a time (Claim)
	net     NetworkInfo
	bindIP  netip.Addr
	adverts string

	// Host mode: ports handed out whose containers are not created yet,
	// and where the next search starts (so a port just freed is reused last).
	portMu   sync.Mutex
	reserved map[int]bool
	nextPort int
}

// NewEngine checks opts and wraps cli; it does not contact the engine.
func NewEngine(cli *client.Client, opts Options, logger *slog.Logger) (*Engine, error) {
	opts.Network = cmp.Or(opts.Network, DefaultNetwork)
	opts.BindIP = cmp.Or(opts.BindIP, "gateway")
	opts.Name = cmp.Or(opts.Name, DefaultNetwork)
	opts.PidsLimit = cmp.Or(opts.PidsLimit, DefaultPidsLimit)
	opts.NetworkMode = cmp.Or(opts.NetworkMode, NetworkBridge)
	if opts.HostPorts == [2]int{} {
		opts.HostPorts = DefaultHostPorts
	}
	var errs []error
	if opts.NetworkMode != NetworkBridge && opts.NetworkMode != NetworkHost {
		errs = append(errs, fmt.Errorf("network mode: %q is not one of %s, %s", opts.NetworkMode, NetworkBridge, NetworkHost))
	}
	if lo, hi := opts.HostPorts[0], opts.HostPorts[1]; lo < 1024 || hi > 65535 || lo > hi {
		errs = append(errs, fmt.Errorf("host ports: %d-%d is not a range within 1024-65535", lo, hi))
	}
	if opts.PidsLimit < 0 {
		errs = append(errs, fmt.Errorf("pids limit: %d is negative", opts.PidsLimit))
	}
	if !agentRE.MatchString(opts.Name) {
		errs = append(errs, fmt.Errorf("name: %q must be 1-63 lowercase letters, digits and dashes", opts.Name))
	}
	if !nameRE.MatchString(opts.Network) {
		errs = append(errs, fmt.Errorf("network: %q is not a valid network name", opts.Network))
	}
	if opts.BindIP != "gateway" {
		ip, err := netip.ParseAddr(opts.BindIP)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("bind ip: %q is neither \"gateway\" nor an IP address", opts.BindIP))
		case ip.IsUnspecified() && opts.Advertise == "":
			errs = append(errs, fmt.Errorf("advertise: required when binding to %s (instances need an address others can call)", ip))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Engine{cli: cli, opts: opts, logger: cmp.Or(logger, slog.New(slog.DiscardHandler)),
		reserved: map[int]bool{}, nextPort: opts.HostPorts[0]}, nil
}

// NewClientFromEnv makes a Docker SDK client from DOCKER_HOST etc., speaking
// the daemon's API version (the SDK's default is newer than Debian's 20.10).
func NewClientFromEnv() (*client.Client, error) {
	cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return cli, nil
}

// Ping checks that the engine answers.
func (e *Engine) Ping(ctx context.Context) error {
	if _, err := e.cli.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("ping docker: %w", err)
	}
	return nil
}

// EnsureNetwork creates the network if missing and learns its gateway.
func (e *Engine) EnsureNetwork(ctx context.Context) (NetworkInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.net.ID != "" {
		return e.net, nil
	}
	n, err := e.findOrCreateNetwork(ctx)
	if err != nil {
		return NetworkInfo{}, err
	}
	var gw netip.Addr
	for _, c := range n.IPAM.Config {
		if c.Gateway.Is4() {
			gw = c.Gateway
			break
		}
	}
	bind := gw
	if e.opts.BindIP != "gateway" {
		bind = netip.MustParseAddr(e.opts.BindIP)
	} else if !gw.IsValid() {
		return NetworkInfo{}, fmt.Errorf("network %s has no IPv4 gateway to bind to", e.opts.Network)
	}
	e.net = NetworkInfo{Network: n.Name, ID: n.ID, Gateway: gw.String()}
	e.bindIP = bind
	e.adverts = cmp.Or(e.opts.Advertise, bind.String())
	e.logger.Info("network ready", "network", n.Name, "id", n.ID[:12], "gateway", gw, "bind", bind, "advertise", e.adverts, "mode", e.opts.NetworkMode)
	return e.net, nil
}

func (e *Engine) findOrCreateNetwork(ctx context.Context) (network.Inspect, error) {
	name := e.opts.Network
	ids, err := e.networksNamed(ctx, name)
	if err != nil {
		return network.Inspect{}, err
	}
	if len(ids) == 0 {
		labels := map[string]string{LabelNetwork: name}
		for k, v := range e.opts.Labels {
			labels[k] = v
		}
		for k, v := range e.opts.NetworkLabels {
			labels[k] = v
		}
		created, err := e.cli.NetworkCreate(ctx, name, client.NetworkCreateOptions{Driver: "bridge", Labels: labels})
		if err != nil {
			return network.Inspect{}, fmt.Errorf("create network %s: %w", name, err)
		}
		// Engines before API 1.44 accept duplicate names: if another agent
		// raced us, everyone keeps the lowest ID and drops their own extra.
		if ids, err = e.networksNamed(ctx, name); err != nil {
			return network.Inspect{}, err
		}
		if ids[0] != created.ID {
			e.cli.NetworkRemove(ctx, created.ID, client.NetworkRemoveOptions{})
		}
	}
	res, err := e.cli.NetworkInspect(ctx, ids[0], client.NetworkInspectOptions{})
	if err != nil {
		return network.Inspect{}, fmt.Errorf("inspect network %s: %w", name, err)
	}
	return res.Network, nil
}

// networksNamed lists IDs of networks named exactly name, sorted.
func (e *Engine) networksNamed(ctx context.Context, name string) ([]string, error) {
	res, err := e.cli.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("name", name)})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	var ids []string
	for _, n := range res.Items {
		if n.Name == name { // the name filter matches substrings
			ids = append(ids, n.ID)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Launch creates and starts one instance. It returns once Docker reports the
// container started; answering its health path is the router's to wait for.
func (e *Engine) Launch(ctx context.Context, req LaunchRequest) (Container, error) {
	if err := req.Validate(); err != nil {
		return Container{}, err
	}
	image, err := e.resolveImage(ctx, req) // first: a refused image creates nothing
	if err != nil {
		return Container{}, err
	}
	if _, err := e.EnsureNetwork(ctx); err != nil {
		return Container{}, err
	}
	e.mu.Lock()
	bind, adverts, netName := e.bindIP, e.adverts, e.net.Network
	e.mu.Unlock()

	port, _ := network.PortFrom(uint16(req.Port), network.TCP)
	labels := map[string]string{}
	for k, v := range e.opts.Labels {
		labels[k] = v
	}
	for k, v := range req.Labels {
		labels[k] = v
	}
	labels[LabelInstance] = req.Instance
	labels[LabelService] = req.Service
	labels[LabelUser] = req.User
	delete(labels, LabelPool)
	if req.Pool {
		// Labels are fixed at creation: a pool container names no user,
		// and its claim's volume labels say whose it became (Claim).
		delete(labels, LabelUser)
		labels[LabelPool] = req.Instance
	}
	labels[LabelImage] = req.Image
	if req.TLS {
		labels[LabelScheme] = "https"
	} else {
		delete(labels, LabelScheme)
	}
	labels[LabelPort] = strconv.Itoa(req.Port)
	labels[LabelAgent] = e.opts.Name
	delete(labels, LabelOwner)
	delete(labels, LabelPM)
	delete(labels, LabelHostPort) // the agent's alone to set: it is the address
	if req.Owner != "" {
		labels[LabelOwner] = req.Owner
	}
	if req.PM != "" {
		labels[LabelPM] = req.PM
	}

	mounts := make([]mount.Mount, 0, len(req.Volumes))
	var legacy []mount.Mount // per-user volumes of root's days, to own first
	var poolVols []string    // fresh pool volumes, removed if the launch fails
	for _, v := range req.Volumes {
		m := mount.Mount{Type: mount.TypeVolume, Target: v.Path}
		switch {
		case v.PerUser && req.Pool:
			src, err := e.poolVolume(ctx, req.Instance, v.Name)
			if err != nil {
				e.removeVolumes(context.WithoutCancel(ctx), poolVols)
				return Container{}, err
			}
			m.Source = src
			poolVols = append(poolVols, src)
		case v.PerUser:
			src, old, err := e.userVolume(ctx, req.User, v.Name)
			if err != nil {
				return Container{}, err
			}
			m.Source = src
			if old {
				legacy = append(legacy, m)
			}
		}
		mounts = append(mounts, m)
	}
	if len(legacy) > 0 {
		if err := e.ownData(ctx, req, image, legacy); err != nil {
			return Container{}, err
		}
	}
	env := make([]string, 0, len(req.Env))
	for k, v := range req.Env {
		env = append(env, k+"="+v)
	}
	slices.Sort(env)
	name := "upc-" + req.Service + "-" + req.Instance
	hc := e.hardened()
	hc.Mounts = mounts
	hc.Resources.NanoCPUs = int64(req.CPUMillis) * 1_000_000
	hc.Resources.Memory = int64(req.MemoryMB) << 20
	cfg := &container.Config{Image: image, User: images.User, Labels: labels}
	var netCfg *network.NetworkingConfig
	hostPort := ""
	if e.opts.NetworkMode == NetworkHost {
		// No endpoint, no iptables rules, no docker-proxy: the instance
		// listens on the host itself, at a port of ours.
		p, release, err := e.allocPort(ctx, bind)
		if err != nil {
			return Container{}, fmt.Errorf("launch %s: %w", name, err)
		}
		defer release() // once created, the container's label holds it
		hostPort = strconv.Itoa(p)
		labels[LabelHostPort] = hostPort
		env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, access.EnvListen+"=") })
		env = append(env, access.EnvListen+"="+hostJoin(bind.String(), hostPort))
		hc.NetworkMode = container.NetworkMode(NetworkHost)
	} else {
		// HostPort "" lets Docker allocate a free port: no retry loops.
		hc.PortBindings = network.PortMap{port: {{HostIP: bind, HostPort: ""}}}
		cfg.ExposedPorts = network.PortSet{port: {}}
		netCfg = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			netName: {Aliases: []string{name}},
		}}
	}
	cfg.Env = env
	created, err := e.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: name, Config: cfg, HostConfig: hc, NetworkingConfig: netCfg,
	})
	if err != nil {
		e.removeVolumes(context.WithoutCancel(ctx), poolVols)
		if cerrdefs.IsNotFound(err) {
			return Container{}, fmt.Errorf("create %s: image %s (%s) is not on this machine (run make images): %w", name, cmp.Or(req.Image, image), image, err)
		}
		return Container{}, fmt.Errorf("create %s: %w", name, err)
	}
	cleanup := func(cause error) error {
		_, rerr := e.cli.ContainerRemove(context.WithoutCancel(ctx), created.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		if rerr != nil {
			return errors.Join(cause, fmt.Errorf("remove %s: %w", name, rerr))
		}
		e.removeVolumes(context.WithoutCancel(ctx), poolVols)
		return cause
	}
	if _, err := e.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		return Container{}, cleanup(fmt.Errorf("start %s: %w", name, err))
	}
	ins, err := e.cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
	if err != nil {
		return Container{}, cleanup(fmt.Errorf("inspect %s: %w", name, err))
	}
	c := ins.Container
	if hostPort == "" && c.NetworkSettings != nil {
		for _, b := range c.NetworkSettings.Ports[port] {
			hostPort = cmp.Or(hostPort, b.HostPort)
		}
	}
	if hostPort == "" {
		return Container{}, cleanup(fmt.Errorf("start %s: Docker published no host port for %s", name, port))
	}
	createdAt, _ := time.Parse(time.RFC3339Nano, c.Created)
	state := "running"
	if c.State != nil {
		state = string(c.State.Status)
	}
	return Container{
		Instance: req.Instance, Service: req.Service, User: req.User, Owner: req.Owner, PM: req.PM,
		Address: scheme(labels) + hostJoin(adverts, hostPort),
		Image:   req.Image, Digest: c.Image, State: state, Created: createdAt, ContainerID: c.ID, Pool: req.Pool,
	}, nil
}

// allocPort hands out a host port for an instance in host mode: the first
// one of the range, after the last handed out, that no container on this
// engine holds (its upc.host_port label, whichever agent made it, in any
// state: so ports survive an agent restart and are free again once their
// container is removed), that no launch in flight holds, and that nothing
// else on the host is listening on at bind (checked when the agent shares
// the host's network; an agent in a container of its own cannot see). The
// caller calls release once the container exists or its launch failed.
func (e *Engine) allocPort(ctx context.Context, bind netip.Addr) (int, func(), error) {
	e.portMu.Lock()
	defer e.portMu.Unlock()
	res, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", LabelHostPort)})
	if err != nil {
		return 0, nil, fmt.Errorf("allocate a host port: list containers: %w", err)
	}
	taken := map[int]bool{}
	for _, c := range res.Items {
		if p, err := strconv.Atoi(c.Labels[LabelHostPort]); err == nil {
			taken[p] = true
		}
	}
	lo, hi := e.opts.HostPorts[0], e.opts.HostPorts[1]
	n := hi - lo + 1
	for i := range n {
		p := lo + (e.nextPort-lo+i)%n
		if taken[p] || e.reserved[p] || inUse(bind, p) {
			continue
		}
		e.reserved[p] = true
		e.nextPort = lo + (p-lo+1)%n
		return p, func() {
			e.portMu.Lock()
			delete(e.reserved, p)
			e.portMu.Unlock()
		}, nil
	}
	return 0, nil, fmt.Errorf("%w: every host port of %d-%d is taken (%d instances hold one): widen docker.host_ports", ErrConflict, lo, hi, len(taken))
}

// inUse reports whether something on this host listens on bind:port. Only
// "address in use" counts: an address this process cannot bind (an agent
// in a container of its own) says nothing about the host.
func inUse(bind netip.Addr, port int) bool {
	l, err := net.Listen("tcp", netip.AddrPortFrom(bind, uint16(port)).String())
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	l.Close()
	return false
}

// scheme is the URL scheme of a container with labels.
func scheme(labels map[string]string) string {
	if labels[LabelScheme] == "https" {
		return "https://"
	}
	return "http://"
}

func hostJoin(host, port string) string {
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

// List reports every container carrying an instance label, in any state,
// but warm-pool containers no one has claimed: they are no one's instances
// (DrainPool removes them).
func (e *Engine) List(ctx context.Context) ([]Container, error) {
	cs, err := e.list(ctx, e.filter().Add("label", LabelInstance))
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(cs, func(c Container) bool { return c.Pool && c.User == "" }), nil
}

func (e *Engine) list(ctx context.Context, f client.Filters) ([]Container, error) {
	res, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	e.mu.Lock()
	adverts := e.adverts
	e.mu.Unlock()
	if adverts == "" { // nothing launched yet by this agent: learn the network
		if _, err := e.EnsureNetwork(ctx); err != nil {
			return nil, err
		}
		e.mu.Lock()
		adverts = e.adverts
		e.mu.Unlock()
	}
	out := make([]Container, 0, len(res.Items))
	var claims map[string]claimed // read once, if a pool container is listed
	// One pool container listed (find's case: every claim and delete):
	// only its own claims are read, not every claim volume of the engine.
	var pools []string
	for _, s := range res.Items {
		if s.Labels[LabelPool] != "" {
			pools = append(pools, s.Labels[LabelInstance])
		}
	}
	only := ""
	if len(pools) == 1 && pools[0] != "" {
		only = pools[0]
	}
	for _, s := range res.Items {
		c := Container{
			Instance: s.Labels[LabelInstance], Service: s.Labels[LabelService], User: s.Labels[LabelUser],
			Owner: s.Labels[LabelOwner], PM: s.Labels[LabelPM], Image: s.Labels[LabelImage], Digest: s.ImageID, State: string(s.State),
			Created: time.Unix(s.Created, 0).UTC(), ContainerID: s.ID, Pool: s.Labels[LabelPool] != "",
		}
		if c.Pool {
			if claims == nil {
				if claims, err = e.claims(ctx, only); err != nil {
					return nil, err
				}
			}
			cl := claims[c.Instance]
			c.User, c.Owner = cl.user, cl.owner
			prefix := PoolVolumeName(e.opts.Name, c.Instance, "")
			for _, m := range s.Mounts {
				if vol, ok := strings.CutPrefix(m.Name, prefix); ok && m.Type == mount.TypeVolume && vol != "" {
					if c.poolVolumes == nil {
						c.poolVolumes = map[string]string{}
					}
					c.poolVolumes[vol] = m.Name
				}
			}
		}
		if hp := s.Labels[LabelHostPort]; hp != "" {
			c.Address = scheme(s.Labels) + hostJoin(adverts, hp)
		} else if p, err := strconv.Atoi(s.Labels[LabelPort]); err == nil {
			for _, ps := range s.Ports {
				if int(ps.PrivatePort) == p && ps.PublicPort != 0 && ps.Type == "tcp" {
					c.Address = scheme(s.Labels) + hostJoin(adverts, strconv.Itoa(int(ps.PublicPort)))
					break
				}
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// filter selects this agent's containers.
func (e *Engine) filter() client.Filters {
	return make(client.Filters).Add("label", LabelAgent+"="+e.opts.Name)
}

// find returns the container of one instance.
func (e *Engine) find(ctx context.Context, instance string) (Container, error) {
	if !nameRE.MatchString(instance) {
		return Container{}, fmt.Errorf("%w: instance %q is malformed", ErrInvalid, instance)
	}
	cs, err := e.list(ctx, e.filter().Add("label", LabelInstance+"="+instance))
	if err != nil {
		return Container{}, err
	}
	if len(cs) == 0 {
		return Container{}, fmt.Errorf("%w: %s", ErrNotFound, instance)
	}
	return cs[0], nil
}

// Pause freezes an instance's processes; pausing a paused one is a no-op.
func (e *Engine) Pause(ctx context.Context, instance string) error {
	c, err := e.find(ctx, instance)
	if err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	if c.State == string(container.StatePaused) {
		return nil
	}
	if _, err := e.cli.ContainerPause(ctx, c.ContainerID, client.ContainerPauseOptions{}); err != nil {
		return fmt.Errorf("pause %s: %w", instance, err)
	}
	return nil
}

// Unpause resumes a paused instance; resuming a running one is a no-op.
func (e *Engine) Unpause(ctx context.Context, instance string) error {
	c, err := e.find(ctx, instance)
	if err != nil {
		return fmt.Errorf("unpause: %w", err)
	}
	if c.State != string(container.StatePaused) {
		return nil
	}
	if _, err := e.cli.ContainerUnpause(ctx, c.ContainerID, client.ContainerUnpauseOptions{}); err != nil {
		return fmt.Errorf("unpause %s: %w", instance, err)
	}
	return nil
}

// Remove stops and removes an instance's container and its anonymous
// volumes; per-user volumes stay.
func (e *Engine) Remove(ctx context.Context, instance string) error {
	c, err := e.find(ctx, instance)
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return e.remove(ctx, c)
}

func (e *Engine) remove(ctx context.Context, c Container) error {
	_, err := e.cli.ContainerRemove(ctx, c.ContainerID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove %s: %w", c.Instance, err)
	}
	if c.Pool && c.User == "" {
		// An unclaimed pool container's volumes are no one's: they go
		// with it. A claimed one's are its user's, and stay.
		return e.removePoolVolumes(ctx, c.Instance)
	}
	return nil
}

// UserVolumes lists user's per-user volumes made by this agent, by name.
func (e *Engine) UserVolumes(ctx context.Context, user string) ([]UserVolume, error) {
	if !nameRE.MatchString(user) {
		return nil, fmt.Errorf("%w: user %q is malformed", ErrInvalid, user)
	}
	res, err := e.cli.VolumeList(ctx, client.VolumeListOptions{Filters: e.filter().Add("label", LabelUser+"="+user)})
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := make([]UserVolume, 0, len(res.Items))
	for _, v := range res.Items {
		out = append(out, UserVolume{Name: v.Name, Volume: v.Labels[LabelVolume], Bound: v.Labels[LabelBind]})
	}
	slices.SortFunc(out, func(a, b UserVolume) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// RemoveUserVolumes removes user's per-user volumes made by this agent, and
// everything in them (Docker deletes a volume's directory with it), and
// reports them. While any container mounts one of them, even a stopped
// one, nothing is removed: ErrConflict naming the containers.
func (e *Engine) RemoveUserVolumes(ctx context.Context, user string) ([]UserVolume, error) {
	vs, err := e.UserVolumes(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("remove volumes of %s: %w", user, err)
	}
	var users []string
	for _, v := range vs {
		for _, dv := range dataVolumes(v, v.Bound) {
			res, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("volume", dv)})
			if err != nil {
				return nil, fmt.Errorf("remove volumes of %s: list containers: %w", user, err)
			}
			for _, c := range res.Items {
				name := c.ID[:min(12, len(c.ID))]
				if len(c.Names) > 0 {
					name = strings.TrimPrefix(c.Names[0], "/")
				}
				users = append(users, fmt.Sprintf("%s (%s, volume %s)", name, c.State, dv))
			}
		}
	}
	if len(users) > 0 {
		return nil, fmt.Errorf("%w: %s's volumes are mounted by %s: remove those first", ErrConflict, user, strings.Join(users, ", "))
	}
	var removed []UserVolume
	for _, v := range vs {
		// A claim's pool volume (the data) goes before the claim, so an
		// erase cut short leaves the claim to find and finish it.
		for _, dv := range dataVolumes(v, v.Bound) {
			if _, err := e.cli.VolumeRemove(ctx, dv, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
				if cerrdefs.IsConflict(err) {
					err = fmt.Errorf("%w: %w", ErrConflict, err)
				}
				return removed, fmt.Errorf("remove volume %s of %s: %w", dv, user, err)
			}
		}
		removed = append(removed, v)
	}
	if len(removed) > 0 {
		e.logger.Info("removed a user's volumes", "user", user, "volumes", len(removed))
	}
	return removed, nil
}

// Clear removes every container of this agent carrying an instance label,
// and nothing else. Per-user volumes and the network stay.
func (e *Engine) Clear(ctx context.Context) (int, error) {
	cs, err := e.list(ctx, e.filter().Add("label", LabelInstance))
	if err != nil {
		return 0, fmt.Errorf("clear: %w", err)
	}
	n := 0
	var errs []error
	for _, c := range cs {
		if err := e.remove(ctx, c); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// hardened is the host configuration every instance starts from: the
// image's non-root user (Config.User), a read-only root filesystem with a
// small tmpfs at /tmp, no capabilities, no privilege escalation (set-uid
// binaries and file capabilities give nothing) and a cap on processes.
func (e *Engine) hardened() *container.HostConfig {
	return &container.HostConfig{
		ReadonlyRootfs: true,
		Tmpfs:          map[string]string{"/tmp": TmpfsOptions},
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		Resources:      container.Resources{PidsLimit: &e.opts.PidsLimit},
	}
}

// userVolume is the Docker volume holding user's per-user volume vol, and
// whether it has a name of before VolumeName had its hash: the one this
// agent labelled for them, whatever its name (volumes made before VolumeName
// had its hash keep their LegacyVolumeName), else VolumeName, created. A
// volume whose labels name anyone else is refused. A user whose first PM
// came from the warm pool has, under VolumeName, a claim (see Claim): the
// pool volume it names is the one mounted.
func (e *Engine) userVolume(ctx context.Context, user, vol string) (string, bool, error) {
	want := VolumeName(e.opts.Name, user, vol)
	res, err := e.cli.VolumeList(ctx, client.VolumeListOptions{Filters: e.filter().
		Add("label", LabelUser+"="+user).Add("label", LabelVolume+"="+vol)})
	if err != nil {
		return "", false, fmt.Errorf("list volumes of %s: %w", user, err)
	}
	var found []string
	for _, v := range res.Items {
		if e.ownVolume(v.Labels, user, vol, v.Name) == nil {
			if v.Labels[LabelBind] != "" && v.Name == want {
				src, err := e.boundVolume(ctx, v.Labels, vol)
				return src, false, err
			}
			found = append(found, v.Name)
		}
	}
	if len(found) > 0 && !slices.Contains(found, want) {
		slices.Sort(found)
		if len(found) > 1 {
			e.logger.Warn("several volumes of one user's volume: using the first", "user", user, "volume", vol, "volumes", found)
		}
		return found[0], true, nil // named as before VolumeName had its hash
	}
	// Creating an existing volume returns it: the user's data stays.
	vl := map[string]string{LabelUser: user, LabelVolume: vol, LabelAgent: e.opts.Name}
	for k, v := range e.opts.Labels {
		vl[k] = v
	}
	created, err := e.cli.VolumeCreate(ctx, client.VolumeCreateOptions{Name: want, Labels: vl})
	if err != nil {
		return "", false, fmt.Errorf("create volume %s: %w", want, err)
	}
	if err := e.ownVolume(created.Volume.Labels, user, vol, want); err != nil {
		return "", false, err
	}
	if created.Volume.Labels[LabelBind] != "" { // a claim made meanwhile
		src, err := e.boundVolume(ctx, created.Volume.Labels, vol)
		return src, false, err
	}
	return want, false, nil
}

// ownData gives volumes of root's days (written by services that ran as
// root) to the image's non-root user, before the instance starts: a
// one-shot container of the instance's own image runs its own-data
// subcommand (internal/owndata) as root with no capability but CAP_CHOWN,
// no network and a read-only root. It is quick when there is nothing left
// to change, and runs only for volumes with a LegacyVolumeName.
func (e *Engine) ownData(ctx context.Context, req LaunchRequest, image string, vols []mount.Mount) error {
	cmd := []string{owndata.Command, images.User}
	for _, m := range vols {
		cmd = append(cmd, m.Target)
	}
	labels := map[string]string{LabelAgent: e.opts.Name, LabelUser: req.User}
	for k, v := range e.opts.Labels {
		labels[k] = v
	}
	hc := e.hardened()
	hc.CapAdd = []string{"CHOWN"}
	hc.NetworkMode = "none"
	hc.Mounts = vols
	name := "upc-own-data-" + req.Instance
	created, err := e.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:       name,
		Config:     &container.Config{Image: image, User: "0:0", Cmd: cmd, Labels: labels},
		HostConfig: hc,
	})
	if err != nil {
		return fmt.Errorf("own the data of %s: create %s: %w", req.User, name, err)
	}
	defer e.cli.ContainerRemove(context.WithoutCancel(ctx), created.ID, client.ContainerRemoveOptions{Force: true})
	if _, err := e.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("own the data of %s: start %s: %w", req.User, name, err)
	}
	wait := e.cli.ContainerWait(ctx, created.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case err := <-wait.Error:
		return fmt.Errorf("own the data of %s: wait for %s: %w", req.User, name, err)
	case res := <-wait.Result:
		if res.StatusCode != 0 {
			return fmt.Errorf("own the data of %s: %s exited with %d (does image %s have the %s subcommand?)", req.User, name, res.StatusCode, cmp.Or(req.Image, image), owndata.Command)
		}
	}
	e.logger.Info("gave volumes of root's days to the service's user", "user", req.User, "instance", req.Instance, "user_id", images.User)
	return nil
}
