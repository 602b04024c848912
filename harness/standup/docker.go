// Package standup stands UPC up on the local Docker engine for the e2e
// harness, with testcontainers-go: a Docker network of the run's own, the
// machine agents (each mounting the engine's socket, each with its placement
// weight) and the service router, as containers of the FROM scratch images
// that `make images` built. Everything carries the run's labels, and Down (or
// Cleanup, after a crash or Ctrl-C) removes it all by those labels.
package standup

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/internal/tcsetup"
)

// Ports the router and the agents listen on inside their containers.
const (
	RouterPort = 4430
	AgentPort  = 54321
)

// Options say what to stand up.
type Options struct {
	Scope Scope
	// RouterImage and AgentImage are image references or IDs (build/images.json).
	RouterImage, AgentImage string
	// ImagesFile is the host's build/images.json, copied into the router so
	// it pins the catalog's images by ID.
	ImagesFile string
	Agents     []scenario.Agent
	// Timeout bounds each container's wait for its first health answer.
	Timeout time.Duration
	Logger  *slog.Logger
	// Commands build the container command lines; tests of the harness may
	// replace them. Default: RouterCommand and AgentCommand.
	RouterCommand func(d *Deployment) []string
	AgentCommand  func(d *Deployment, a scenario.Agent) []string
	// Files are copied into every container (path in container → content).
	Files map[string][]byte
	// FilesFor adds files that depend on the deployment (its network and
	// gateway are known only once the network exists).
	FilesFor func(d *Deployment) (map[string][]byte, error)
	// RouterPort and AgentPort are the ports inside the containers
	// (default the constants of the same names).
	RouterPort, AgentPort int
	// Env is set in every container.
	Env map[string]string
	// TLS, when set, means the router and agents serve HTTPS: health waits
	// use it (the CA's roots, and the client certificate agents demand)
	// and URLs say https.
	TLS *tls.Config
}

// Deployment is what Up started.
type Deployment struct {
	Scope   Scope
	Network string
	// Gateway is the network's gateway address: agents publish instance
	// ports on it, so the host and the containers reach instances there.
	Gateway string
	// RouterURL is the router as the host reaches it (published on loopback).
	RouterURL string
	// RouterInternal is the router as containers on the network reach it.
	RouterInternal string
	Agents         []Agent

	scheme     string // http or https
	mu         sync.Mutex
	containers []testcontainers.Container
	net        *testcontainers.DockerNetwork
	cli        *client.Client
	logger     *slog.Logger
}

// Agent is one started machine agent.
type Agent struct {
	scenario.Agent
	// Address is how the router reaches it, on the run's network.
	Address string
	// HostURL is how the host reaches it (published on loopback).
	HostURL string
}

// Up starts the network, the agents and the router, each waited for with an
// explicit timeout. If anything fails, what was started is removed before
// Up returns the error.
func Up(ctx context.Context, cli *client.Client, opts Options) (d *Deployment, err error) {
	// No reaper (we clean up by label), published ports at loopback.
	if err := tcsetup.Configure(); err != nil {
		return nil, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RouterCommand == nil {
		opts.RouterCommand = RouterCommand
	}
	if opts.AgentCommand == nil {
		opts.AgentCommand = AgentCommand
	}
	if opts.RouterPort == 0 {
		opts.RouterPort = RouterPort
	}
	if opts.AgentPort == 0 {
		opts.AgentPort = AgentPort
	}
	d = &Deployment{Scope: opts.Scope, cli: cli, logger: opts.Logger}
	defer func() {
		if err != nil {
			// Tear down with a context of its own: ctx may be what ended.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if derr := d.Down(cctx); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()

	labels := map[string]string{LabelRun: opts.Scope.Run, LabelDeployment: opts.Scope.Deployment}
	n, err := tcnetwork.New(ctx, tcnetwork.WithLabels(labels), tcnetwork.WithAttachable())
	if err != nil {
		return d, fmt.Errorf("create network: %w", err)
	}
	d.net, d.Network = n, n.Name
	ins, err := cli.NetworkInspect(ctx, n.ID, client.NetworkInspectOptions{})
	if err != nil {
		return d, fmt.Errorf("inspect network %s: %w", n.Name, err)
	}
	for _, c := range ins.Network.IPAM.Config {
		if c.Gateway.Is4() {
			d.Gateway = c.Gateway.String()
		}
	}
	if d.Gateway == "" {
		return d, fmt.Errorf("network %s has no IPv4 gateway", n.Name)
	}
	opts.Logger.Info("network up", "network", d.Network, "gateway", d.Gateway)

	for _, a := range opts.Agents {
		d.Agents = append(d.Agents, Agent{Agent: a, Address: fmt.Sprintf("%s:%d", a.Name, opts.AgentPort)})
	}
	if opts.FilesFor != nil {
		more, err := opts.FilesFor(d)
		if err != nil {
			return d, err
		}
		files := maps.Clone(opts.Files)
		if files == nil {
			files = map[string][]byte{}
		}
		maps.Copy(files, more)
		opts.Files = files
	}
	d.scheme = "http"
	if opts.TLS != nil {
		d.scheme = "https"
	}
	d.RouterInternal = fmt.Sprintf("%s://router:%d", d.scheme, opts.RouterPort)

	// Agents first: the router checks its machines when it starts.
	var wg sync.WaitGroup
	errs := make([]error, len(d.Agents))
	for i := range d.Agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &d.Agents[i]
			req := d.request(opts, "agent", a.Name, opts.AgentImage, opts.AgentPort, opts.AgentCommand(d, a.Agent))
			req.HostConfigModifier = chain(req.HostConfigModifier, func(hc *container.HostConfig) {
				// The agent drives the engine it runs on, like the original swarm.py.
				hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/var/run/docker.sock"})
			})
			url, err := d.start(ctx, req, opts.AgentPort)
			a.HostURL = url
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return d, err
	}
	d.RouterURL, err = d.start(ctx, d.request(opts, "router", "router", opts.RouterImage, opts.RouterPort, opts.RouterCommand(d)), opts.RouterPort)
	if err != nil {
		return d, err
	}
	return d, nil
}

// request builds a container request with the run's labels, on the run's
// network under alias, its port published on loopback only, and a health wait.
func (d *Deployment) request(opts Options, role, alias, image string, port int, cmd []string) testcontainers.GenericContainerRequest {
	p := strconv.Itoa(port) + "/tcp"
	health := wait.ForHTTP("/healthz").WithPort(p).WithStartupTimeout(opts.Timeout).WithPollInterval(50 * time.Millisecond)
	if opts.TLS != nil {
		health = health.WithTLS(true, opts.TLS)
	}
	var files []testcontainers.ContainerFile
	for path, b := range opts.Files {
		files = append(files, testcontainers.ContainerFile{Reader: strings.NewReader(string(b)), ContainerFilePath: path, FileMode: 0o644})
	}
	return testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:          image,
			Name:           "upc-" + d.Scope.Run + "-" + alias,
			Cmd:            cmd,
			Env:            opts.Env,
			Labels:         map[string]string{LabelRun: d.Scope.Run, LabelDeployment: d.Scope.Deployment, LabelRole: role},
			Networks:       []string{d.Network},
			NetworkAliases: map[string][]string{d.Network: {alias}},
			ExposedPorts:   []string{p},
			Files:          files,
			HostConfigModifier: func(hc *container.HostConfig) {
				// Published on loopback only: nothing outside this machine reaches it.
				hc.PortBindings = network.PortMap{network.MustParsePort(p): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: "0"}}}
			},
			WaitingFor: health,
		},
		Started: true,
	}
}

