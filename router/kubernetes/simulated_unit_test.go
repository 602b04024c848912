package kubernetes_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// kwokKubelet plays kwok on client-go's fake clientset (a stand-in: this is
// a unit test): every pod is bound to node and made Running with its
// container running, then, at its next pass, Ready, with no image reported
// (the launch must wait for the second).
func kwokKubelet(t *testing.T, cs *fake.Clientset, ns, node string) {
	playKubelet(t, cs, ns, func(p *corev1.Pod) bool {
		switch {
		case p.Status.Phase != corev1.PodRunning:
			p.Spec.NodeName = node
			p.Status.Phase = corev1.PodRunning
			p.Status.PodIP = "10.0.0.9"
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
		case len(p.Status.Conditions) == 0:
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		default:
			return false
		}
		return true
	})
}

// TestUnitSimulatedNodesWithFakeAPI: a pod bound to a node carrying kwok's
// annotation makes a Simulated instance only with Options.SimulatedNodes on
// (in what Launch returns and in List, as a restarted router rebuilds its
// view); off, the same instance is reported as any other, and a node
// without the annotation never makes one Simulated.
func TestUnitSimulatedNodesWithFakeAPI(t *testing.T) {
	for _, c := range []struct {
		name   string
		accept bool
		ann    map[string]string
		want   bool
	}{
		{"kwok node, accepted", true, map[string]string{upck8s.AnnKwokNode: upck8s.KwokNodeFake}, true},
		{"kwok node, not accepted (default)", false, map[string]string{upck8s.AnnKwokNode: upck8s.KwokNodeFake}, false},
		{"real node, accepted", true, nil, false},
		{"another kwok value, accepted", true, map[string]string{upck8s.AnnKwokNode: "real"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-0", Annotations: c.ann},
				Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.1.0.1"}}}})
			ns := "upc-unit"
			deleteCollection(cs)
			kwokKubelet(t, cs, ns, "node-0")
			be, err := upck8s.New(ctx, cs, upck8s.Options{Namespace: ns, GracePeriod: time.Second, SimulatedNodes: c.accept},
				slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(be.Close)
			in, err := be.Launch(ctx, router.Spec{ID: "c0000000000a", Service: "count", User: "alice", Image: "upc/count:v1",
				Digest: pinnedID, Port: 8080, Health: "/healthz", TLS: true})
			if err != nil {
				t.Fatal(err)
			}
			if in.Simulated != c.want {
				t.Errorf("Launch: Simulated %v, want %v", in.Simulated, c.want)
			}
			// A simulated launch ends on the pod's Ready status, not on its
			// container running (all a real node's launch waits for here:
			// the router's health probe does the rest).
			pod, err := cs.CoreV1().Pods(ns).Get(ctx, "upc-"+string(in.ID), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ready := len(pod.Status.Conditions) > 0; c.want && !ready {
				t.Errorf("simulated launch returned before its pod was Ready: %+v", pod.Status)
			}
			all, err := be.List(ctx)
			if err != nil || len(all) != 1 || all[0].Simulated != c.want {
				t.Errorf("List: %+v, %v; want one instance, Simulated %v", all, err, c.want)
			}
		})
	}
}
