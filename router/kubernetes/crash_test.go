package kubernetes_test

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/client/clienttest"
	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/harness/cluster"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/internal/testskip"
	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
	pmapi "github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// TestClusterPMKeepsAcknowledgedWritesThroughSIGKILL: the real PM image on
// the real node, launched through the router (TLS, its owner's secret); a
// writer inserts documents one by one while the PM's container is killed
// with SIGKILL through containerd (no chance to flush), twice; the kubelet
// restarts it in its pod, and, unsealed again, it holds every insert it
// acknowledged.
func TestClusterPMKeepsAcknowledgedWritesThroughSIGKILL(t *testing.T) {
	const key = "sigkill on the real node"
	p := unsealedLocalPM(t, "kills the container through the local cluster's containerd", "kira", key)
	c, ns, in, pmc := p.c, p.ns, p.in, p.pmc
	ctx := context.Background()
	var acked []string
	for round := range 2 {
		killAt := 30 + 30*round
		started, done := make(chan struct{}), make(chan []string)
		go func() {
			var ids []string
			for i, errs := 0, 0; errs < 3; i++ {
				got, err := pmc.Insert(ctx, pmapi.DefaultDatabase, pmapi.Timeseries, map[string]any{
					"metadata": map[string]any{"key": "background/location", "write_ts": float64(i)},
					"data":     map[string]any{"ts": float64(round*1000 + i)}})
				if err != nil {
					errs++
					time.Sleep(100 * time.Millisecond)
					continue
				}
				if ids = append(ids, got...); len(ids) == killAt {
					close(started)
				}
			}
			done <- ids
		}()
		select {
		case <-started:
		case ids := <-done:
			t.Fatalf("round %d: the writer stopped after %d inserts before the kill", round, len(ids))
		}
		pod, err := c.cs.CoreV1().Pods(ns).Get(ctx, "upc-"+string(in.ID), metav1.GetOptions{})
		if err != nil || len(pod.Status.ContainerStatuses) != 1 {
			t.Fatalf("round %d: the pm's pod: %v", round, err)
		}
		restarts := pod.Status.ContainerStatuses[0].RestartCount
		id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
		if out, err := exec.Command("ctr", "-a", cluster.ContainerdSocket(c.local), "-n", "k8s.io", "task", "kill", "-s", "SIGKILL", id).CombinedOutput(); err != nil {
			t.Fatalf("round %d: ctr task kill: %v: %s", round, err, out)
		}
		ids := <-done
		acked = append(acked, ids...)
		// The kubelet restarts it (after a back-off that grows: up to a
		// few tens of seconds here).
		for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
			pod, err := c.cs.CoreV1().Pods(ns).Get(ctx, "upc-"+string(in.ID), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if s := pod.Status.ContainerStatuses; len(s) == 1 && s[0].RestartCount > restarts && s[0].Ready {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the kubelet did not restart the killed pm: %+v", round, pod.Status.ContainerStatuses)
			}
		}
		if err := pmc.Unseal(ctx, key); err != nil {
			t.Fatalf("round %d: unseal after SIGKILL: %v", round, err)
		}
		docs, err := pmc.Find(ctx, pmclient.FindRequest{Collection: pmapi.Timeseries, Filter: map[string]any{}})
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, d := range docs {
			have[fmt.Sprint(d["_id"])] = true
		}
		lost := 0
		for _, id := range acked {
			if !have[id] {
				lost++
			}
		}
		t.Logf("round %d: killed after %d acknowledged inserts (%d in all); the PM holds %d documents", round, len(ids), len(acked), len(docs))
		if lost > 0 {
			t.Fatalf("round %d: %d acknowledged inserts lost after SIGKILL", round, lost)
		}
	}
}

// launchRealPM launches user's PM, the real image, through a router over
// the Kubernetes backend in ns on the nodes of sel (TLS, the owner's
// secret), and returns the router, the instance and the owner's client.
// localPM is a user's real PM on the local cluster's real node (launchRealPM)
// for a test that reaches into the node.
type localPM struct {
	c   testCluster
	ns  string
	r   *router.Router
	in  router.Instance
	pmc *pmclient.Client
}