// start runs a request and returns the host URL of port; the container is
// remembered for Down even when it failed to become ready.
func (d *Deployment) start(ctx context.Context, req testcontainers.GenericContainerRequest, port int) (string, error) {
	t0 := time.Now()
	c, err := testcontainers.GenericContainer(ctx, req)
	if c != nil {
		d.mu.Lock()
		d.containers = append(d.containers, c)
		d.mu.Unlock()
	}
	if err != nil {
		return "", fmt.Errorf("start %s: %w%s", req.Name, err, d.tail(ctx, c))
	}
	hp, err := c.MappedPort(ctx, strconv.Itoa(port)+"/tcp")
	if err != nil {
		return "", fmt.Errorf("start %s: %w", req.Name, err)
	}
	url := fmt.Sprintf("%s://127.0.0.1:%s", d.scheme, hp.Port())
	d.logger.Info("container up", "name", req.Name, "url", url, "took", time.Since(t0).Round(time.Millisecond))
	return url, nil
}

// tail is the end of a failed container's log, to say why it failed.
func (d *Deployment) tail(ctx context.Context, c testcontainers.Container) string {
	if c == nil {
		return ""
	}
	rc, err := c.Logs(ctx)
	if err != nil {
		return ""
	}
	defer rc.Close()
	b := make([]byte, 64<<10)
	n, _ := ioReadFull(rc, b)
	s := strings.TrimSpace(string(b[:n]))
	if lines := strings.Split(s, "\n"); len(lines) > 8 {
		s = strings.Join(lines[len(lines)-8:], "\n")
	}
	if s == "" {
		return ""
	}
	return "; its log ends:\n" + s
}

// Logs returns each harness container's log, for the report folder.
func (d *Deployment) Logs(ctx context.Context) map[string][]byte {
	out := map[string][]byte{}
	d.mu.Lock()
	cs := append([]testcontainers.Container(nil), d.containers...)
	d.mu.Unlock()
	for _, c := range cs {
		name, err := c.Name(ctx)
		if err != nil {
			continue
		}
		rc, err := c.Logs(ctx)
		if err != nil {
			continue
		}
		b := make([]byte, 4<<20)
		n, _ := ioReadFull(rc, b)
		rc.Close()
		out[strings.TrimPrefix(name, "/")] = b[:n]
	}
	return out
}

// Down removes the router, the agents, every instance and volume of the
// deployment and the network, by the run's labels, reporting what failed.
func (d *Deployment) Down(ctx context.Context) error {
	d.mu.Lock()
	cs := d.containers
	d.containers = nil
	d.mu.Unlock()
	var errs []error
	// The router first, so it launches nothing more; then the agents.
	for i := len(cs) - 1; i >= 0; i-- {
		if err := cs[i].Terminate(ctx); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", cs[i].GetContainerID()[:12], err))
		}
	}
	// Instances the agents started, their volumes, and the network.
	if err := Cleanup(ctx, d.cli, d.Scope); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func chain(a, b func(*container.HostConfig)) func(*container.HostConfig) {
	return func(hc *container.HostConfig) {
		if a != nil {
			a(hc)
		}
		b(hc)
	}
}
