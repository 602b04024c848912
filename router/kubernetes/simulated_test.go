package kubernetes_test

import (
	"context"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// simulatedRouter is the router core over a backend on kwok's simulated
// nodes, with TLS on (as deployed): a probe would need the pod to answer.
func simulatedRouter(t *testing.T, c testCluster, accept bool, health time.Duration) (*router.Router, *upck8s.Backend, string) {
	t.Helper()
	sel := needNodes(t, c, "fake")
	pm := pmService(t)
	cat := &conf.Catalog{Services: []conf.Service{pm}}
	ns := namespace(t, c)
	be := newBackend(t, c, upck8s.Options{Namespace: ns, NodeSelector: sel, SimulatedNodes: accept})
	r, err := router.New(router.Options{Backend: be, Catalog: cat, CA: certstest.New(t).CA, HealthTimeout: health})
	if err != nil {
		t.Fatal(err)
	}
	return r, be, ns
}

// TestClusterSimulatedNodesAccepted: with simulated nodes accepted, a PM
// launch on a kwok node returns once its pod is Ready, with no answer from
// it (nothing runs there), reported Simulated; a rebuilt view (a restarted
// router) still says so; pause, resume and delete go through.
func TestClusterSimulatedNodesAccepted(t *testing.T) {
	c := needCluster(t)
	// A probe would never be answered: an hour of health timeout makes
	// a launch that waited for one fail the test's own deadline.
	r, be, ns := simulatedRouter(t, c, true, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	in, err := r.Launch(ctx, "pm", "kwok-user")
	if err != nil {
		t.Fatalf("launch on a simulated node: %v", err)
	}
	if !in.Simulated {
		t.Errorf("instance %s on %s not reported Simulated", in.ID, in.Machine)
	}
	pod, err := c.cs.CoreV1().Pods(ns).Get(ctx, "upc-"+string(in.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := false
	for _, cond := range pod.Status.Conditions {
		ready = ready || (cond.Type == "Ready" && cond.Status == "True")
	}
	if !ready {
		t.Errorf("pod %s not Ready: %+v", pod.Name, pod.Status.Conditions)
	}
	all, err := be.List(ctx)
	if err != nil || len(all) != 1 || !all[0].Simulated {
		t.Fatalf("List: %+v, %v; want the one instance, Simulated", all, err)
	}
	for _, step := range []func(context.Context, router.ID) error{r.Pause, r.Resume, r.Delete} {
		if err := step(ctx, in.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClusterSimulatedNodesRefusedByDefault: without the option, the same
// launch is any silent pod's: refused after the health timeout, and its pod
// and Service removed.
func TestClusterSimulatedNodesRefusedByDefault(t *testing.T) {
	c := needCluster(t)
	r, be, _ := simulatedRouter(t, c, false, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	in, err := r.Launch(ctx, "pm", "kwok-user")
	if !errors.Is(err, router.ErrUnhealthy) {
		t.Fatalf("launch on a simulated node, not accepted: %+v, %v; want ErrUnhealthy", in, err)
	}
	all, err := be.List(ctx)
	if err != nil || len(all) != 0 {
		t.Fatalf("List after the refusal: %+v, %v; want nothing left", all, err)
	}
}
