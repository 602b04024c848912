package kubernetes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/testskip"
	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
	"github.com/e-mission/upc/router/routertest"
)

// TestClusterHardened runs a PM (the test server image standing in) on a
// real node, its claim bound to a hostPath volume: the pod's security
// context is as made, its own-data init container ran and ended, and the
// process really runs as 65532, writing its volume and /tmp but not its
// root. A file of root's put in the volume (as a PM that ran as root left
// its data) is the service's after a pause and resume. The PM's
// NetworkPolicy exists with the right selectors. The local cluster's bridge
// plugin does not enforce NetworkPolicy: grants and TLS refuse a neighbour
// there (TestClusterAccess), not the policy.
func TestClusterHardened(t *testing.T) {
	c := needCluster(t)
	sel := needNodes(t, c, "real")
	if c.local == "" {
		testskip.Skip(t, "needs the local cluster's hostPath volumes on this machine")
	}
	ref, id := testImage(t, c)
	ns := namespace(t, c)
	ctx := context.Background()
	be := newBackend(t, c, upck8s.Options{Namespace: ns, NodeSelector: sel, ImageByID: true, PMClients: []string{"172.30.0.1/32"}})
	spec := router.Spec{ID: "4a4d0000000e", Service: "pm", User: "hanna", Owner: "hanna", Image: ref, Digest: id, Port: 8080,
		Health: "/healthz", Volumes: []conf.Volume{{Name: "data", Path: "/data", PerUser: true}}}
	in, err := be.Launch(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := c.cs.CoreV1().Pods(ns).Get(ctx, "upc-"+string(in.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkHardened(t, pod)
	if len(pod.Status.InitContainerStatuses) != 1 {
		t.Errorf("init container statuses %+v, want own-data's", pod.Status.InitContainerStatuses)
	} else if s := pod.Status.InitContainerStatuses[0].State.Terminated; s == nil || s.ExitCode != 0 {
		t.Errorf("own-data: %+v, want ended with 0", pod.Status.InitContainerStatuses[0].State)
	}
	pol, err := c.cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, "upc-"+string(in.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the pm's network policy: %v", err)
	}
	checkPolicy(t, pol, in.ID, 8080, upck8s.DefaultPMRouterPods, []string{"172.30.0.1/32"})

	answering := func(what string) {
		routertest.Eventually(t, what, func() error {
			code, _, err := routertest.Get(in.Address, "/healthz")
			if err == nil && code != 200 {
				err = fmt.Errorf("status %d", code)
			}
			return err
		})
	}
	answering("the hardened pm answers")
	code, body, err := routertest.Get(in.Address, "/probe")
	var p struct {
		UID, GID int
		Writable map[string]bool
	}
	if err != nil || code != 200 || json.Unmarshal([]byte(body), &p) != nil {
		t.Fatalf("probe: %d %q %v", code, body, err)
	}
	if p.UID != 65532 || p.GID != 65532 || !p.Writable["/data"] || !p.Writable["/tmp"] || p.Writable["/"] {
		t.Errorf("probe = %+v, want 65532 writing /data and /tmp only", p)
	}

	// A file of root's in the volume, as a PM running as root left them.
	claims, err := c.cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{LabelSelector: upck8s.LabelUserKey + "=" + upck8s.UserKey("hanna")})
	if err != nil || len(claims.Items) != 1 {
		t.Fatalf("hanna's claims: %v %d", err, len(claims.Items))
	}
	if claims.Items[0].Name != upck8s.ClaimName("hanna", "data") {
		t.Errorf("claim %s, want %s", claims.Items[0].Name, upck8s.ClaimName("hanna", "data"))
	}
	pv, err := c.cs.CoreV1().PersistentVolumes().Get(ctx, claims.Items[0].Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Pause(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pv.Spec.HostPath.Path, "note"), []byte("root's note"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := be.Resume(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	answering("the resumed pm answers")
	if code, body, err := routertest.Get(in.Address, "/read"); err != nil || code != 200 || body != "root's note" {
		t.Errorf("the non-root pm reads %d %q %v, want root's note, given to it by own-data", code, body, err)
	}
	resp, err := http.Post(in.Address+"/write", "text/plain", strings.NewReader("hanna's note"))
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("write as 65532: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if err := be.Destroy(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cs.NetworkingV1().NetworkPolicies(ns).Get(ctx, "upc-"+string(in.ID), metav1.GetOptions{}); err == nil {
		t.Error("the deleted pm's policy stays")
	}
}
