package kubernetes_test

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// checkHardened fails unless pod carries the hardening every instance pod
// gets: non-root 65532, RuntimeDefault seccomp, no token; its main
// container read-only, without capabilities or escalation, /tmp an emptyDir.
func checkHardened(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	sc := pod.Spec.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 ||
		sc.RunAsGroup == nil || *sc.RunAsGroup != 65532 || sc.FSGroup == nil || *sc.FSGroup != 65532 ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod %s security context %+v", pod.Name, sc)
	}
	if a := pod.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("pod %s mounts a service-account token", pod.Name)
	}
	c := pod.Spec.Containers[0]
	cs := c.SecurityContext
	if cs == nil || cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem || cs.AllowPrivilegeEscalation == nil ||
		*cs.AllowPrivilegeEscalation || cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		len(cs.Capabilities.Add) != 0 || (cs.RunAsUser != nil && *cs.RunAsUser == 0) || cs.Privileged != nil && *cs.Privileged {
		t.Errorf("pod %s container security context %+v", pod.Name, cs)
	}
	tmp := false
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/tmp" {
			for _, v := range pod.Spec.Volumes {
				tmp = tmp || v.Name == m.Name && v.EmptyDir != nil
			}
		}
	}
	if !tmp {
		t.Errorf("pod %s has no emptyDir at /tmp: %+v", pod.Name, pod.Spec.Volumes)
	}
}

