package kubernetes_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/testskip"
	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// TestClusterWarmPoolPerUserVolumes pools a service with a per-user volume
// (as the PM has) on the real node: a new user gets a pool pod and its empty
// claim becomes theirs; their data survives pause, resume and delete; their
// next launch mounts their claim again (no pool pod); another new user gets a
// pool pod with nothing of the first user's in it.
//
// It drives the backend, not the router: a router launch carries the
// instance's secret hash in its environment, which pool pods (made before
// anyone asked) lack, so with access control the router never takes a PM
// from the pool (TestClusterAccess checks that). The pool's mechanics are
// the backend's, tested here with the pool's own spec.
func TestClusterWarmPoolPerUserVolumes(t *testing.T) {
	c := needCluster(t)
	sel := needNodes(t, c, "real")
	ref, id := testImage(t, c)
	ns := namespace(t, c)
	cat := &conf.Catalog{Services: []conf.Service{{Name: "echo", Image: ref, Digest: id, Port: 8080, Health: "/healthz",
		Volumes: []conf.Volume{{Name: "data", Path: "/data", PerUser: true}}}}}
	be := newBackend(t, c, upck8s.Options{Namespace: ns, NodeSelector: sel, ImageByID: c.local != "",
		WarmPool: map[string]int{"echo": 1}, Catalog: cat})
	ctx := context.Background()
	n := 0
	launch := func(user string) (router.Instance, error) {
		n++
		svc := cat.Services[0]
		return be.Launch(ctx, router.Spec{ID: router.ID(fmt.Sprintf("00000000a%03d", n)), Service: svc.Name, User: user, Owner: user,
			Image: svc.Image, Digest: svc.Digest, Port: svc.Port, Health: svc.Health, Env: svc.Env, Volumes: svc.Volumes})
	}
	waitPool := func() {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := be.WaitPool(wctx); err != nil {
			t.Fatal(err)
		}
	}
	podOf := func(in router.Instance) string {
		t.Helper()
		pods, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: upck8s.LabelInstance + "=" + string(in.ID)})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("pods of %s: %v (%d)", in.ID, err, len(pods.Items))
		}
		return pods.Items[0].Name
	}

	waitPool()
	alice, err := launch("alice.example")
	if err != nil {
		t.Fatal(err)
	}
	if p := podOf(alice); !strings.HasPrefix(p, "upc-pool-echo-") {
		t.Errorf("a new user's launch did not take the pool pod: pod %s", p)
	}
	if code, body := httpCall(t, "GET", alice.Address+"/read", ""); code != http.StatusNotFound {
		t.Errorf("a pool pod's volume is not empty: %d %q", code, body)
	}
	if code, _ := httpCall(t, "POST", alice.Address+"/write", "alice's note"); code != http.StatusOK {
		t.Fatalf("write: %d", code)
	}
	if err := be.Pause(ctx, alice.ID); err != nil {
		t.Fatal(err)
	}
	if err := be.Resume(ctx, alice.ID); err != nil {
		t.Fatal(err)
	}
	if code, body := httpCall(t, "GET", alice.Address+"/read", ""); code != http.StatusOK || body != "alice's note" {
		t.Errorf("after pause and resume: %d %q", code, body)
	}
	if err := be.Destroy(ctx, alice.ID); err != nil {
		t.Fatal(err)
	}

	waitPool()
	again, err := launch("alice.example")
	if err != nil {
		t.Fatal(err)
	}
	if p := podOf(again); strings.HasPrefix(p, "upc-pool-") {
		t.Errorf("a user with data took a pool pod (%s) instead of mounting their claim", p)
	}
	if code, body := httpCall(t, "GET", again.Address+"/read", ""); code != http.StatusOK || body != "alice's note" {
		t.Errorf("relaunch after delete: %d %q, want alice's note", code, body)
	}

	waitPool()
	bob, err := launch("bob")
	if err != nil {
		t.Fatal(err)
	}
	if p := podOf(bob); !strings.HasPrefix(p, "upc-pool-echo-") {
		t.Errorf("a new user's launch did not take the pool pod: pod %s", p)
	}
	if code, body := httpCall(t, "GET", bob.Address+"/read", ""); code != http.StatusNotFound {
		t.Errorf("bob's pool pod reads %d %q: another user's data", code, body)
	}
	claims, err := c.cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{
		LabelSelector: upck8s.LabelUserKey + "=" + upck8s.UserKey("alice.example")})
	if err != nil || len(claims.Items) != 1 {
		t.Errorf("alice has %d claims (%v), want exactly 1", len(claims.Items), err)
	}
}

// TestClusterKeptVolumeBindsNewClaim removes a user's claim (as removing the
// namespace would) while their volume, retained, keeps the data: the user's
// next launch makes a new claim that binds that volume, and the data is
// there.
func TestClusterKeptVolumeBindsNewClaim(t *testing.T) {
	c := needCluster(t)
	sel := needNodes(t, c, "real")
	if c.local == "" {
		testskip.Skip(t, "needs the local cluster: on another cluster a storage class provisions claims")
	}
	ref, id := testImage(t, c)
	ns := namespace(t, c)
	cat := &conf.Catalog{Services: []conf.Service{{Name: "echo", Image: ref, Digest: id, Port: 8080, Health: "/healthz",
		Volumes: []conf.Volume{{Name: "data", Path: "/data", PerUser: true}}}}}
	be := newBackend(t, c, upck8s.Options{Namespace: ns, NodeSelector: sel, ImageByID: true})
	r, err := router.New(router.Options{Backend: be, Catalog: cat, HealthTimeout: time.Minute,
		HTTPClient: &http.Client{Timeout: 2 * time.Second}, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	in, err := r.Launch(ctx, "echo", "carol")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := httpCall(t, "POST", in.Address+"/write", "carol's note"); code != http.StatusOK {
		t.Fatalf("write: %d", code)
	}
	if err := r.Delete(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	claim := upck8s.ClaimName("carol", "data")
	if err := c.cs.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, claim, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if _, err := c.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{}); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("claim %s not gone", claim)
		}
	}
	again, err := r.Launch(ctx, "echo", "carol")
	if err != nil {
		t.Fatalf("relaunch after the claim was removed: %v", err)
	}
	if code, body := httpCall(t, "GET", again.Address+"/read", ""); code != http.StatusOK || body != "carol's note" {
		t.Errorf("relaunch on a new claim: %d %q, want carol's note", code, body)
	}
}

// httpCall makes one request, retrying while the address does not answer
// (kube-proxy can lag a new endpoint by a second).
func httpCall(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
