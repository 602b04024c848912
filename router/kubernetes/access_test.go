package kubernetes_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/api"
	upck8s "github.com/e-mission/upc/router/kubernetes"
	"github.com/e-mission/upc/router/routerclient"
)

// TestClusterAccess runs the router's access control over the Kubernetes
// backend on a real node (the test server image stands in for the PM and
// the count service): each launch's pod holds its secret's hash and its
// owner; another user reaches none of it, before and after a router
// restart (a rebuild from labels and annotations); a PM is never taken from
// the warm pool; a researcher's bound launch with a grant the PM does not
// confirm is refused.
func TestClusterAccess(t *testing.T) {
	c := needCluster(t)
	sel := needNodes(t, c, "real")
	ref, id := testImage(t, c)
	ns := namespace(t, c)
	ctx := context.Background()
	cat := &conf.Catalog{Services: []conf.Service{
		{Name: "pm", Aliases: []string{"PM"}, Image: ref, Digest: id, Port: 8080, Health: "/healthz",
			Volumes: []conf.Volume{{Name: "data", Path: "/data", PerUser: true}}},
		{Name: "count", Image: ref, Digest: id, Port: 8080, Health: "/healthz"},
	}}
	open := func() *upck8s.Backend {
		return newBackend(t, c, upck8s.Options{Namespace: ns, NodeSelector: sel, ImageByID: c.local != "",
			WarmPool: map[string]int{"pm": 1}, Catalog: cat})
	}
	admin := "cluster-access-admin-token-0123456789abcdef"
	ca := certstest.New(t).CA
	users, err := router.OpenUsers("", admin)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(be router.Backend) (*router.Router, *httptest.Server) {
		r, err := router.New(router.Options{Backend: be, Catalog: cat, HealthTimeout: time.Minute,
			Users: users, CA: ca}) // TLS on every instance, verified by the router
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Rebuild(ctx); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(router.Handler(r, slog.New(slog.DiscardHandler)))
		t.Cleanup(srv.Close)
		return r, srv
	}
	client := func(srv *httptest.Server, token string) *routerclient.Client {
		rc, err := routerclient.New(srv.URL, routerclient.WithToken(token), routerclient.WithHTTPClient(&http.Client{Timeout: 2 * time.Minute}))
		if err != nil {
			t.Fatal(err)
		}
		return rc
	}
	token := func(name, role string) string {
		u, err := users.Add(name, role)
		if err != nil {
			t.Fatal(err)
		}
		return u.Token
	}
	aliceTok, bobTok, rexTok := token("alice", api.RoleUser), token("bob", api.RoleUser), token("rex", api.RoleResearcher)
	status := func(err error) int {
		var se *routerclient.Error
		if errors.As(err, &se) {
			return se.Code
		}
		return 0
	}

	be := open()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	if err := be.WaitPool(wctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	_, srv := serve(be)
	alice, bob, rex := client(srv, aliceTok), client(srv, bobTok), client(srv, rexTok)

	pm, err := alice.Launch(ctx, "PM", "")
	if err != nil {
		t.Fatal(err)
	}
	if pm.Owner != "alice" || pm.User != "alice" || !strings.HasPrefix(pm.Secret, access.PrefixInstance) {
		t.Fatalf("alice's PM: %+v", pm)
	}
	pods, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: upck8s.LabelInstance + "=" + pm.ID})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of alice's PM: %v (%d)", err, len(pods.Items))
	}
	pod := pods.Items[0]
	if strings.HasPrefix(pod.Name, "upc-pool-") {
		t.Errorf("alice's PM took pool pod %s: it lacks her secret's hash", pod.Name)
	}
	if envOf(pod)[access.EnvSHA256] != access.Hash(pm.Secret) || envOf(pod)[access.EnvLegacy] != "" {
		t.Errorf("PM pod env %v: want %s = the secret's hash and no legacy flag", envOf(pod), access.EnvSHA256)
	}
	if pod.Labels[upck8s.LabelOwner] != "alice" || pod.Annotations[upck8s.AnnOwner] != "alice" {
		t.Errorf("PM pod labels %v annotations %v: want owner alice", pod.Labels, pod.Annotations)
	}

	// Bob reaches none of it; a missing instance looks the same.
	check := func(bob *routerclient.Client, when string) {
		t.Helper()
		for _, id := range []string{pm.ID, "0123456789ab"} {
			if _, err := bob.Get(ctx, id); status(err) != 403 {
				t.Errorf("%s: bob gets %s: %v, want 403", when, id, err)
			}
			if _, err := bob.Pause(ctx, id); status(err) != 403 {
				t.Errorf("%s: bob pauses %s: %v, want 403", when, id, err)
			}
			if _, err := bob.Resume(ctx, id); status(err) != 403 {
				t.Errorf("%s: bob resumes %s: %v, want 403", when, id, err)
			}
			if err := bob.Delete(ctx, id); status(err) != 403 {
				t.Errorf("%s: bob deletes %s: %v, want 403", when, id, err)
			}
		}
		if l, err := bob.List(ctx, ""); err != nil || len(l) != 0 {
			t.Errorf("%s: bob lists %+v %v", when, l, err)
		}
		if _, err := bob.Clear(ctx); status(err) != 403 {
			t.Errorf("%s: bob clears: %v", when, err)
		}
	}
	check(bob, "before restart")
	if _, err := client(srv, "").List(ctx, ""); status(err) != 401 {
		t.Errorf("no token: %v, want 401", err)
	}
	if _, err := alice.LaunchWith(ctx, api.LaunchRequest{Service: "pm", User: "bob"}); status(err) != 403 {
		t.Errorf("alice launches for bob: %v, want 403", err)
	}
	if _, err := rex.Launch(ctx, "pm", "rex"); status(err) != 403 {
		t.Errorf("a researcher launches a PM: %v, want 403", err)
	}
	// The test server confirms no grant, as a PM that never issued it.
	if _, err := rex.LaunchWith(ctx, api.LaunchRequest{Service: "count", PM: pm.ID, Grant: access.NewToken(access.PrefixGrant)}); status(err) != 403 {
		t.Errorf("a researcher's bound launch with an unconfirmed grant: %v, want 403", err)
	}

	// Pause and resume keep the secret's hash (the pod is made again from
	// the spec the Service keeps).
	if _, err := alice.Pause(ctx, pm.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Resume(ctx, pm.ID); err != nil {
		t.Fatal(err)
	}
	pods, err = c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: upck8s.LabelInstance + "=" + pm.ID})
	if err != nil || len(pods.Items) == 0 || envOf(pods.Items[0])[access.EnvSHA256] != access.Hash(pm.Secret) {
		t.Fatalf("after resume, PM pods %v %v: want the secret's hash kept", pods, err)
	}

	// A restarted router over a new backend knows the owners again.
	_, srv2 := serve(open())
	check(client(srv2, bobTok), "after restart")
	if in, err := client(srv2, aliceTok).Get(ctx, pm.ID); err != nil || in.Owner != "alice" {
		t.Fatalf("after restart alice gets %+v %v", in, err)
	}
	if n, err := client(srv2, admin).Clear(ctx); err != nil || n < 1 {
		t.Fatalf("admin clear: %d %v", n, err)
	}
}

func envOf(p corev1.Pod) map[string]string {
	out := map[string]string{}
	for _, c := range p.Spec.Containers {
		for _, e := range c.Env {
			out[e.Name] = e.Value
		}
	}
	return out
}
