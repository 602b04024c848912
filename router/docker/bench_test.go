package docker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routerclient"
)

// benchRounds is the number of paired samples per benchmark iteration: each
// round launches once through the router and once directly, alternating, so
// both medians come from the same run under the same load.
const benchRounds = 10

// BenchmarkLaunchToAnswerDocker measures launch→first HTTP answer of the
// test image through the whole router (typed client → router HTTP API →
// Docker backend → machine agent HTTP API → engine, then the router's health
// wait) against creating, starting and polling the same container directly
// through the Docker API, and pause/resume through the router. Metrics:
// medians in ms and router/direct ratio (target ≤ 1.2).
func BenchmarkLaunchToAnswerDocker(b *testing.B) {
	b.Run("image=test", func(b *testing.B) {
		benchLaunch(b, conf.Service{Name: "bench", Image: imageRef, Digest: imageID, Port: 8080, Health: "/healthz"})
	})
	// The real PM, as the catalog runs it: environment, limits, per-user volume.
	b.Run("image=pm", func(b *testing.B) {
		m := imagestest.Require(b, "pm")
		cat, err := conf.DefaultCatalog()
		if err != nil {
			b.Fatal(err)
		}
		m.Pin(cat)
		pm, _ := cat.Lookup("pm")
		benchLaunch(b, pm)
	})
}