// unsealedLocalPM launches user's real PM and unseals it with key, deleting
// it when the test ends; on a cluster that is not this machine's the test
// is skipped, saying why it needs the node.
func unsealedLocalPM(t *testing.T, why, user, key string) localPM {
	t.Helper()
	c := needCluster(t)
	sel := needNodes(t, c, "real")
	if c.local == "" {
		testskip.Skip(t, why)
	}
	ns := namespace(t, c)
	r, in, pmc := launchRealPM(t, c, ns, sel, user)
	t.Cleanup(func() { r.Delete(context.Background(), in.ID) })
	if err := pmc.Unseal(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	return localPM{c: c, ns: ns, r: r, in: in, pmc: pmc}
}

func launchRealPM(t *testing.T, c testCluster, ns string, sel map[string]string, user string) (*router.Router, router.Instance, *pmclient.Client) {
	t.Helper()
	pm := builtPM(t, c)
	cat := &conf.Catalog{Services: []conf.Service{pm}}
	be := newBackend(t, c, upck8s.Options{Namespace: ns, NodeSelector: sel, ImageByID: true, Catalog: cat, PMClients: []string{"172.30.0.1/32"}})
	ca := certstest.New(t)
	r, err := router.New(router.Options{Backend: be, Catalog: cat, HealthTimeout: 2 * time.Minute, CA: ca.CA, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	in, err := r.Launch(context.Background(), "pm", user)
	if err != nil {
		t.Fatal(err)
	}
	return r, in, pmclient.New(in.Address, ca.Client(30*time.Second), pmclient.WithToken(in.Secret))
}

// TestClusterPMOutlivesKubelet: the real node's kubelet SIGKILLed (as
// scenarios/faults-kubernetes.yaml's kill-kubelet does) while a user's PM
// runs: the PM, kept alive by containerd, answers its owner and takes writes
// while the kubelet is down; the kubelet started again adopts the same
// container (no restart), and the node takes new pods again.
func TestClusterPMOutlivesKubelet(t *testing.T) {
	p := unsealedLocalPM(t, "kills the local cluster's kubelet", "kepa", "through a kubelet crash")
	c, ns, r, in, pmc := p.c, p.ns, p.r, p.in, p.pmc
	ctx := context.Background()
	insert := func(ts float64) {
		t.Helper()
		if _, err := pmc.Insert(ctx, pmapi.DefaultDatabase, pmapi.Timeseries, map[string]any{
			"metadata": map[string]any{"key": "background/location", "write_ts": ts}, "data": map[string]any{"ts": ts}}); err != nil {
			t.Fatal(err)
		}
	}
	insert(1)
	container := func() (string, int32) {
		t.Helper()
		pod, err := c.cs.CoreV1().Pods(ns).Get(ctx, "upc-"+string(in.ID), metav1.GetOptions{})
		if err != nil || len(pod.Status.ContainerStatuses) != 1 {
			t.Fatalf("the pm's pod: %v", err)
		}
		return pod.Status.ContainerStatuses[0].ContainerID, pod.Status.ContainerStatuses[0].RestartCount
	}
	id, restarts := container()

	pid, restart, err := cluster.KillKubelet(ctx, c.local)
	if err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	restarted := false
	defer func() {
		if !restarted {
			restart(context.WithoutCancel(ctx))
		}
	}()
	// Down: the PM still answers its owner, reads and writes.
	insert(2)
	docs, err := pmc.Find(ctx, pmclient.FindRequest{Collection: pmapi.Timeseries, Filter: map[string]any{}})
	if err != nil || len(docs) != 2 {
		t.Fatalf("find with the kubelet down: %d documents, %v; want 2", len(docs), err)
	}
	npid, err := restart(ctx)
	restarted = true
	if err != nil {
		t.Fatal(err)
	}
	if npid == pid {
		t.Fatalf("the kubelet's pid is still %d", pid)
	}
	t.Logf("kubelet pid %d killed, pid %d started %.1f s later", pid, npid, time.Since(down).Seconds())
	// Its node reports Ready, and the new kubelet renews the node's Lease
	// (its heartbeat: node status itself is reported every few minutes).
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		n, err := c.cs.CoreV1().Nodes().Get(ctx, cluster.RealNode, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready := false
		for _, cond := range n.Status.Conditions {
			ready = ready || cond.Type == "Ready" && cond.Status == "True"
		}
		l, err := c.cs.CoordinationV1().Leases("kube-node-lease").Get(ctx, cluster.RealNode, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ready && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(down) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the node did not report Ready with a Lease renewed by the restarted kubelet within 2 min")
		}
	}
	if nid, nrestarts := container(); nid != id || nrestarts != restarts {
		t.Errorf("the pm's container changed across the kubelet's restart: %s (%d restarts) → %s (%d)", id, restarts, nid, nrestarts)
	}
	insert(3)
	// The node takes new pods again.
	other, err := r.Launch(ctx, "pm", "kepa-2")
	if err != nil {
		t.Fatalf("launch after the kubelet's restart: %v", err)
	}
	r.Delete(context.WithoutCancel(ctx), other.ID)
}

// BenchmarkClusterSoak is BenchmarkSoakDocker (see clienttest.Soak) on the
// local cluster's real node: the router in process over the Kubernetes
// backend, the real PM image, TLS on every hop; UPC_SOAK_USERS users
// (default 8) for UPC_SOAK_DURATION (default 1m). Once, on a running cluster
// (make cluster-up NODES=real):
//
//	UPC_SOAK_USERS=8 UPC_SOAK_DURATION=2m go test -run '^$' -bench BenchmarkClusterSoak -benchtime=1x ./router/kubernetes/
func BenchmarkClusterSoak(b *testing.B) {
	users, dur := clienttest.SoakSize(b, 8, time.Minute)
	c := needCluster(b)
	sel := needNodes(b, c, "real")
	pm := builtPM(b, c)
	ns := namespace(b, c)
	cat := &conf.Catalog{Services: []conf.Service{pm}}
	be := newBackend(b, c, upck8s.Options{Namespace: ns, NodeSelector: sel, ImageByID: c.local != "", Catalog: cat, PMClients: []string{"172.30.0.1/32"}})
	admin := access.NewToken(access.PrefixUser)
	ids, err := router.OpenUsers("", admin)
	if err != nil {
		b.Fatal(err)
	}
	ca := certstest.New(b)
	core, err := router.New(router.Options{Backend: be, Catalog: cat, HealthTimeout: 2 * time.Minute, Users: ids, CA: ca.CA,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	day, err := client.LoadDay(filepath.Join(realdata.DirT(b), "shankari_2015-08-23"))
	if err != nil {
		b.Fatal(err)
	}
	tr := clienttest.ServeRouter(b, core, ca, admin, nil)
	b.ResetTimer()
	res := clienttest.Soak(b, tr, users, dur, day)
	b.StopTimer()
	res.Report(b)
	res.Metrics(b)
}
