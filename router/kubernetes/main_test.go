package kubernetes_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/e-mission/upc/harness/cluster"
	"github.com/e-mission/upc/internal/testskip"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// Tests whose names contain "Cluster" need a Kubernetes cluster: $KUBECONFIG,
// else the local one (make cluster-up). Without one they skip on a
// developer's machine and fail in CI (CI=true), so CI never passes by
// running nothing.

type testCluster struct {
	cfg   *rest.Config
	cs    kubernetes.Interface
	local string // the local cluster's state dir, when it is the one under test
}

var (
	clusterOnce sync.Once
	theCluster  testCluster
	clusterErr  error
)

func kubeconfigPath() (path string, local string) {
	if p := os.Getenv("KUBECONFIG"); p != "" {
		if dir, err := cluster.StateDir(); err == nil && filepath.Clean(p) == cluster.Kubeconfig(dir) {
			return p, dir
		}
		return p, ""
	}
	dir, err := cluster.StateDir()
	if err != nil {
		return "", ""
	}
	return cluster.Kubeconfig(dir), dir
}

func needCluster(t testing.TB) testCluster {
	t.Helper()
	clusterOnce.Do(func() {
		path, local := kubeconfigPath()
		if _, err := os.Stat(path); err != nil {
			clusterErr = fmt.Errorf("no kubeconfig at %q ($KUBECONFIG or the local cluster's): start one with `make cluster-up`", path)
			return
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			clusterErr = err
			return
		}
		upck8s.TuneClient(cfg)
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			clusterErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			clusterErr = fmt.Errorf("cluster at %s does not answer: %w (make cluster-up)", path, err)
			return
		}
		theCluster = testCluster{cfg: cfg, cs: cs, local: local}
	})
	if clusterErr != nil {
		testskip.Skipf(t, "needs a Kubernetes cluster: %v", clusterErr)
	}
	return theCluster
}

// needNodes returns the selector for the tier's nodes (upc.node=fake or
// real on the local cluster); on another cluster the real tier runs on any
// node and the fake tier is not there.
func needNodes(t testing.TB, c testCluster, tier string) map[string]string {
	t.Helper()
	ctx := context.Background()
	nodes, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: cluster.LabelNode + "=" + tier})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) > 0 {
		return map[string]string{cluster.LabelNode: tier}
	}
	all, err := c.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tier == "real" && c.local == "" && len(all.Items) > 0 {
		return nil
	}
	msg := fmt.Sprintf("the cluster has no %s nodes (label %s=%s): make cluster-up NODES=%s or both", tier, cluster.LabelNode, tier, tier)
	testskip.Skip(t, msg)
	return nil
}

func randName(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// namespace makes a namespace for one test and removes it (and the
// volumes the backend made for it) when the test ends.
func namespace(t testing.TB, c testCluster) string {
	t.Helper()
	ctx := context.Background()
	ns := randName("upc-test-")
	_, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{"upc.test": "1"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if err := c.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Errorf("cleanup namespace %s: %v", ns, err)
		}
		err := c.cs.CoreV1().PersistentVolumes().DeleteCollection(ctx, metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: "upc.namespace=" + ns})
		if err != nil {
			t.Errorf("cleanup volumes of %s: %v", ns, err)
		}
		if c.local != "" {
			os.RemoveAll(filepath.Join(hostPathDir(c), ns))
		}
	})
	return ns
}

func hostPathDir(c testCluster) string {
	if c.local == "" {
		return ""
	}
	return filepath.Join(c.local, "pv")
}

func newBackend(t testing.TB, c testCluster, o upck8s.Options) *upck8s.Backend {
	t.Helper()
	o.Labels = map[string]string{"upc.test": "1"}
	if o.HostPathDir == "" {
		o.HostPathDir = hostPathDir(c)
	}
	if o.GracePeriod == 0 {
		o.GracePeriod = time.Second
	}
	b, err := upck8s.New(context.Background(), c.cs, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func isCI() bool { return strings.EqualFold(os.Getenv("CI"), "true") }
