package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/e-mission/upc/harness/flow"
	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/harness/standup"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/routerclient"
)

// dockerFaults breaks a Docker deployment for fault steps, through the
// engine's API (the Docker SDK): it kills, pauses and cuts off the run's own
// containers, found by the run's labels and names, and nothing else.
type dockerFaults struct {
	cli   *client.Client
	scope standup.Scope
	dep   *standup.Deployment
	// admin is the router as its admin, to see which instances a machine runs.
	admin *routerclient.Client
	// router is where the router is published; a restart moves it.
	router *routerAddr
	// health calls the router's /readyz after a restart.
	health *http.Client

	onceFaults
}

// onceFaults runs each deployment-wide fault step once however many users
// reach it, and remembers what each did.
type onceFaults struct {
	mu   sync.Mutex
	once map[int]*faultOnce
}

type faultOnce struct {
	once sync.Once
	res  flow.DeploymentFault
	err  error
}

func newDockerFaults(cli *client.Client, scope standup.Scope, dep *standup.Deployment, admin *routerclient.Client, router *routerAddr, health *http.Client) *dockerFaults {
	return &dockerFaults{cli: cli, scope: scope, dep: dep, admin: admin, router: router, health: health}
}

// Did says what each deployment-wide fault step did, by its number among
// the fault steps, for the report.
func (f *onceFaults) Did() map[int]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int]string{}
	for n, o := range f.once {
		if o.err != nil {
			out[n] = "failed: " + o.err.Error()
		} else {
			out[n] = o.res.Did
		}
	}
	return out
}

// do runs the n-th fault step's fault once; later callers wait for the
// first and get its answer.
func (f *onceFaults) do(n int, fault func() (flow.DeploymentFault, error)) (flow.DeploymentFault, error) {
	f.mu.Lock()
	if f.once == nil {
		f.once = map[int]*faultOnce{}
	}
	o := f.once[n]
	if o == nil {
		o = &faultOnce{}
		f.once[n] = o
	}
	f.mu.Unlock()
	o.once.Do(func() { o.res, o.err = fault() })
	return o.res, o.err
}

// Deployment implements flow.Faults.
func (d *dockerFaults) Deployment(ctx context.Context, n int, st scenario.Step) (flow.DeploymentFault, error) {
	return d.do(n, func() (flow.DeploymentFault, error) {
		switch st.Kind {
		case scenario.KillAgent:
			return d.killAgent(ctx, st.Target)
		case scenario.DisconnectAgent:
			return d.disconnectAgent(ctx, st.Target)
		case scenario.RestartRouter:
			return d.restartRouter(ctx)
		}
		return flow.DeploymentFault{}, fmt.Errorf("%s is not a deployment-wide fault", st.Kind)
	})
}

// pmsOn lists the PMs the router places on the agent named.
func (d *dockerFaults) pmsOn(ctx context.Context, agent string) ([]api.Instance, error) {
	ins, err := d.admin.List(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list the router's instances: %w", err)
	}
	var out []api.Instance
	for _, in := range ins {
		if flow.Machine(in.Machine) == agent && strings.EqualFold(in.Service, "pm") {
			out = append(out, in)
		}
	}
	return out, nil
}

func (d *dockerFaults) container(alias string) string { return "upc-" + d.scope.Run + "-" + alias }

// killAgent kills a machine: its agent and every container the agent
// started, with SIGKILL, as a machine that loses power.
func (d *dockerFaults) killAgent(ctx context.Context, agent string) (flow.DeploymentFault, error) {
	pms, err := d.pmsOn(ctx, agent)
	if err != nil {
		return flow.DeploymentFault{}, err
	}
	if _, err := d.cli.ContainerKill(ctx, d.container(agent), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("kill agent %s: %w", agent, err)
	}
	cs, err := d.cli.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).
		Add("label", "upc.agent="+standup.AgentName(d.scope, agent)).Add("label", standup.LabelDeployment+"="+d.scope.Deployment)})
	if err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("list agent %s's containers: %w", agent, err)
	}
	for _, c := range cs.Items {
		if _, err := d.cli.ContainerKill(ctx, c.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
			return flow.DeploymentFault{}, fmt.Errorf("kill %s on agent %s: %w", c.ID[:12], agent, err)
		}
	}
	how := fmt.Sprintf("machine %s was killed (its agent and the %s it ran SIGKILLed)", agent, count(len(cs.Items), "container"))
	hit := map[string]string{}
	for _, in := range pms {
		hit[in.User] = how
	}
	return flow.DeploymentFault{Did: fmt.Sprintf("SIGKILLed agent %s and the %s it ran (%s)", agent, count(len(cs.Items), "container"), count(len(pms), "PM")), Hit: hit}, nil
}

