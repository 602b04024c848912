package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/owndata"
	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// storageKubelet plays a node on client-go's fake clientset (a stand-in:
// this is a unit test): instance pods run; wipe pods end, succeeding unless
// fail is set, when their wipe container exits 1 with a message.
func storageKubelet(t *testing.T, cs kubernetes.Interface, ns string, fail *atomic.Bool) {
	playKubelet(t, cs, ns, func(p *corev1.Pod) bool {
		switch {
		case p.Labels[upck8s.LabelWipe] != "" && p.Status.Phase == "":
			p.Status.Phase = corev1.PodSucceeded
			if fail.Load() {
				p.Status.Phase = corev1.PodFailed
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "wipe", State: corev1.ContainerState{
					Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "wipe-data: boom"}}}}
			}
		case p.Labels[upck8s.LabelWipe] == "" && p.Status.Phase != corev1.PodRunning:
			runPod(p, pinnedID)
		default:
			return false
		}
		return true
	})
}

// TestUnitEraseWithFakeAPI: a user's claim outlives their instance and is
// erased only once nothing mounts it: while their pod runs the erase is
// refused naming it; a wipe pod that fails leaves claim and volume as they
// were; one that succeeds (hardened: the PM's pinned image, own-data, then
// wipe-data as 65532 with no capabilities, on the user's claim) is followed
// by the claim's and the volume's deletion. A volume kept without its claim
// gets a claim again and is erased the same way.
func TestUnitEraseWithFakeAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs := fake.NewClientset()
	deleteCollection(cs)
	var mu sync.Mutex
	var wipes []*corev1.Pod
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		if p.Labels[upck8s.LabelWipe] != "" {
			mu.Lock()
			wipes = append(wipes, p.DeepCopy())
			mu.Unlock()
		}
		return false, nil, nil
	})
	ns := "upc-unit"
	var fail atomic.Bool
	storageKubelet(t, cs, ns, &fail)
	be, err := upck8s.New(ctx, cs, upck8s.Options{Namespace: ns, NodeAddress: "127.0.0.1", ImageByID: true, HostPathDir: "/var/upc",
		GracePeriod: time.Second, ReadyTimeout: 10 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(be.Close)
	vols := []conf.Volume{{Name: "data", Path: "/data", PerUser: true}}
	spec := func(id router.ID, user string) router.Spec {
		return router.Spec{ID: id, Service: "pm", User: user, Owner: user, Image: "upc/pm:v1", Digest: pinnedID, Port: 8080, Volumes: vols}
	}
	// Each erase gets a wipe pod of its own name, as the router gives it a
	// new ID: a reused name could meet the last erase's pod, deleted but
	// still in the watch's cache.
	var nWipe int
	wipeSpec := func() router.Spec {
		nWipe++
		return router.Spec{ID: router.ID(fmt.Sprintf("e%011d", nWipe)), Service: "pm", Image: "upc/pm:v1", Digest: pinnedID, Volumes: vols}
	}
	claim := upck8s.ClaimName("alice", "data")
	pv := "upc-" + ns + "-" + claim
	exists := func(what string) bool {
		var err error
		if what == "claim" {
			_, err = cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
		} else {
			_, err = cs.CoreV1().PersistentVolumes().Get(ctx, pv, metav1.GetOptions{})
		}
		return err == nil
	}

	in, err := be.Launch(ctx, spec("a00000000001", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	if vs, err := be.UserStorage(ctx, "alice"); err != nil || len(vs) != 1 || vs[0].Name != claim || vs[0].Volume != "data" {
		t.Fatalf("alice's storage: %+v %v", vs, err)
	}
	if _, err := be.EraseUserStorage(ctx, "alice", wipeSpec()); !errors.Is(err, router.ErrConflict) || !strings.Contains(err.Error(), "pod upc-"+string(in.ID)) {
		t.Fatalf("erase while alice's pod runs: %v, want ErrConflict naming it", err)
	}
	if len(wipes) != 0 || !exists("claim") || !exists("volume") {
		t.Fatal("a refused erase ran a wipe pod or deleted something")
	}
	if err := be.Destroy(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if vs, err := be.UserStorage(ctx, "alice"); err != nil || len(vs) != 1 {
		t.Fatalf("after delete alice's storage is %+v %v, want her claim kept", vs, err)
	}

	fail.Store(true)
	if _, err := be.EraseUserStorage(ctx, "alice", wipeSpec()); err == nil || !strings.Contains(err.Error(), "nothing deleted") || !strings.Contains(err.Error(), "wipe exited 1 (Error): wipe-data: boom") {
		t.Fatalf("erase whose wipe fails: %v, want the wipe's failure", err)
	}
	if !exists("claim") || !exists("volume") {
		t.Fatal("a failed wipe was followed by deletions")
	}
	fail.Store(false)
	erased, err := be.EraseUserStorage(ctx, "alice", wipeSpec())
	if err != nil || len(erased) != 1 || erased[0].Name != claim {
		t.Fatalf("erase: %+v %v", erased, err)
	}
	if exists("claim") || exists("volume") {
		t.Fatal("after the erase the claim or its volume is still there")
	}
	if pods, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); len(pods.Items) != 0 {
		t.Errorf("pods left after the erase: %d", len(pods.Items))
	}

	mu.Lock()
	if len(wipes) != 2 {
		t.Fatalf("%d wipe pods made, want 2", len(wipes))
	}
	w := wipes[1]
	mu.Unlock()
	main := w.Spec.Containers[0]
	sc, psc := main.SecurityContext, w.Spec.SecurityContext
	switch {
	case w.Spec.RestartPolicy != corev1.RestartPolicyNever || w.Spec.AutomountServiceAccountToken == nil || *w.Spec.AutomountServiceAccountToken:
		t.Errorf("wipe pod spec %+v", w.Spec)
	case main.Image != pinnedID || !slices.Equal(main.Args, []string{owndata.WipeCommand, "/wipe/0"}):
		t.Errorf("wipe container runs %s %q, want the pinned image's wipe-data", main.Image, main.Args)
	case psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != 65532 || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot:
		t.Errorf("wipe pod security %+v, want 65532, non-root", psc)
	case sc == nil || sc.RunAsUser != nil || len(sc.Capabilities.Add) != 0 || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("wipe container security %+v, want no capabilities, no escalation, read-only root", sc)
	case len(w.Spec.InitContainers) != 1 || w.Spec.InitContainers[0].Name != upck8s.OwnDataContainer:
		t.Errorf("wipe pod init containers %+v, want own-data", w.Spec.InitContainers)
	case len(w.Spec.Volumes) != 1 || w.Spec.Volumes[0].PersistentVolumeClaim == nil || w.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != claim:
		t.Errorf("wipe pod volumes %+v, want alice's claim", w.Spec.Volumes)
	}

	// A volume kept without its claim (the namespace was made again).
	bob, err := be.Launch(ctx, spec("a00000000002", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Destroy(ctx, bob.ID); err != nil {
		t.Fatal(err)
	}
	bobClaim := upck8s.ClaimName("bob", "data")
	if err := cs.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, bobClaim, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if vs, _ := be.UserStorage(ctx, "bob"); len(vs) != 0 {
		t.Fatalf("bob's storage lists %+v without a claim", vs)
	}
	erased, err = be.EraseUserStorage(ctx, "bob", wipeSpec())
	if err != nil || len(erased) != 1 || erased[0].Name != bobClaim {
		t.Fatalf("erase of bob's kept volume: %+v %v", erased, err)
	}
	if _, err := cs.CoreV1().PersistentVolumes().Get(ctx, "upc-"+ns+"-"+bobClaim, metav1.GetOptions{}); err == nil {
		t.Error("bob's kept volume is still there")
	}
	if erased, err := be.EraseUserStorage(ctx, "carol", wipeSpec()); err != nil || len(erased) != 0 {
		t.Errorf("erase of a user with nothing: %+v %v", erased, err)
	}
}
