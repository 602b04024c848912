package docker_test

import (
	"context"
	"testing"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routertest"
)

// TestPMThroughRouterDocker launches the real PM image from the built-in
// catalog, pinned by the image manifest, through the router: it answers,
// reports the pinned digest, stops answering while paused, and its per-user
// volume outlives the instance.
func TestPMThroughRouterDocker(t *testing.T) {
	ctx := context.Background()
	m := imagestest.Require(t, "pm")
	cat, err := conf.DefaultCatalog()
	if err != nil {
		t.Fatal(err)
	}
	m.Pin(cat)
	d := newDeployment(t)
	b := backend(t, docker.Machine{Name: "local", Weight: 1, Driver: d.engine(t, "pm")})
	r, err := router.New(router.Options{Backend: b, Catalog: cat})
	if err != nil {
		t.Fatal(err)
	}
	in, err := r.Launch(ctx, "PM", "quinn")
	if err != nil {
		t.Fatal(err)
	}
	if in.Service != "pm" || in.Digest != m.Images["pm"].ID || in.Image != m.Images["pm"].Ref {
		t.Fatalf("launched %+v, want pm running %s", in, m.Images["pm"].ID)
	}
	if code, _, err := routertest.Get(in.Address, "/healthz"); err != nil || code != 200 {
		t.Fatalf("pm health: %d %v", code, err)
	}
	if err := r.Pause(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := routertest.Get(in.Address, "/healthz"); err == nil {
		t.Fatal("paused pm answered")
	}
	if err := r.Resume(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	routertest.Eventually(t, "resumed pm answers", func() error { _, _, err := routertest.Get(in.Address, "/healthz"); return err })
	if err := r.Delete(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	vol := agent.VolumeName(d.prefix+"-pm", "quinn", "data")
	if _, err := cli.VolumeInspect(ctx, vol, client.VolumeInspectOptions{}); err != nil {
		t.Fatalf("the user's volume %s did not outlive the pm: %v", vol, err)
	}
}
