package docker_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routertest"
)

// TestMachineDownDocker: two machines, each an agent over HTTP on the real
// engine; one stops answering (its server closed: a real unreachable
// address). A router started then comes up with the other machine's
// instances; the users whose data may be on the silent machine get 503
// (router.ErrMachineDown) and no PM elsewhere (no container, no new empty
// volume), and no user's data is erased (it may be there too); once the
// machine answers again, Adopt takes its instances in.
func TestMachineDownDocker(t *testing.T) {
	ctx := context.Background()
	d := newDeployment(t)
	srvs := map[string]*httptest.Server{"a": d.agentServer(t, "a"), "b": d.agentServer(t, "b")}
	open := func() *docker.Backend {
		return backend(t, docker.Machine{Name: "a", Weight: 1, Driver: agentClient(t, srvs["a"].URL)},
			docker.Machine{Name: "b", Weight: 1, Driver: agentClient(t, srvs["b"].URL)})
	}
	env := routertest.Env{Image: imageRef, Digest: imageID}
	r1 := env.Router(t, open())
	// Users until each machine holds one.
	byMachine := map[string]router.Instance{}
	for _, u := range []string{"olga", "pete", "rita", "sam", "tina", "uma", "vic", "walt"} {
		in, err := r1.Launch(ctx, "test", u)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := byMachine[in.Machine]; !ok {
			byMachine[in.Machine] = in
		}
		if len(byMachine) == 2 {
			break
		}
	}
	if len(byMachine) != 2 {
		t.Fatalf("eight users all placed on one machine: %v", byMachine)
	}
	lost, kept := byMachine["a"], byMachine["b"]
	addr := srvs["a"].Listener.Addr().String()
	srvs["a"].Close()

	r2 := env.Router(t, open())
	err := r2.Rebuild(ctx)
	if !errors.Is(err, router.ErrMachineDown) || !strings.Contains(err.Error(), "machine a") {
		t.Fatalf("rebuild with machine a silent: %v, want ErrMachineDown naming it", err)
	}
	if _, err := r2.Get(kept.ID); err != nil {
		t.Fatalf("the instance on the machine that answers was not adopted: %v", err)
	}
	if _, err := r2.Get(lost.ID); err == nil {
		t.Fatal("an instance of the silent machine is known without its machine answering")
	}
	// lost's user, and a new one, get no PM on b while a may hold their data.
	for _, u := range []string{lost.User, "newcomer"} {
		if _, err := r2.Launch(ctx, "test", u); !errors.Is(err, router.ErrMachineDown) {
			t.Errorf("launch for %s with machine a silent: %v, want ErrMachineDown", u, err)
		}
	}
	f := make(client.Filters).Add("label", agent.LabelAgent+"="+d.prefix+"-b").Add("label", agent.LabelUser+"="+lost.User)
	if cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f}); err != nil || len(cs.Items) > 0 {
		t.Errorf("machine b runs %d containers of %s (%v)", len(cs.Items), lost.User, err)
	}
	if vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f}); err != nil || len(vs.Items) > 0 {
		t.Errorf("machine b holds %d volumes of %s (%v)", len(vs.Items), lost.User, err)
	}

	// No erase while a machine that may hold a user's data is silent: the
	// user on b keeps the volume b holds, and is told why.
	if err := r2.Delete(ctx, kept.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r2.StoredVolumes(ctx, kept.User); !errors.Is(err, router.ErrMachineDown) {
		t.Errorf("%s's stored data with machine a silent: %v, want ErrMachineDown", kept.User, err)
	}
	if _, err := r2.Erase(ctx, kept.User); !errors.Is(err, router.ErrMachineDown) || !strings.Contains(err.Error(), "nothing erased") {
		t.Errorf("erase of %s's data with machine a silent: %v, want ErrMachineDown, nothing erased", kept.User, err)
	}
	fb := make(client.Filters).Add("label", agent.LabelAgent+"="+d.prefix+"-b").Add("label", agent.LabelUser+"="+kept.User)
	if vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: fb}); err != nil || len(vs.Items) != 1 {
		t.Errorf("after the refused erase machine b holds %d volumes of %s (%v), want 1", len(vs.Items), kept.User, err)
	}

	// Machine a answers again, at the same address.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	back := httptest.NewUnstartedServer(agent.Handler(d.engine(t, "a"), slog.New(slog.DiscardHandler),
		agent.HandlerOptions{Token: agentToken, Images: []agent.Image{{Ref: imageRef, Digest: imageID}}}))
	back.Listener.Close()
	back.Listener = ln
	back.Start()
	t.Cleanup(back.Close)
	if err := r2.Adopt(ctx); err != nil {
		t.Fatalf("adopt with every machine answering: %v", err)
	}
	if got, err := r2.Get(lost.ID); err != nil || got.Machine != "a" {
		t.Fatalf("after machine a answers again: %+v, %v", got, err)
	}
	if _, err := r2.Launch(ctx, "test", "newcomer"); err != nil {
		t.Errorf("a new user's launch with every machine up: %v", err)
	}
}
