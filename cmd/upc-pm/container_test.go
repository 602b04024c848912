package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/internal/tcsetup"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

func TestMain(m *testing.M) {
	// The test removes what it makes (see tcsetup).
	if err := tcsetup.Configure(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// pmContainer is a PM started from the upc/pm image on the real engine,
// its data in a folder of the test's bound at /data, TLS from a test CA.
type pmContainer struct {
	c      testcontainers.Container
	ca     *certstest.CA
	owner  string
	data   string                  // the host folder bound at /data
	client func() *pmclient.Client // the owner's client at the current port
}

// startPMContainer starts a PM container; each of more changes its host
// configuration (limits, for one).
func startPMContainer(t testing.TB, budget string, more ...func(*container.HostConfig)) *pmContainer {
	t.Helper()
	m := imagestest.Require(t, "pm")
	ctx := context.Background()
	data := t.TempDir()
	// The PM runs as its own user: the folder bound at /data must be its.
	if err := os.Chown(data, images.UID, images.GID); err != nil {
		if err := os.Chmod(data, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	pc := &pmContainer{owner: access.NewToken(access.PrefixInstance), ca: certstest.New(t), data: data}
	env := pc.ca.InstanceEnv("0123456789ab")
	maps.Copy(env, map[string]string{"UPC_PM_KDF_MEMORY_MIB": "8", "UPC_PM_BUDGET": budget, access.EnvSHA256: access.Hash(pc.owner)})
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        m.Images["pm"].ID,
			Name:         fmt.Sprintf("upc-test-pm-%d", time.Now().UnixNano()),
			Env:          env,
			Labels:       map[string]string{"upc.test": "1"},
			ExposedPorts: []string{"8080/tcp"},
			HostConfigModifier: func(hc *container.HostConfig) {
				hc.Binds = []string{data + ":/data"}
				hc.PortBindings = network.PortMap{network.MustParsePort("8080/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: "0"}}}
				for _, f := range more {
					f(hc)
				}
			},
			WaitingFor: wait.ForHTTP("/healthz").WithPort("8080/tcp").WithTLS(true, pc.ca.InstanceTLS()).WithStartupTimeout(60 * time.Second).WithPollInterval(50 * time.Millisecond),
		},
		Started: true,
	}
	c, err := testcontainers.GenericContainer(ctx, req)
	if c != nil {
		t.Cleanup(func() { c.Terminate(context.Background()) })
	}
	if err != nil {
		t.Fatal(err)
	}
	pc.c = c
	pc.client = func() *pmclient.Client {
		p, err := c.MappedPort(ctx, "8080/tcp")
		if err != nil {
			t.Fatal(err)
		}
		return pmclient.New("https://127.0.0.1:"+p.Port(), pc.ca.Client(time.Minute), pmclient.WithToken(pc.owner))
	}
	return pc
}

// TestIntegrationDockerPMContainer runs the upc/pm FROM scratch image on the
// real engine with its data on a bind-mounted directory: unseal, write,
// docker stop (SIGTERM), start again, wrong key, right key. Needs Docker.
func TestIntegrationDockerPMContainer(t *testing.T) {
	ctx := context.Background()
	const key = "container-test-key"
	pc := startPMContainer(t, "1.5")
	c, client := pc.c, pc.client
	pm := client()
	var se *pmclient.StatusError
	if err := pmclient.New(pm.BaseURL(), pc.ca.Client(time.Minute)).Unseal(ctx, "attacker"); !errors.As(err, &se) || se.Code != 401 {
		t.Fatalf("claim without the owner's secret: %v", err)
	}
	if err := pm.Unseal(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := pm.Insert(ctx, api.DefaultDatabase, api.Timeseries, map[string]any{"metadata": map[string]any{"key": "k"}, "data": map[string]any{"ts": 1.25}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := pm.SpendBudget(ctx, 1.0); !ok || err != nil {
		t.Fatal(ok, err)
	}
	grace := 10 * time.Second
	start := time.Now()
	if err := c.Stop(ctx, &grace); err != nil {
		t.Fatal(err)
	}
	stopped := time.Since(start)
	st, err := c.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("docker stop took %v, exit code %d", stopped, st.ExitCode)
	if st.ExitCode != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0 (a graceful exit, not the engine's SIGKILL)", st.ExitCode)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pm = client()
	if err := pm.Unseal(ctx, "wrong"); !errors.As(err, &se) || se.Code != 403 {
		t.Fatalf("wrong key after restart: %v", err)
	}
	if err := pm.Unseal(ctx, key); err != nil {
		t.Fatal(err)
	}
	docs, err := pm.Find(ctx, pmclient.FindRequest{Collection: api.Timeseries, Filter: map[string]any{"data.ts": map[string]any{"$gt": 1}}})
	if err != nil || len(docs) != 1 {
		t.Fatalf("after restart: %v %v", docs, err)
	}
	if ok, _ := pm.SpendBudget(ctx, 1.0); ok {
		t.Error("the budget did not survive the restart")
	}
	rc, err := c.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := io.ReadAll(rc)
	rc.Close()
	if strings.Contains(string(logs), key) || strings.Contains(string(logs), pc.owner) {
		t.Error("the key is in the container's logs")
	}
}

// TestIntegrationDockerPMKeepsAcknowledgedWritesThroughSIGKILL: a writer
// inserts documents one by one into a PM container while the engine kills
// it with SIGKILL (no chance to flush or close), three times; after each
// restart the PM, unsealed again, holds every insert it acknowledged (an
// insert cut off mid-way may or may not be there: nobody was told it was).
func TestIntegrationDockerPMKeepsAcknowledgedWritesThroughSIGKILL(t *testing.T) {
	ctx := context.Background()
	const key = "sigkill-test-key"
	pc := startPMContainer(t, "1")
	if err := pc.client().Unseal(ctx, key); err != nil {
		t.Fatal(err)
	}
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var acked []string
	for round := range 3 {
		pm := pc.client()
		type result struct {
			ids  []string
			errs int
		}
		done := make(chan result)
		killAt := 40 + 30*round // acknowledged inserts before the kill
		started := make(chan struct{})
		go func() {
			var r result
			for i := 0; ; i++ {
				ids, err := pm.Insert(ctx, api.DefaultDatabase, api.Timeseries, map[string]any{
					"metadata": map[string]any{"key": "background/location", "write_ts": float64(i)},
					"data":     map[string]any{"ts": float64(round*1000 + i), "round": round}})
				if err != nil {
					r.errs++
					if r.errs >= 3 { // the PM is gone
						done <- r
						return
					}
					time.Sleep(50 * time.Millisecond)
					continue
				}
				r.ids = append(r.ids, ids...)
				if len(r.ids) == killAt {
					close(started)
				}
			}
		}()
		select {
		case <-started:
		case r := <-done:
			t.Fatalf("round %d: the writer stopped after %d inserts before the kill", round, len(r.ids))
		}
		if _, err := cli.ContainerKill(ctx, pc.c.GetContainerID(), client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
			t.Fatal(err)
		}
		r := <-done
		acked = append(acked, r.ids...)
		st, err := pc.c.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Running || st.ExitCode != 137 {
			t.Fatalf("round %d: after SIGKILL running %v, exit code %d, want stopped with 137", round, st.Running, st.ExitCode)
		}
		if err := pc.c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		pm = pc.client()
		if err := pm.Unseal(ctx, key); err != nil {
			t.Fatalf("round %d: unseal after SIGKILL: %v", round, err)
		}
		docs, err := pm.Find(ctx, pmclient.FindRequest{Collection: api.Timeseries, Filter: map[string]any{}})
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, d := range docs {
			have[fmt.Sprint(d["_id"])] = true
		}
		var lost []string
		for _, id := range acked {
			if !have[id] {
				lost = append(lost, id)
			}
		}
		t.Logf("round %d: killed after %d acknowledged inserts (%d in all); the PM holds %d documents", round, len(r.ids), len(acked), len(docs))
		if len(lost) > 0 {
			t.Fatalf("round %d: %d acknowledged inserts lost after SIGKILL: %v", round, len(lost), lost)
		}
	}
}
