package docker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"slices"
	"testing"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/docker/testimage"
)

// These tests need the Docker Engine at /var/run/docker.sock; they fail
// (not skip) without it.

var (
	cli     *client.Client
	imageID string
	// imageRef is this process's own tag of the test image: another run's
	// tests beside it (CI, a colleague) remove theirs when they end.
	imageRef = "upc-test/router-server:" + randName("t")
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	var err error
	if cli, err = agent.NewClientFromEnv(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if imageID, err = testimage.Build(ctx, cli, imageRef); err != nil {
		fmt.Fprintln(os.Stderr, "build the test image:", err)
		return 1
	}
	defer testimage.Remove(ctx, cli, imageRef)
	return m.Run()
}

func randName(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// deployment is one isolated test deployment: its own network, and agents
// whose names start with its prefix; removed when the test ends.
type deployment struct {
	prefix, network string
	agents          *[]string
	// mounts are where the engine kept each user's volumes, as leftovers
	// saw them: user → volume → mountpoint.
	mounts map[string]map[string]string
}

func newDeployment(t testing.TB) deployment {
	d := deployment{prefix: randName("t"), network: randName("upc-test-"), agents: new([]string), mounts: map[string]map[string]string{}}
	t.Cleanup(func() { d.cleanup(t) })
	return d
}

func (d deployment) cleanup(t testing.TB) {
	ctx := context.Background()
	for _, name := range *d.agents {
		f := make(client.Filters).Add("label", agent.LabelAgent+"="+name)
		cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for _, c := range cs.Items {
			cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
		vs, _ := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
		for _, v := range vs.Items {
			if _, err := cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true}); err != nil {
				t.Errorf("cleanup volume %s: %v", v.Name, err)
			}
		}
	}
	ns, _ := cli.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("name", d.network)})
	for _, n := range ns.Items {
		if n.Name == d.network {
			if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil {
				t.Errorf("cleanup network %s: %v", n.Name, err)
			}
		}
	}
}

// leftovers is what the engine holds of user's stored data among d's
// agents, asked of the engine itself: every volume labelled for the user,
// and the files of any such volume seen before, where the engine kept them
// (its mountpoint, checked while this test runs on the engine's host).
func (d deployment) leftovers(t *testing.T, user string) []string {
	t.Helper()
	vs, err := cli.VolumeList(context.Background(), client.VolumeListOptions{Filters: make(client.Filters).Add("label", agent.LabelUser+"="+user)})
	if err != nil {
		t.Fatal(err)
	}
	if d.mounts[user] == nil {
		d.mounts[user] = map[string]string{}
	}
	var out []string
	for _, v := range vs.Items {
		if !slices.Contains(*d.agents, v.Labels[agent.LabelAgent]) {
			continue
		}
		out = append(out, "volume "+v.Name)
		if _, seen := d.mounts[user][v.Name]; !seen {
			if _, err := os.Stat(v.Mountpoint); err != nil {
				t.Logf("the files of volume %s are not checked: its mountpoint %s is not reachable here (%v)", v.Name, v.Mountpoint, err)
				v.Mountpoint = ""
			}
			d.mounts[user][v.Name] = v.Mountpoint
		}
	}
	for name, mp := range d.mounts[user] {
		if _, err := os.Lstat(mp); mp != "" && err == nil {
			out = append(out, "files of volume "+name+" at "+mp)
		}
	}
	slices.Sort(out)
	return out
}

// engine is an in-process agent named d.prefix+"-"+name.
func (d deployment) engine(t testing.TB, name string) *agent.Engine {
	full := d.prefix + "-" + name
	if !slices.Contains(*d.agents, full) {
		*d.agents = append(*d.agents, full)
	}
	e, err := agent.NewEngine(cli, agent.Options{
		Network: d.network, Name: full, NetworkLabels: map[string]string{"upc.test": "1"},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// agentToken is the token the test agents share with their router.
var agentToken = access.NewToken(access.PrefixAgent)

// agentServer runs agent name as an HTTP server, as upc-agent does: it
// answers agentToken and runs only the test image.
func (d deployment) agentServer(t testing.TB, name string, more ...agent.Image) *httptest.Server {
	srv := httptest.NewServer(agent.Handler(d.engine(t, name), slog.New(slog.DiscardHandler),
		agent.HandlerOptions{Token: agentToken, Images: append([]agent.Image{{Ref: imageRef, Digest: imageID}}, more...)}))
	t.Cleanup(srv.Close)
	return srv
}

// agentClient calls the agent at url bearing agentToken, as the router does.
func agentClient(t testing.TB, url string) *agent.Client {
	c, err := agent.NewClient(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.WithToken(agentToken)
}

func backend(t testing.TB, ms ...docker.Machine) *docker.Backend {
	b, err := docker.New(ms, docker.Options{Labels: map[string]string{"upc.test": "1"}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var _ router.Backend = (*docker.Backend)(nil)
