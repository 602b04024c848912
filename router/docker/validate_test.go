package docker_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/docker/testimage"
	"github.com/e-mission/upc/router/routerclient"
)

// TestSwappedImageRefusedDocker is the check of service validation
// on a real engine: image A is built and pinned in the catalog (as `make
// images` pins upc/pm), and launches of it run; then a different image B is
// tagged with A's reference. From then on every launch is refused, by the
// router's own engine (machine "local") and by a machine agent alike, with
// a 403 naming the reference, what it resolves to (B) and the pin (A);
// neither B nor A runs, and nothing is left behind.
func TestSwappedImageRefusedDocker(t *testing.T) {
	ctx := context.Background()
	repo := "upc-test/validate-" + randName("")
	refA, refB := repo+":pinned", repo+":other"
	idA, err := testimage.BuildVariant(ctx, cli, refA, "a-"+repo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ImageRemove(context.Background(), idA, client.ImageRemoveOptions{Force: true}) })
	idB, err := testimage.BuildVariant(ctx, cli, refB, "b-"+repo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ImageRemove(context.Background(), idB, client.ImageRemoveOptions{Force: true}) })
	if idA == idB {
		t.Fatalf("images A and B have one ID %s", idA)
	}

	d := newDeployment(t)
	cat := &conf.Catalog{Services: []conf.Service{{Name: "test", Image: refA, Digest: idA, Port: testimage.Port, Health: "/healthz"}}}
	local := backend(t, docker.Machine{Name: conf.LocalMachine, Weight: 1, Driver: d.engine(t, "local")})
	core, err := router.New(router.Options{Backend: local, Catalog: cat, HealthTimeout: 15 * time.Second, PlainHTTP: true}) // the test image
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(agent.Handler(d.engine(t, "remote"), slog.New(slog.DiscardHandler),
		agent.HandlerOptions{Token: agentToken, Images: []agent.Image{{Ref: refA, Digest: idA}}}))
	t.Cleanup(srv.Close)
	remote := backend(t, docker.Machine{Name: "machine-a", Weight: 1, Driver: agentClient(t, srv.URL)})
	users, err := router.OpenUsers("", adminToken)
	if err != nil {
		t.Fatal(err)
	}
	viaAgent, err := router.New(router.Options{Backend: remote, Catalog: cat, HealthTimeout: 15 * time.Second, Users: users, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	rsrv := httptest.NewServer(router.Handler(viaAgent, slog.New(slog.DiscardHandler)))
	t.Cleanup(rsrv.Close)
	rc, err := routerclient.New(rsrv.URL, routerclient.WithToken(adminToken))
	if err != nil {
		t.Fatal(err)
	}

	// Pinned and untouched: both run A, and say so.
	in, err := core.Launch(ctx, "test", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if in.Digest != idA {
		t.Errorf("local launch reports digest %s, want A %s", in.Digest, idA)
	}
	if err := core.Delete(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	ai, err := rc.Launch(ctx, "test", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if ai.Digest != idA {
		t.Errorf("agent launch reports digest %s, want A %s", ai.Digest, idA)
	}
	if err := rc.Delete(ctx, ai.ID); err != nil {
		t.Fatal(err)
	}

	// B under A's tag.
	if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: idB, Target: refA}); err != nil {
		t.Fatal(err)
	}
	want := "image " + refA + " now resolves to " + idB + ", not the pinned " + idA
	_, err = core.Launch(ctx, "test", "bob")
	if !errors.Is(err, router.ErrForbidden) || !strings.Contains(err.Error(), want) {
		t.Errorf("local engine: launch after the swap: %v, want ErrForbidden %q", err, want)
	}
	_, err = rc.Launch(ctx, "test", "bob")
	var re *routerclient.Error
	if !errors.As(err, &re) || re.Code != http.StatusForbidden || !strings.Contains(re.Message, want) {
		t.Errorf("agent: launch through the router after the swap: %v, want 403 %q", err, want)
	}

	// Nothing runs, of this deployment's or from either image.
	for _, f := range []client.Filters{
		make(client.Filters).Add("label", agent.LabelAgent+"="+d.prefix+"-local"),
		make(client.Filters).Add("label", agent.LabelAgent+"="+d.prefix+"-remote"),
		make(client.Filters).Add("ancestor", idA),
		make(client.Filters).Add("ancestor", idB),
	} {
		cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs.Items {
			t.Errorf("left behind: %s %s (%s)", c.ID[:12], strings.Join(c.Names, ","), c.Image)
		}
	}
	for _, r := range []*router.Router{core, viaAgent} {
		if ins, _ := r.List(""); len(ins) > 0 {
			t.Errorf("the router still lists %d instances", len(ins))
		}
	}
}