func benchLaunch(b *testing.B, svc conf.Service) {
	ctx := context.Background()
	d := newDeployment(b)
	agentSrv := d.agentServer(b, "bench", agent.Image{Ref: svc.Image, Digest: svc.Digest})
	be := backend(b, docker.Machine{Name: "bench", Weight: 1, Driver: agentClient(b, agentSrv.URL)})
	cat := &conf.Catalog{Services: []conf.Service{svc}}
	users, err := router.OpenUsers("", adminToken)
	if err != nil {
		b.Fatal(err)
	}
	// Plain, as the direct baseline is: BenchmarkLaunchTLSDocker compares TLS.
	core, err := router.New(router.Options{Backend: be, Catalog: cat, HealthTimeout: 30 * time.Second, Users: users, PlainHTTP: true})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(router.Handler(core, slog.New(slog.DiscardHandler)))
	b.Cleanup(srv.Close)
	rc, _ := routerclient.New(srv.URL, routerclient.WithToken(adminToken))
	net, err := be.SetupNetworks(ctx)
	if err != nil || len(net) != 1 {
		b.Fatal(err)
	}
	gw := gateway(b, d.network)

	var viaRouter, direct, pause, resume, dockerPause, dockerUnpause []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := range benchRounds {
			start := time.Now()
			in, err := rc.Launch(ctx, svc.Name, "bench"+strconv.Itoa(r))
			if err != nil {
				b.Fatal(err)
			}
			viaRouter = append(viaRouter, time.Since(start))

			t0 := time.Now()
			if _, err := rc.Pause(ctx, in.ID); err != nil {
				b.Fatal(err)
			}
			pause = append(pause, time.Since(t0))
			t0 = time.Now()
			if _, err := rc.Resume(ctx, in.ID); err != nil {
				b.Fatal(err)
			}
			resume = append(resume, time.Since(t0))
			if err := rc.Delete(ctx, in.ID); err != nil {
				b.Fatal(err)
			}

			// What the plain router gives an instance: the PM refuses to
			// start without an owner and without TLS or this opt-out.
			env := map[string]string{access.EnvSHA256: access.Hash(access.NewToken(access.PrefixInstance)), certs.EnvPlain: "1"}
			dt, pt, ut := launchDirectWith(b, svc, d.network, gw, r, env, &http.Client{Timeout: 2 * time.Second}, "http")
			direct = append(direct, dt)
			dockerPause = append(dockerPause, pt)
			dockerUnpause = append(dockerUnpause, ut)
		}
	}
	b.StopTimer()
	mr, md := median(viaRouter), median(direct)
	b.ReportMetric(ms(mr), "router-ms")
	b.ReportMetric(ms(md), "direct-ms")
	b.ReportMetric(float64(mr)/float64(md), "ratio")
	b.ReportMetric(ms(median(pause)), "pause-ms")
	b.ReportMetric(ms(median(resume)), "resume-ms")
	b.ReportMetric(ms(median(dockerPause)), "docker-pause-ms")
	b.ReportMetric(ms(median(dockerUnpause)), "docker-unpause-ms")
	b.Logf("%d samples each: launch→answer median router %.1f ms (min %.1f, max %.1f), direct %.1f ms (min %.1f, max %.1f), ratio %.3f; "+
		"pause %.1f ms, resume %.1f ms through the router (docker pause %.1f ms, unpause %.1f ms)",
		len(direct), ms(mr), ms(slices.Min(viaRouter)), ms(slices.Max(viaRouter)), ms(md), ms(slices.Min(direct)), ms(slices.Max(direct)),
		float64(mr)/float64(md), ms(median(pause)), ms(median(resume)), ms(median(dockerPause)), ms(median(dockerUnpause)))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func gateway(b testing.TB, name string) netip.Addr {
	res, err := cli.NetworkInspect(context.Background(), name, client.NetworkInspectOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range res.Network.IPAM.Config {
		if c.Gateway.Is4() {
			return c.Gateway
		}
	}
	b.Fatalf("network %s has no gateway", name)
	return netip.Addr{}
}

// launchDirectWith is the baseline: the same container (image, environment,
// limits, volumes, network, port published on the gateway) created, started
// and polled through the Docker API with no router, then paused and
// unpaused; it returns the three times.
//
// extra is environment beyond the catalog's (what the router would give the
// instance); hc polls the health path over scheme.
func launchDirectWith(b testing.TB, svc conf.Service, netName string, gw netip.Addr, round int,
	extra map[string]string, hc *http.Client, scheme string) (launch, pause, unpause time.Duration) {
	ctx := context.Background()
	port, _ := network.PortFrom(uint16(svc.Port), network.TCP)
	var env []string
	for k, v := range svc.Env {
		env = append(env, k+"="+v)
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	var mounts []mount.Mount
	var volumes []string
	for _, v := range svc.Volumes {
		name := fmt.Sprintf("upc-bench-direct-%s-%d-%s", netName, round, v.Name)
		volumes = append(volumes, name)
		mounts = append(mounts, mount.Mount{Type: mount.TypeVolume, Source: name, Target: v.Path,
			VolumeOptions: &mount.VolumeOptions{Labels: map[string]string{"upc.test": "1"}}})
	}
	start := time.Now()
	c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{Image: svc.Digest, Env: env, Labels: map[string]string{"upc.test": "1"}, ExposedPorts: network.PortSet{port: {}}},
		HostConfig: &container.HostConfig{PortBindings: network.PortMap{port: {{HostIP: gw}}}, Mounts: mounts,
			Resources: container.Resources{NanoCPUs: int64(svc.Resources.CPUMillis) * 1_000_000, Memory: int64(svc.Resources.MemoryMB) << 20}},
		NetworkingConfig: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: {}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
		for _, v := range volumes {
			cli.VolumeRemove(ctx, v, client.VolumeRemoveOptions{Force: true})
		}
	}()
	if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		b.Fatal(err)
	}
	ins, err := cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
	if err != nil {
		b.Fatal(err)
	}
	url := fmt.Sprintf("%s://%s:%s%s", scheme, gw, ins.Container.NetworkSettings.Ports[port][0].HostPort, svc.Health)
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Since(start) > 30*time.Second {
			b.Fatalf("direct launch never answered: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	launch = time.Since(start)
	t0 := time.Now()
	if _, err := cli.ContainerPause(ctx, c.ID, client.ContainerPauseOptions{}); err != nil {
		b.Fatal(err)
	}
	pause = time.Since(t0)
	t0 = time.Now()
	if _, err := cli.ContainerUnpause(ctx, c.ID, client.ContainerUnpauseOptions{}); err != nil {
		b.Fatal(err)
	}
	return launch, pause, time.Since(t0)
}

// BenchmarkLaunchTLSDocker measures what TLS costs a launch: the real PM,
// launched through the router's HTTP API from the built-in catalog, by a
// router with a CA (a certificate issued per instance, HTTPS health probes)
// and by one with plain HTTP, alternating round by round over the same
// agent and engine, so both medians come from one run under the same load.
// Metrics: medians in ms and tls/plain ratio (target ≤ 1.1).
func BenchmarkLaunchTLSDocker(b *testing.B) {
	ctx := context.Background()
	cat, pm, _, be := pmBenchAgent(b)
	ca := certstest.New(b)
	client := func(o router.Options) *routerclient.Client {
		users, err := router.OpenUsers("", adminToken)
		if err != nil {
			b.Fatal(err)
		}
		o.Backend, o.Catalog, o.HealthTimeout, o.Users = be, cat, 30*time.Second, users
		core, err := router.New(o)
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(router.Handler(core, slog.New(slog.DiscardHandler)))
		b.Cleanup(srv.Close)
		rc, _ := routerclient.New(srv.URL, routerclient.WithToken(adminToken))
		return rc
	}
	plain, tls := client(router.Options{PlainHTTP: true}), client(router.Options{CA: ca.CA})
	var tPlain, tTLS []time.Duration
	launch := func(rc *routerclient.Client, user string) time.Duration {
		start := time.Now()
		in, err := rc.Launch(ctx, pm.Name, user)
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if err := rc.Delete(ctx, in.ID); err != nil {
			b.Fatal(err)
		}
		return took
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := range benchRounds {
			// Alternate which goes first, so neither always meets a warmer engine.
			if r%2 == 0 {
				tPlain = append(tPlain, launch(plain, "plain"+strconv.Itoa(r)))
				tTLS = append(tTLS, launch(tls, "tls"+strconv.Itoa(r)))
			} else {
				tTLS = append(tTLS, launch(tls, "tls"+strconv.Itoa(r)))
				tPlain = append(tPlain, launch(plain, "plain"+strconv.Itoa(r)))
			}
		}
	}
	b.StopTimer()
	mp, mt := median(tPlain), median(tTLS)
	b.ReportMetric(ms(mp), "plain-ms")
	b.ReportMetric(ms(mt), "tls-ms")
	b.ReportMetric(float64(mt)/float64(mp), "ratio")
	b.Logf("%d samples each: launch→answer of the PM median plain %.1f ms (min %.1f, max %.1f), TLS %.1f ms (min %.1f, max %.1f), ratio %.3f",
		len(tPlain), ms(mp), ms(slices.Min(tPlain)), ms(slices.Max(tPlain)), ms(mt), ms(slices.Min(tTLS)), ms(slices.Max(tTLS)), float64(mt)/float64(mp))
}

// pmBenchAgent is the launch benchmarks' deployment: a catalog of the
// pinned PM alone, one agent serving it over HTTP, and a backend driving
// that agent with its networks set up.
func pmBenchAgent(b *testing.B) (*conf.Catalog, conf.Service, deployment, *docker.Backend) {
	m := imagestest.Require(b, "pm")
	cat, err := conf.DefaultCatalog()
	if err != nil {
		b.Fatal(err)
	}
	m.Pin(cat)
	pm, _ := cat.Lookup("pm")
	cat = &conf.Catalog{Services: []conf.Service{pm}}
	d := newDeployment(b)
	agentSrv := d.agentServer(b, "bench", agent.Image{Ref: pm.Image, Digest: pm.Digest})
	be := backend(b, docker.Machine{Name: "bench", Weight: 1, Driver: agentClient(b, agentSrv.URL)})
	if _, err := be.SetupNetworks(context.Background()); err != nil {
		b.Fatal(err)
	}
	return cat, pm, d, be
}