// TestUnitHardeningWithFakeAPI runs on client-go's fake clientset (a
// stand-in, this is a unit test: it checks the objects, not that a kubelet
// or network plugin honours them). A PM on hostPath claims gets a hardened
// pod, the own-data init container (root, CAP_CHOWN only) and a
// NetworkPolicy admitting its bound services, the router's pods and the
// configured networks on its port; a bound service's pod carries upc.pm and
// no policy of its own. Deleting the PM deletes its policy; a policy left
// without its instance goes when a backend starts and on clear. A claim
// under a user's claim name that belongs to someone else is refused.
func TestUnitHardeningWithFakeAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := fake.NewClientset()
	ns := "upc-unit"
	deleteCollection(cs)
	imageKubelet(t, cs, ns, func(*corev1.Pod) string { return pinnedID })
	opts := upck8s.Options{Namespace: ns, NodeAddress: "127.0.0.1", GracePeriod: time.Second, HostPathDir: "/var/lib/upc",
		PMClients: []string{"192.0.2.0/24"}}
	be, err := upck8s.New(ctx, cs, opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(be.Close)
	pmSpec := router.Spec{ID: "a0000000000a", Service: "pm", User: "alice", Owner: "alice", Image: "upc/pm:v1", Digest: pinnedID,
		Port: 8080, Health: "/healthz", Volumes: []conf.Volume{{Name: "data", Path: "/data", PerUser: true}}}
	pm, err := be.Launch(ctx, pmSpec)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, "upc-"+string(pm.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkHardened(t, pod)
	if len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("pm pod init containers %+v, want own-data", pod.Spec.InitContainers)
	}
	ic := pod.Spec.InitContainers[0]
	if ic.Name != upck8s.OwnDataContainer || strings.Join(ic.Args, " ") != "own-data 65532:65532 /data" || ic.Image != "upc/pm:v1" {
		t.Errorf("own-data init container %s %q %s", ic.Name, ic.Args, ic.Image)
	}
	if s := ic.SecurityContext; s == nil || s.RunAsUser == nil || *s.RunAsUser != 0 || !slices.Equal(s.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(s.Capabilities.Add, []corev1.Capability{"CHOWN"}) || s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation ||
		s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem {
		t.Errorf("own-data security context %+v", s)
	}

	pol, err := cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, "upc-"+string(pm.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the pm's network policy: %v", err)
	}
	checkPolicy(t, pol, pm.ID, 8080, upck8s.DefaultPMRouterPods, []string{"192.0.2.0/24"})

	// A count bound to the PM: labelled for the policy, none of its own,
	// no init container (no per-user volume).
	count, err := be.Launch(ctx, router.Spec{ID: "c0000000000b", Service: "count", User: "alice", Owner: "alice", PM: pm.ID,
		Image: "upc/count:v1", Digest: pinnedID, Port: 8080, Health: "/healthz"})
	if err != nil {
		t.Fatal(err)
	}
	cpod, err := cs.CoreV1().Pods(ns).Get(ctx, "upc-"+string(count.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkHardened(t, cpod)
	if cpod.Labels[upck8s.LabelPM] != string(pm.ID) || len(cpod.Spec.InitContainers) != 0 {
		t.Errorf("bound count pod labels %v, init containers %d", cpod.Labels, len(cpod.Spec.InitContainers))
	}
	if _, err := cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, "upc-"+string(count.ID), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a count got a network policy: %v", err)
	}

	if err := be.Destroy(ctx, pm.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, "upc-"+string(pm.ID), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the deleted pm's policy stays: %v", err)
	}

	// Left behind (a router stopped between deletions): a new backend
	// removes it at start, Clear at any time.
	orphan := func(id string) {
		_, err := cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{
			Name: "upc-" + id, Labels: map[string]string{upck8s.LabelManaged: "true", upck8s.LabelInstance: id}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	orphan("dead00000001")
	be2, err := upck8s.New(ctx, cs, opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(be2.Close)
	if _, err := cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, "upc-dead00000001", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a new backend left the orphan policy: %v", err)
	}
	orphan("dead00000002")
	if _, err := be2.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if l, _ := cs.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Errorf("policies after clear: %d", len(l.Items))
	}

	// Someone else's claim under bob's claim name: refused, nothing runs.
	_, err = cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{
		Name:        upck8s.ClaimName("bob", "data"),
		Labels:      map[string]string{upck8s.LabelClaim: "true", upck8s.LabelVolume: "data", upck8s.LabelUserKey: upck8s.UserKey("mallory")},
		Annotations: map[string]string{upck8s.AnnUser: "mallory"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bob := pmSpec
	bob.ID, bob.User, bob.Owner = "b0000000000c", "bob", "bob"
	if _, err := be2.Launch(ctx, bob); !errors.Is(err, router.ErrForbidden) || !strings.Contains(err.Error(), "is not user bob's volume data") {
		t.Errorf("launch onto another user's claim: %v, want ErrForbidden", err)
	}
	if _, err := cs.CoreV1().Pods(ns).Get(ctx, "upc-"+string(bob.ID), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a pod was made on another user's claim: %v", err)
	}
}

// checkPolicy fails unless pol admits to PM id's pod, on port, only its
// bound services, the router pods and the networks.
func checkPolicy(t *testing.T, pol *networkingv1.NetworkPolicy, id router.ID, port int, routerPods map[string]string, cidrs []string) {
	t.Helper()
	sel := map[string]string{upck8s.LabelManaged: "true", upck8s.LabelInstance: string(id)}
	if !maps.Equal(pol.Spec.PodSelector.MatchLabels, sel) || len(pol.Spec.PodSelector.MatchExpressions) != 0 {
		t.Errorf("policy selects %+v, want %v", pol.Spec.PodSelector, sel)
	}
	if !slices.Equal(pol.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(pol.Spec.Ingress) != 1 {
		t.Fatalf("policy types %v, %d ingress rules; want one Ingress rule", pol.Spec.PolicyTypes, len(pol.Spec.Ingress))
	}
	rule := pol.Spec.Ingress[0]
	if len(rule.Ports) != 1 || rule.Ports[0].Port == nil || rule.Ports[0].Port.IntValue() != port {
		t.Errorf("policy ports %+v, want %d only", rule.Ports, port)
	}
	var got []string
	for _, p := range rule.From {
		switch {
		case p.IPBlock != nil:
			got = append(got, "cidr "+p.IPBlock.CIDR)
		case p.NamespaceSelector != nil:
			got = append(got, "namespaces")
		case p.PodSelector != nil && maps.Equal(p.PodSelector.MatchLabels, map[string]string{upck8s.LabelManaged: "true", upck8s.LabelPM: string(id)}):
			got = append(got, "bound services")
		case p.PodSelector != nil && maps.Equal(p.PodSelector.MatchLabels, routerPods):
			got = append(got, "router")
		default:
			got = append(got, "other")
		}
	}
	want := []string{"bound services", "router"}
	for _, c := range cidrs {
		want = append(want, "cidr "+c)
	}
	if !slices.Equal(got, want) {
		t.Errorf("policy admits %q, want %q", got, want)
	}
}
