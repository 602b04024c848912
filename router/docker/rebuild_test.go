package docker_test

import (
	"context"
	"testing"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/routertest"
)

// TestRebuildRemovesLeftoversDocker: after a restart the router adopts the
// running and paused instances and removes what no one owns: an instance
// whose container stopped (a launch cut short, a crash).
func TestRebuildRemovesLeftoversDocker(t *testing.T) {
	ctx := context.Background()
	d := newDeployment(t)
	eng := d.engine(t, "m")
	open := func() *docker.Backend { return backend(t, docker.Machine{Name: "m", Weight: 1, Driver: eng}) }
	env := routertest.Env{Image: imageRef, Digest: imageID}
	r1 := env.Router(t, open())
	live, err := r1.Launch(ctx, "test", "olga")
	if err != nil {
		t.Fatal(err)
	}
	dead, err := r1.Launch(ctx, "test", "pete")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := eng.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	timeout := 0
	for _, c := range cs {
		if c.Instance == string(dead.ID) {
			if _, err := cli.ContainerStop(ctx, c.ContainerID, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
				t.Fatal(err)
			}
		}
	}

	r2 := env.Router(t, open())
	if err := r2.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Get(live.ID); err != nil {
		t.Fatalf("running instance not adopted: %v", err)
	}
	if _, err := r2.Get(dead.ID); err == nil {
		t.Fatal("stopped instance adopted")
	}
	routertest.Eventually(t, "leftover removed", func() error {
		cs, err := eng.List(ctx)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if c.Instance == string(dead.ID) {
				return errLeft
			}
		}
		return nil
	})
}

var errLeft = errorString("the stopped instance's container is still there")

type errorString string

func (e errorString) Error() string { return string(e) }
