package standup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/internal/tcsetup"
	"github.com/e-mission/upc/router/docker/testimage"
)

func TestMain(m *testing.M) {
	if err := tcsetup.Configure(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func dockerClient(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("docker: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func runID(t *testing.T) Scope {
	b := make([]byte, 4)
	rand.Read(b)
	id := "t" + hex.EncodeToString(b)
	return Scope{Run: id, Deployment: "e2e-" + id}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// TestIntegrationStandupDocker stands up a network, two "agents" and a
// "router" on the real engine, with the router tests' instance image (a
// FROM scratch HTTP server) standing in for both binaries: it checks the
// wiring the harness owns (network, aliases, loopback ports, socket mount,
// labels, waits) and that Down leaves nothing behind.
func TestIntegrationStandupDocker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cli := dockerClient(t)
	ref := "upc-test/standup-server:" + strings.ToLower(t.Name()[:8])
	img, err := testimage.Build(ctx, cli, ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testimage.Remove(context.Background(), cli, ref) })
	scope := runID(t)
	t.Cleanup(func() { Cleanup(context.Background(), cli, scope) })

	d, err := Up(ctx, cli, Options{
		Scope: scope, RouterImage: img, AgentImage: img,
		Agents:  []scenario.Agent{{Name: "agent-a", Weight: 2}, {Name: "agent-b", Weight: 1}},
		Timeout: 30 * time.Second, RouterPort: testimage.Port, AgentPort: testimage.Port,
		Files: map[string][]byte{ConfigPath: []byte("x: 1\n")},
	})
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	if !strings.HasPrefix(d.RouterURL, "http://127.0.0.1:") || d.Gateway == "" || len(d.Agents) != 2 {
		t.Errorf("deployment %+v", d)
	}
	// The "router" reaches each agent by its alias on the run's network.
	for _, a := range d.Agents {
		if got := get(t, d.RouterURL+"/fetch?url=http://"+a.Address+"/healthz"); strings.TrimSpace(got) != "ok" {
			t.Errorf("router → %s: %q", a.Address, got)
		}
		if !strings.HasPrefix(a.HostURL, "http://127.0.0.1:") {
			t.Errorf("agent %s host url %q", a.Name, a.HostURL)
		}
	}
	left, err := Leftovers(ctx, cli, scope)
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Containers) != 3 || len(left.Networks) != 1 {
		t.Errorf("while up, labelled: %+v", left)
	}
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).Add("label", LabelRole+"=agent").Add("label", LabelRun+"="+scope.Run)})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs.Items {
		ins, err := cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, m := range ins.Container.Mounts {
			found = found || m.Destination == "/var/run/docker.sock"
		}
		if !found {
			t.Errorf("agent %s does not mount the docker socket", c.Names)
		}
		for _, b := range ins.Container.HostConfig.PortBindings {
			for _, pb := range b {
				if pb.HostIP.String() != "127.0.0.1" {
					t.Errorf("agent port bound on %s, want loopback", pb.HostIP)
				}
			}
		}
	}

	if err := d.Down(ctx); err != nil {
		t.Fatalf("Down: %v", err)
	}
	left, err = Leftovers(ctx, cli, scope)
	if err != nil || !left.Empty() {
		t.Errorf("after Down: %+v %v", left, err)
	}
}

// TestIntegrationStandupDockerFailureCleansUp: an agent that never becomes
// healthy fails Up within its timeout, and Up leaves nothing behind.
func TestIntegrationStandupDockerFailureCleansUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cli := dockerClient(t)
	ref := "upc-test/standup-server:" + strings.ToLower(t.Name()[:8]) + "f"
	img, err := testimage.Build(ctx, cli, ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testimage.Remove(context.Background(), cli, ref) })
	scope := runID(t)
	t.Cleanup(func() { Cleanup(context.Background(), cli, scope) })
	t0 := time.Now()
	_, err = Up(ctx, cli, Options{
		Scope: scope, RouterImage: img, AgentImage: img,
		Agents:  []scenario.Agent{{Name: "agent-a", Weight: 1}},
		Timeout: 3 * time.Second, RouterPort: testimage.Port, AgentPort: testimage.Port,
		Env: map[string]string{"UPC_TEST_NEVER_HEALTHY": "1"},
	})
	if err == nil {
		t.Fatal("Up succeeded with an agent that never answers")
	}
	if !strings.Contains(err.Error(), "agent-a") {
		t.Errorf("error does not name the agent: %v", err)
	}
	if took := time.Since(t0); took > 60*time.Second {
		t.Errorf("Up took %s to give up (timeout 3s)", took)
	}
	left, lerr := Leftovers(ctx, cli, scope)
	if lerr != nil || !left.Empty() {
		t.Errorf("after a failed Up: %+v %v", left, lerr)
	}
}