// cutOffProbe bounds how long the router is given to reach a cut-off agent.
const cutOffProbe = 10 * time.Second

// disconnectAgent cuts the agent off the run's network (`docker network
// disconnect`), has the router try to reach each PM the agent runs (a pause,
// as the PM's owner may ask), then connects the agent again under its name
// and waits until the router reaches every agent again.
func (d *dockerFaults) disconnectAgent(ctx context.Context, agent string) (flow.DeploymentFault, error) {
	pms, err := d.pmsOn(ctx, agent)
	if err != nil {
		return flow.DeploymentFault{}, err
	}
	name := d.container(agent)
	if _, err := d.cli.NetworkDisconnect(ctx, d.dep.Network, client.NetworkDisconnectOptions{Container: name, Force: true}); err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("disconnect agent %s from %s: %w", agent, d.dep.Network, err)
	}
	hit := map[string]string{}
	var notCut []string
	for _, in := range pms {
		pctx, cancel := context.WithTimeout(ctx, cutOffProbe)
		_, err := d.admin.Pause(pctx, in.ID)
		cancel()
		if err != nil {
			why := err.Error()
			if flow.IsTimeout(err) {
				// The router waits on the silent agent: the caller's deadline ends it.
				why = fmt.Sprintf("no answer within %s", cutOffProbe)
			}
			hit[in.User] = fmt.Sprintf("agent %s cut off the network: the router could not pause PM %s there: %s", agent, in.ID, why)
			continue
		}
		notCut = append(notCut, in.ID)
		if _, err := d.admin.Resume(ctx, in.ID); err != nil {
			return flow.DeploymentFault{}, fmt.Errorf("resume PM %s: %w", in.ID, err)
		}
	}
	if _, err := d.cli.NetworkConnect(ctx, d.dep.Network, client.NetworkConnectOptions{Container: name,
		EndpointConfig: &network.EndpointSettings{Aliases: []string{agent}}}); err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("connect agent %s to %s again: %w", agent, d.dep.Network, err)
	}
	t0 := time.Now()
	if err := d.untilAgentsAnswer(ctx, time.Minute); err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("after connecting agent %s again: %w", agent, err)
	}
	did := fmt.Sprintf("disconnected agent %s from %s (%s there), connected it again; the router reached every agent %.1f s later",
		agent, d.dep.Network, count(len(pms), "PM"), time.Since(t0).Seconds())
	if len(notCut) > 0 {
		did += "; yet the router still paused " + strings.Join(notCut, ", ")
	}
	return flow.DeploymentFault{Did: did, Hit: hit}, nil
}

