package kubernetes_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// TestUnitNodeAddressTypeWithFakeAPI: with no NodeAddress, an instance's
// address is its node's InternalIP, or its ExternalIP when the backend is
// told so (clients outside the cluster's network, as on GKE); a node with no
// ExternalIP fails the launch rather than hand out an address those clients
// cannot reach, and an unknown address type is refused at start.
func TestUnitNodeAddressTypeWithFakeAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name     string
		typ      corev1.NodeAddressType
		external bool // the node has an ExternalIP
		want     string
	}{
		{"default: the InternalIP", "", true, "https://10.128.0.5:"},
		{"ExternalIP", corev1.NodeExternalIP, true, "https://34.1.2.3:"},
		{"ExternalIP asked, none", corev1.NodeExternalIP, false, "node node-1 reports no ExternalIP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset()
			ns := "upc-unit"
			deleteCollection(cs)
			addrs := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.128.0.5"}}
			if tc.external {
				addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "34.1.2.3"})
			}
			if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: corev1.NodeStatus{Addresses: addrs},
			}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			imageKubelet(t, cs, ns, func(*corev1.Pod) string { return pinnedID })
			be, err := upck8s.New(ctx, cs, upck8s.Options{Namespace: ns, NodeAddressType: tc.typ, GracePeriod: time.Second},
				slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(be.Close)
			in, err := be.Launch(ctx, router.Spec{ID: "a00000000001", Service: "pm", User: "alice", Owner: "alice",
				Image: "upc/pm:v1", Digest: pinnedID, Port: 8080, Health: "/healthz", TLS: true})
			switch {
			case strings.HasPrefix(tc.want, "https://"):
				if err != nil || !strings.HasPrefix(in.Address, tc.want) {
					t.Errorf("launch: address %q, %v; want %s…", in.Address, err, tc.want)
				}
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Errorf("launch: %v (address %q), want an error %q", err, in.Address, tc.want)
			}
		})
	}
	if _, err := upck8s.New(ctx, fake.NewClientset(), upck8s.Options{NodeAddressType: "Hostname"}, slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), `node address type "Hostname"`) {
		t.Errorf("New with node address type Hostname: %v, want refused", err)
	}
}
