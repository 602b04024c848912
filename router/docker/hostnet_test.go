package docker_test

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routertest"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// hostEngine is an in-process agent named d.prefix+"-"+name in host network
// mode, allocating ports lo-hi.
func (d deployment) hostEngine(t testing.TB, name string, lo, hi int) *agent.Engine {
	full := d.prefix + "-" + name
	if !slices.Contains(*d.agents, full) {
		*d.agents = append(*d.agents, full)
	}
	e, err := agent.NewEngine(cli, agent.Options{
		Network: d.network, Name: full, NetworkLabels: map[string]string{"upc.test": "1"},
		NetworkMode: agent.NetworkHost, HostPorts: [2]int{lo, hi},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func port(t *testing.T, address string) int {
	t.Helper()
	u, err := url.Parse(address)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("address %s: %v", address, err)
	}
	return p
}

func statusCode(err error) int {
	var se *pmclient.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return -1
}

// TestHostNetworkPMDocker launches real PMs through the router on an agent
// in host network mode, with a range of two ports: each PM gets its own
// port of the range, in its label, and shares the host's network (no
// endpoint, nothing published); it answers its owner over TLS and refuses
// no credential, another user's secret and plain HTTP. With both ports
// held a third launch is refused (409), by the agent and by a restarted
// one, which reads the ports back from the labels and reports the same
// addresses; once a PM is deleted its port is handed out again.
func TestHostNetworkPMDocker(t *testing.T) {
	ctx := context.Background()
	m := imagestest.Require(t, "pm")
	cat, err := conf.DefaultCatalog()
	if err != nil {
		t.Fatal(err)
	}
	m.Pin(cat)
	d := newDeployment(t)
	// A range of its own: other runs on this engine do not collide.
	lo := 24000 + 2*rand.IntN(3000)
	eng := d.hostEngine(t, "host", lo, lo+1)
	ca := certstest.New(t)
	newRouter := func(e *agent.Engine) *router.Router {
		r, err := router.New(router.Options{Backend: backend(t, docker.Machine{Name: "local", Weight: 1, Driver: e}), Catalog: cat, CA: ca.CA})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := newRouter(eng)
	quinn, err := r.Launch(ctx, "PM", "quinn")
	if err != nil {
		t.Fatal(err)
	}
	rowan, err := r.Launch(ctx, "PM", "rowan")
	if err != nil {
		t.Fatal(err)
	}
	pq, pr := port(t, quinn.Address), port(t, rowan.Address)
	if pq == pr || pq < lo || pq > lo+1 || pr < lo || pr > lo+1 {
		t.Fatalf("ports %d and %d: want the two distinct ports of %d-%d", pq, pr, lo, lo+1)
	}
	if !strings.HasPrefix(quinn.Address, "https://") {
		t.Fatalf("address %s: want https", quinn.Address)
	}
	for _, in := range []router.Instance{quinn, rowan} {
		c, err := cli.ContainerInspect(ctx, "upc-pm-"+string(in.ID), client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		hc := c.Container.HostConfig
		if hc.NetworkMode != "host" || len(hc.PortBindings) != 0 || c.Container.Config.Labels[agent.LabelHostPort] != strconv.Itoa(port(t, in.Address)) {
			t.Errorf("%s: network mode %q, bindings %v, label %q; want host, none, its port", in.ID, hc.NetworkMode, hc.PortBindings, c.Container.Config.Labels[agent.LabelHostPort])
		}
	}

	hc := ca.Client(10 * time.Second)
	var key [32]byte
	crand.Read(key[:])
	owner := pmclient.New(quinn.Address, hc, pmclient.WithToken(quinn.Secret))
	if err := owner.UnsealRandom(ctx, hex.EncodeToString(key[:])); err != nil {
		t.Fatalf("quinn unseals her PM over TLS: %v", err)
	}
	if _, err := owner.Insert(ctx, "Stage_database", "Stage_timeseries", map[string]any{"metadata": map[string]any{"key": "test/note"}, "data": map[string]any{"ts": 1}}); err != nil {
		t.Fatalf("quinn writes to her PM: %v", err)
	}
	if n, err := owner.Count(ctx, pmclient.FindRequest{Database: "Stage_database", Collection: "Stage_timeseries", Filter: map[string]any{}}); err != nil || n != 1 {
		t.Errorf("quinn counts her entries: %d, %v; want 1", n, err)
	}
	if _, err := pmclient.New(quinn.Address, hc).Status(ctx); statusCode(err) != 401 {
		t.Errorf("no credential: %v, want 401", err)
	}
	if _, err := pmclient.New(quinn.Address, hc, pmclient.WithToken(rowan.Secret)).Status(ctx); statusCode(err) != 403 {
		t.Errorf("rowan's secret at quinn's PM: %v, want 403", err)
	}
	if code, body, err := routertest.Get("http://"+strings.TrimPrefix(quinn.Address, "https://"), "/healthz"); err != nil || code != 400 {
		t.Errorf("plain HTTP to the pm: %d %q %v, want 400", code, body, err)
	}

	if _, err := r.Launch(ctx, "PM", "sasha"); !errors.Is(err, router.ErrConflict) || !strings.Contains(err.Error(), "host port") {
		t.Errorf("a launch with every port held: %v, want a conflict naming the host ports", err)
	}

	// The agent restarts: the ports come back from the labels.
	restarted := d.hostEngine(t, "host", lo, lo+1)
	cs, err := restarted.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range cs {
		got[c.Instance] = c.Address
	}
	if got[string(quinn.ID)] != quinn.Address || got[string(rowan.ID)] != rowan.Address {
		t.Errorf("after a restart the agent lists %v, want %s at %s and %s at %s", got, quinn.ID, quinn.Address, rowan.ID, rowan.Address)
	}
	r = newRouter(restarted)
	if err := r.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Launch(ctx, "PM", "sasha"); !errors.Is(err, router.ErrConflict) {
		t.Errorf("after a restart, a launch with every port held: %v, want a conflict", err)
	}
	if _, err := owner.Count(ctx, pmclient.FindRequest{Database: "Stage_database", Collection: "Stage_timeseries", Filter: map[string]any{}}); err != nil {
		t.Errorf("quinn's PM after the agent's restart: %v", err)
	}

	// Delete frees the port.
	if err := r.Delete(ctx, rowan.ID); err != nil {
		t.Fatal(err)
	}
	sasha, err := r.Launch(ctx, "PM", "sasha")
	if err != nil {
		t.Fatalf("a launch once a port is free: %v", err)
	}
	if port(t, sasha.Address) != pr {
		t.Errorf("sasha's PM at %s: want rowan's freed port %d", sasha.Address, pr)
	}
	if _, err := pmclient.New(sasha.Address, hc, pmclient.WithToken(sasha.Secret)).Status(ctx); err != nil {
		t.Errorf("sasha's PM on the reused port: %v", err)
	}
}

// TestHostPortLabelIsTheAgentsDocker: a launch request carrying its own
// upc.host_port label gets no say in the address, in either mode: the
// bridge agent drops it (the published port is the address), the host
// agent writes the port it allocated.
func TestHostPortLabelIsTheAgentsDocker(t *testing.T) {
	ctx := context.Background()
	d := newDeployment(t)
	lo := 24000 + 2*rand.IntN(3000)
	for _, e := range []*agent.Engine{d.engine(t, "bridge"), d.hostEngine(t, "host", lo, lo+1)} {
		c, err := e.Launch(ctx, agent.LaunchRequest{Instance: randName("i"), Service: "test", User: "quinn", Image: imageRef, Digest: imageID,
			Port: 8080, Labels: map[string]string{"upc.test": "1", agent.LabelHostPort: "1"}})
		if err != nil {
			t.Fatal(err)
		}
		p := port(t, c.Address)
		ins, err := cli.ContainerInspect(ctx, c.ContainerID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		label, ok := ins.Container.Config.Labels[agent.LabelHostPort]
		hostMode := ins.Container.HostConfig.NetworkMode == "host"
		switch {
		case p == 1:
			t.Errorf("%s: address %s takes the caller's port", ins.Container.HostConfig.NetworkMode, c.Address)
		case hostMode && label != strconv.Itoa(p), !hostMode && ok:
			t.Errorf("%s: label upc.host_port %q (set: %v) for address %s", ins.Container.HostConfig.NetworkMode, label, ok, c.Address)
		}
		routertest.Eventually(t, "the instance answers at its address", func() error {
			code, _, err := routertest.Get(c.Address, "/healthz")
			if err == nil && code != 200 {
				err = fmt.Errorf("status %d", code)
			}
			return err
		})
	}
}
