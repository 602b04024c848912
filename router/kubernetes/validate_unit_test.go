package kubernetes_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

var (
	pinnedID  = "sha256:" + strings.Repeat("a1", 32)
	swappedID = "sha256:" + strings.Repeat("b2", 32)
)

// imageKubelet plays a node on client-go's fake clientset (a stand-in: this
// is a unit test) that runs every pod it sees, reporting as the image its
// container runs whatever runs(pod) says, as a kubelet does in
// status.containerStatuses[].imageID.
func imageKubelet(t *testing.T, cs kubernetes.Interface, ns string, runs func(*corev1.Pod) string) {
	playKubelet(t, cs, ns, func(p *corev1.Pod) bool {
		if p.Status.Phase == corev1.PodRunning {
			return false
		}
		runPod(p, runs(p))
		return true
	})
}

// TestUnitSwappedImageRefusedWithFakeAPI: after a pod starts, the backend
// compares the image its node reports with the catalog's pin. A pod whose
// tag now names another image (a swapped upc/pm:<version> on the node) is
// deleted and the launch refused with router.ErrForbidden naming both
// digests, leaving no pod and no Service; a resume meeting a swapped image
// is refused the same way. The image that runs is what the launch and
// List report: the pin, or, unpinned, what the node reports.
func TestUnitSwappedImageRefusedWithFakeAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := fake.NewClientset()
	ns := "upc-unit"
	deleteCollection(cs)
	var swapped bool
	imageKubelet(t, cs, ns, func(p *corev1.Pod) string {
		switch {
		case p.Labels[upck8s.LabelService] == "count": // pulled from a registry
			return "registry.example/upc/count@" + swappedID
		case swapped:
			return swappedID
		}
		return pinnedID
	})
	for _, byID := range []bool{false, true} {
		be, err := upck8s.New(ctx, cs, upck8s.Options{Namespace: ns, NodeAddress: "127.0.0.1", ImageByID: byID, GracePeriod: time.Second},
			slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(be.Close)
		swapped = false
		spec := func(id router.ID, digest string) router.Spec {
			return router.Spec{ID: id, Service: "pm", User: "alice", Owner: "alice", Image: "upc/pm:v1", Digest: digest, Port: 8080, Health: "/healthz"}
		}
		in, err := be.Launch(ctx, spec("a00000000001", pinnedID))
		if err != nil {
			t.Fatal(err)
		}
		if in.Digest != pinnedID {
			t.Errorf("image by id %v: a pinned launch reports digest %q, want %s", byID, in.Digest, pinnedID)
		}
		// Unpinned: the digest is what the node runs, also after a restart.
		un, err := be.Launch(ctx, spec("a00000000002", ""))
		if err != nil {
			t.Fatal(err)
		}
		if un.Digest != pinnedID {
			t.Errorf("image by id %v: an unpinned launch reports digest %q, want what runs, %s", byID, un.Digest, pinnedID)
		}
		if all, err := be.List(ctx); err != nil || len(all) != 2 || all[0].Digest != pinnedID || all[1].Digest != pinnedID {
			t.Errorf("image by id %v: list %+v %v, want both running %s", byID, all, err, pinnedID)
		}
		if err := be.Pause(ctx, in.ID); err != nil {
			t.Fatal(err)
		}

		swapped = true
		want := "runs image upc/pm:v1 as " + swappedID + ", not the pinned " + pinnedID
		_, err = be.Launch(ctx, spec("a00000000003", pinnedID))
		if !errors.Is(err, router.ErrForbidden) || !strings.Contains(err.Error(), want) {
			t.Fatalf("image by id %v: launch of a swapped image: %v, want ErrForbidden %q", byID, err, want)
		}
		if err := be.Resume(ctx, in.ID); !errors.Is(err, router.ErrForbidden) || !strings.Contains(err.Error(), want) {
			t.Fatalf("image by id %v: resume onto a swapped image: %v, want ErrForbidden %q", byID, err, want)
		}
		for _, id := range []string{"a00000000001", "a00000000003"} {
			pods, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: upck8s.LabelInstance + "=" + id})
			if len(pods.Items) != 0 {
				t.Errorf("image by id %v: instance %s keeps %d pods running the swapped image", byID, id, len(pods.Items))
			}
		}
		if _, err := cs.CoreV1().Services(ns).Get(ctx, "upc-a00000000003", metav1.GetOptions{}); err == nil {
			t.Errorf("image by id %v: the refused launch left its Service", byID)
		}

		// A registry digest (a pulled image) cannot be compared with an
		// image ID: by ID the pod ran the pin; by reference it is reported
		// as it is, for a client that requires the pin to refuse.
		reg := router.Spec{ID: "a00000000004", Service: "count", User: "alice", Image: "upc/count:v1", Digest: pinnedID, Port: 8080}
		rin, err := be.Launch(ctx, reg)
		if err != nil {
			t.Fatal(err)
		}
		if wantReg := map[bool]string{true: pinnedID, false: "registry.example/upc/count@" + swappedID}[byID]; rin.Digest != wantReg {
			t.Errorf("image by id %v: registry digest launch reports %q, want %q", byID, rin.Digest, wantReg)
		}
		if _, err := be.Clear(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// deleteCollection teaches the fake clientset to delete pods by label
// selector, which its tracker does not do by itself.
func deleteCollection(cs *fake.Clientset) {
	cs.PrependReactor("delete-collection", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		dc := a.(k8stesting.DeleteCollectionAction)
		sel := dc.GetListRestrictions().Labels
		if sel == nil {
			sel = labels.Everything()
		}
		obj, err := cs.Tracker().List(corev1.SchemeGroupVersion.WithResource("pods"), corev1.SchemeGroupVersion.WithKind("Pod"), dc.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		for _, p := range obj.(*corev1.PodList).Items {
			if sel.Matches(labels.Set(p.Labels)) {
				if err := cs.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), p.Namespace, p.Name); err != nil {
					return true, nil, err
				}
			}
		}
		return true, nil, nil
	})
}
