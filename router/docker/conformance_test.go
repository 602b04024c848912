package docker_test

import (
	"math/rand/v2"
	"testing"

	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/routertest"
)

// TestConformanceDockerLocal runs the backend suite with the router driving
// the local engine in process (the one-machine setup).
func TestConformanceDockerLocal(t *testing.T) {
	routertest.Run(t, func(t *testing.T) routertest.Env {
		d := newDeployment(t)
		return routertest.Env{Image: imageRef, Digest: imageID, Leftovers: d.leftovers, Open: func() router.Backend {
			return backend(t, docker.Machine{Name: "local", Weight: 1, Driver: d.engine(t, "local")})
		}}
	})
}

// TestConformanceDockerHost runs it on the local engine in host network
// mode: ports allocated by the agent from a range of this test's own.
func TestConformanceDockerHost(t *testing.T) {
	routertest.Run(t, func(t *testing.T) routertest.Env {
		d := newDeployment(t)
		lo := 24000 + 64*rand.IntN(90)
		return routertest.Env{Image: imageRef, Digest: imageID, Leftovers: d.leftovers, Open: func() router.Backend {
			return backend(t, docker.Machine{Name: "local", Weight: 1, Driver: d.hostEngine(t, "host", lo, lo+63)})
		}}
	})
}

// TestConformanceDockerAgents runs it with two machine agents over HTTP.
func TestConformanceDockerAgents(t *testing.T) {
	routertest.Run(t, func(t *testing.T) routertest.Env {
		d := newDeployment(t)
		a, b := d.agentServer(t, "a"), d.agentServer(t, "b")
		return routertest.Env{Image: imageRef, Digest: imageID, Leftovers: d.leftovers, Open: func() router.Backend {
			return backend(t,
				docker.Machine{Name: a.URL, Weight: 1, Driver: agentClient(t, a.URL)},
				docker.Machine{Name: b.URL, Weight: 1, Driver: agentClient(t, b.URL)})
		}}
	})
}