// untilAgentsAnswer asks the router to set up every machine's network (which
// calls each agent) until all answer or limit passes.
func (d *dockerFaults) untilAgentsAnswer(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, cutOffProbe)
		_, err := d.admin.SetupNetworks(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the router did not reach every agent within %s: %w", limit, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// restartRouter SIGKILLs the router and starts its container again: a new
// process that must rebuild its view from the instances' labels. Docker may
// publish its port on another host port: the harness's router clients
// follow it (routerAddr).
func (d *dockerFaults) restartRouter(ctx context.Context) (flow.DeploymentFault, error) {
	name := d.container("router")
	if _, err := d.cli.ContainerKill(ctx, name, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("kill the router: %w", err)
	}
	t0 := time.Now()
	if _, err := d.cli.ContainerStart(ctx, name, client.ContainerStartOptions{}); err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("start the router again: %w", err)
	}
	ins, err := d.cli.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	if err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("inspect the restarted router: %w", err)
	}
	host := ""
	if ns := ins.Container.NetworkSettings; ns != nil {
		for _, b := range ns.Ports[network.MustParsePort(strconv.Itoa(standup.RouterPort)+"/tcp")] {
			if b.HostIP.Is4() {
				host = b.HostIP.String() + ":" + b.HostPort
			}
		}
	}
	if host == "" {
		return flow.DeploymentFault{}, errors.New("the restarted router publishes no IPv4 port")
	}
	d.router.set(host)
	// Ready means the view is rebuilt from the labels.
	limit := 2 * time.Minute
	rctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		if err := d.ready(rctx); err == nil {
			break
		} else if rctx.Err() != nil {
			return flow.DeploymentFault{}, fmt.Errorf("the restarted router was not ready within %s: %w", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return flow.DeploymentFault{Did: fmt.Sprintf("SIGKILLed the router and started its container again: ready %.1f s later, published at %s",
		time.Since(t0).Seconds(), host)}, nil
}

func (d *dockerFaults) ready(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+d.router.get()+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := d.health.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %s", resp.Status)
	}
	return nil
}

// instance finds the container of a router instance id among the run's.
func (d *dockerFaults) instance(ctx context.Context, id string) (string, error) {
	cs, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).
		Add("label", "upc.instance="+id).Add("label", standup.LabelDeployment+"="+d.scope.Deployment)})
	if err != nil {
		return "", fmt.Errorf("find instance %s: %w", id, err)
	}
	if len(cs.Items) != 1 {
		return "", fmt.Errorf("find instance %s: %d containers carry its label", id, len(cs.Items))
	}
	return cs.Items[0].ID, nil
}

// KillInstance implements flow.Faults.
func (d *dockerFaults) KillInstance(ctx context.Context, id string) error {
	c, err := d.instance(ctx, id)
	if err != nil {
		return err
	}
	if _, err := d.cli.ContainerKill(ctx, c, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("SIGKILL instance %s: %w", id, err)
	}
	return nil
}

// FreezeInstance implements flow.Faults.
func (d *dockerFaults) FreezeInstance(ctx context.Context, id string) (func(context.Context) error, error) {
	c, err := d.instance(ctx, id)
	if err != nil {
		return nil, err
	}
	if _, err := d.cli.ContainerPause(ctx, c, client.ContainerPauseOptions{}); err != nil {
		return nil, fmt.Errorf("docker pause instance %s: %w", id, err)
	}
	return func(ctx context.Context) error {
		if _, err := d.cli.ContainerUnpause(ctx, c, client.ContainerUnpauseOptions{}); err != nil {
			return fmt.Errorf("docker unpause instance %s: %w", id, err)
		}
		return nil
	}, nil
}

// routerAddr is where the host reaches the router: the address Docker
// published it on, which a restart of its container may change.
type routerAddr struct {
	orig string
	cur  atomic.Value // string
}

func newRouterAddr(routerURL string) (*routerAddr, error) {
	u, err := url.Parse(routerURL)
	if err != nil {
		return nil, fmt.Errorf("router url: %w", err)
	}
	a := &routerAddr{orig: u.Host}
	a.cur.Store(u.Host)
	return a, nil
}

func (a *routerAddr) get() string     { return a.cur.Load().(string) }
func (a *routerAddr) set(host string) { a.cur.Store(host) }

// follow makes hc send what it sends to the router's first address to its
// current one.
func (a *routerAddr) follow(hc *http.Client) *http.Client {
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c := *hc
	c.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if cur := a.get(); r.URL.Host == a.orig && cur != a.orig {
			r = r.Clone(r.Context())
			r.URL.Host, r.Host = cur, cur
		}
		return base.RoundTrip(r)
	})
	return &c
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// count says "1 PM", "2 PMs".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
