package kubernetes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/e-mission/upc/harness/cluster"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker/testimage"
	upck8s "github.com/e-mission/upc/router/kubernetes"
	"github.com/e-mission/upc/router/routertest"
)

// TestClusterConformanceKwok runs the backend suite on kwok's simulated
// nodes: real API semantics (scheduling, node ports, claims bound to
// volumes, watches), no process in the pods. Instances "answer" through
// podStatus, which reads the pod's status from the API server; the checks
// that need a process are skipped by the suite.
func TestClusterConformanceKwok(t *testing.T) {
	c := needCluster(t)
	sel := needNodes(t, c, "fake")
	routertest.Run(t, func(t *testing.T) routertest.Env {
		ns := namespace(t, c)
		return routertest.Env{
			Image: "upc-test/router-server:kwok", Digest: "sha256:" + strings.Repeat("ab", 32),
			HTTP:      &http.Client{Transport: podStatus{cs: c.cs, ns: ns}, Timeout: 2 * time.Second},
			NoProcess: true,
			Open: func() router.Backend {
				return newBackend(t, c, upck8s.Options{Namespace: ns, NodeSelector: sel})
			},
		}
	})
}

// TestClusterConformanceRealNode runs the whole suite on a real node
// (kubelet + containerd + kube-proxy): pods answer HTTP at node address +
// node port, data survives pause and relaunch on the user's claim, and an
// erase leaves no claim, volume or file of the user's.
func TestClusterConformanceRealNode(t *testing.T) {
	c := needCluster(t)
	sel := needNodes(t, c, "real")
	ref, id := testImage(t, c)
	routertest.Run(t, func(t *testing.T) routertest.Env {
		ns := namespace(t, c)
		lo := leftovers(c, ns)
		return routertest.Env{Image: ref, Digest: id, Open: func() router.Backend {
			return newBackend(t, c, upck8s.Options{Namespace: ns, NodeSelector: sel, ImageByID: c.local != ""})
		}, Leftovers: func(t *testing.T, user string) []string { return lo(t, user) }}
	})
}

// testImage builds the suite's server image and, on the local cluster,
// loads it into the real node's containerd.
func testImage(t testing.TB, c testCluster) (string, string) {
	t.Helper()
	ctx := context.Background()
	d, err := images.NewDocker()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ref := "upc-test/router-server:k8s"
	id, err := testimage.Build(ctx, d, ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testimage.Remove(ctx, d, ref) })
	if c.local != "" {
		if err := cluster.LoadImages(ctx, discard{}, c.local, ref); err != nil {
			t.Fatal(err)
		}
	}
	return ref, id
}

type discard struct{}

func (discard) Info(string, ...any) {}

// podStatus answers HTTP for instances on simulated nodes from the API
// server: an address "answers" while its instance has a Ready pod. /healthz
// gives 200 and / the pod's name as the test server's hostname; anything
// else needs a process and is refused.
type podStatus struct {
	cs kubernetes.Interface
	ns string
}

func (p podStatus) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	addr := "http://" + req.URL.Host
	svcs, err := p.cs.CoreV1().Services(p.ns).List(ctx, metav1.ListOptions{LabelSelector: upck8s.LabelManaged + "=true"})
	if err != nil {
		return nil, err
	}
	id := ""
	for _, s := range svcs.Items {
		if s.Annotations[upck8s.AnnAddress] == addr {
			id = s.Labels[upck8s.LabelInstance]
		}
	}
	if id == "" {
		return nil, fmt.Errorf("dial %s: connection refused (no instance has this address)", addr)
	}
	pods, err := p.cs.CoreV1().Pods(p.ns).List(ctx, metav1.ListOptions{LabelSelector: upck8s.LabelInstance + "=" + id})
	if err != nil {
		return nil, err
	}
	var ready *corev1.Pod
	for i := range pods.Items {
		pod := &pods.Items[i]
		for _, cd := range pod.Status.Conditions {
			if pod.DeletionTimestamp == nil && cd.Type == corev1.PodReady && cd.Status == corev1.ConditionTrue {
				ready = pod
			}
		}
	}
	if ready == nil {
		return nil, fmt.Errorf("dial %s: connection refused (instance %s has no Ready pod)", addr, id)
	}
	body, code := "", http.StatusOK
	switch req.URL.Path {
	case "/healthz":
		body = "ok"
	case "/":
		b, _ := json.Marshal(map[string]string{"hostname": ready.Name})
		body = string(b)
	default:
		code, body = http.StatusNotImplemented, "no process runs on a simulated node"
	}
	return &http.Response{StatusCode: code, Status: http.StatusText(code), Body: io.NopCloser(strings.NewReader(body)),
		Header: http.Header{}, Request: req, ProtoMajor: 1, ProtoMinor: 1}, nil
}
