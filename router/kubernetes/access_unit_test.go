package kubernetes_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// playKubelet plays a node on client-go's fake clientset (a stand-in: the
// unit tests that use it say so): every 10 ms until the test ends, each pod
// of ns is passed to step, and written back when step changed it.
func playKubelet(t *testing.T, cs kubernetes.Interface, ns string, step func(p *corev1.Pod) (changed bool)) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil {
			pods, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			for i := range pods.Items {
				if p := &pods.Items[i]; step(p) {
					cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
}

// runPod marks p as a kubelet reports a started pod: on node-1, with an
// address, its main container running imageID.
func runPod(p *corev1.Pod, imageID string) {
	p.Spec.NodeName = "node-1"
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = "10.0.0.9"
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", Image: p.Spec.Containers[0].Image, ImageID: imageID,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
}

// kubelet plays a node (a stand-in: this is a unit test): every pod it sees
// is marked running and ready.
func kubelet(t *testing.T, cs kubernetes.Interface, ns string) {
	playKubelet(t, cs, ns, func(p *corev1.Pod) bool {
		if p.Status.Phase == corev1.PodRunning {
			return false
		}
		p.Spec.NodeName = "node-1"
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		return true
	})
}

// TestUnitOwnerInLabelsWithFakeAPI: the owner and the bound PM go into the
// Service and pod (label and annotations) and come back from List, in a new
// backend too (a router restart); a launch carrying a secret hash never
// takes a PM from the warm pool.
func TestUnitOwnerInLabelsWithFakeAPI(t *testing.T) {
	cs := fake.NewClientset()
	ns := "upc-unit"
	ctx := context.Background()
	kubelet(t, cs, ns)
	cat := &conf.Catalog{Services: []conf.Service{{Name: "pm", Image: "upc/pm", Port: 8080, Health: "/healthz",
		Volumes: []conf.Volume{{Name: "data", Path: "/data", PerUser: true}}}}}
	open := func() *upck8s.Backend {
		b, err := upck8s.New(ctx, cs, upck8s.Options{Namespace: ns, NodeAddress: "127.0.0.1", HostPathDir: "/tmp/upc-unit",
			WarmPool: map[string]int{"pm": 1}, Catalog: cat, GracePeriod: time.Second}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		return b
	}
	be := open()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := be.WaitPool(wctx); err != nil {
		t.Fatal(err)
	}
	svc := cat.Services[0]
	secret := access.NewToken(access.PrefixInstance)
	in, err := be.Launch(wctx, router.Spec{ID: "a1b2c3d4e5f6", Service: "pm", User: "alice", Owner: "alice", PM: "0123456789ab",
		Image: svc.Image, Port: svc.Port, Health: svc.Health, Volumes: svc.Volumes,
		Env: map[string]string{access.EnvSHA256: access.Hash(secret)}})
	if err != nil {
		t.Fatal(err)
	}
	if in.Owner != "alice" || in.PM != "0123456789ab" {
		t.Fatalf("launch reported owner %q pm %q", in.Owner, in.PM)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: upck8s.LabelInstance + "=a1b2c3d4e5f6"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods: %v %d", err, len(pods.Items))
	}
	p := pods.Items[0]
	if strings.HasPrefix(p.Name, "upc-pool-") {
		t.Errorf("a PM launched with a secret hash took pool pod %s", p.Name)
	}
	if p.Labels[upck8s.LabelOwner] != "alice" || p.Annotations[upck8s.AnnOwner] != "alice" {
		t.Errorf("pod labels %v annotations %v", p.Labels, p.Annotations)
	}
	if envOf(p)[access.EnvSHA256] != access.Hash(secret) {
		t.Errorf("pod env %v", envOf(p))
	}
	// The control: a launch with the pool's own spec (no access
	// settings, as before access control) does take the pool pod.
	if _, err := be.Launch(wctx, router.Spec{ID: "b1b2c3d4e5f6", Service: "pm", User: "bob", Owner: "bob",
		Image: svc.Image, Port: svc.Port, Health: svc.Health, Volumes: svc.Volumes}); err != nil {
		t.Fatal(err)
	}
	pods, _ = cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: upck8s.LabelInstance + "=b1b2c3d4e5f6"})
	if len(pods.Items) != 1 || !strings.HasPrefix(pods.Items[0].Name, "upc-pool-") || pods.Items[0].Labels[upck8s.LabelOwner] != "bob" {
		t.Fatalf("a launch with the pool's spec: pods %+v, want the pool pod, owned by bob", pods.Items)
	}
	for _, b := range []*upck8s.Backend{be, open()} {
		all, err := b.List(ctx)
		if err != nil || len(all) != 2 {
			t.Fatalf("list: %+v %v", all, err)
		}
		for _, in := range all {
			if in.ID == "a1b2c3d4e5f6" && (in.Owner != "alice" || in.PM != "0123456789ab" || in.User != "alice") ||
				in.ID == "b1b2c3d4e5f6" && (in.Owner != "bob" || in.PM != "") {
				t.Fatalf("list: %+v", in)
			}
		}
	}
}
