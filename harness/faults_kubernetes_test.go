package harness

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/e-mission/upc/harness/cluster"
	"github.com/e-mission/upc/harness/flow"
	"github.com/e-mission/upc/harness/scenario"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// Faults that make no sense on the shared local cluster are refused before
// anything starts, each named with why; the others pass.
func TestKubernetesFaultsRefused(t *testing.T) {
	sc, err := scenario.Load("../scenarios/faults.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = refuseKubernetesFaults(sc)
	if err == nil {
		t.Fatal("faults.yaml (kill-agent, disconnect-agent) passed on kubernetes")
	}
	for _, want := range []string{"fault kill-agent is refused on the kubernetes backend: Kubernetes mode has no agents",
		"fault disconnect-agent is refused on the kubernetes backend: Kubernetes mode has no agents"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	for _, ok := range []string{"sigkill-pm", "pause-pm", "restart-router"} {
		if strings.Contains(err.Error(), "fault "+ok) {
			t.Errorf("error %q refuses %s", err, ok)
		}
	}
	k8s, err := scenario.Load("../scenarios/faults-kubernetes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := refuseKubernetesFaults(k8s); err != nil {
		t.Errorf("faults-kubernetes.yaml refused: %v", err)
	}

	// Run refuses it too, before it needs images or a cluster.
	_, err = Run(context.Background(), Options{ScenarioPath: "../scenarios/faults.yaml", Mode: "kubernetes"})
	if err == nil || !strings.Contains(err.Error(), "fault kill-agent is refused on the kubernetes backend") {
		t.Errorf("Run: %v; want kill-agent refused", err)
	}
}

// fakeNode is the real node's containerd as the faults see it.
type fakeNode struct {
	mu    sync.Mutex
	calls [][]string
	err   error
}

func (n *fakeNode) ctr(_ context.Context, args ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, args)
	return n.err
}

func pmPod(id, containerID string, running, ready bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "upc-" + id, Namespace: upck8s.RouterNamespace,
		Labels: map[string]string{upck8s.LabelManaged: "true", upck8s.LabelInstance: id}}}
	cs := corev1.ContainerStatus{Name: "main", ContainerID: containerID}
	if running {
		cs.State.Running = &corev1.ContainerStateRunning{}
	}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
	return p
}

func TestKubeFaults(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(pmPod("pm1", "containerd://abc", true, true), pmPod("pm2", "containerd://def", false, false),
		pmPod("pm3", "docker://xyz", true, true))
	node := &fakeNode{}
	restarts := 0
	k := &kubeFaults{cs: cs, ns: upck8s.RouterNamespace, ctr: node.ctr, readyWithin: 2 * time.Second,
		restartRouter: func(context.Context) (flow.DeploymentFault, error) {
			restarts++
			return flow.DeploymentFault{Did: "restarted"}, nil
		}}

	if err := k.KillInstance(ctx, "pm1"); err != nil {
		t.Fatal(err)
	}
	thaw, err := k.FreezeInstance(ctx, "pm1")
	if err != nil {
		t.Fatal(err)
	}
	if err := thaw(ctx); err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"tasks", "kill", "--signal", "SIGKILL", "abc"}, {"tasks", "pause", "abc"}, {"tasks", "resume", "abc"}}
	if !slices.EqualFunc(node.calls, want, slices.Equal) {
		t.Errorf("ctr calls %q, want %q", node.calls, want)
	}

	// Refused: no such instance, a container not running, not containerd's.
	for id, msg := range map[string]string{"nope": "0 pods carry its label", "pm2": "not running under containerd", "pm3": "not running under containerd"} {
		if err := k.KillInstance(ctx, id); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("kill %s: %v, want %q", id, err, msg)
		}
		if _, err := k.FreezeInstance(ctx, id); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("freeze %s: %v, want %q", id, err, msg)
		}
	}
	if len(node.calls) != 3 {
		t.Errorf("refused faults reached the node: %q", node.calls[3:])
	}

	// A thawed pod that never gets Ready again is an error.
	cs.CoreV1().Pods(upck8s.RouterNamespace).Create(ctx, pmPod("pm4", "containerd://ghi", true, false), metav1.CreateOptions{})
	k.readyWithin = 300 * time.Millisecond
	thaw, err = k.FreezeInstance(ctx, "pm4")
	if err != nil {
		t.Fatal(err)
	}
	if err := thaw(ctx); err == nil || !strings.Contains(err.Error(), "not Ready again") {
		t.Errorf("thaw of a pod never Ready: %v", err)
	}

	// A failing ctr is reported, naming the instance.
	node.err = os.ErrPermission
	if err := k.KillInstance(ctx, "pm1"); err == nil || !strings.Contains(err.Error(), "SIGKILL instance pm1") {
		t.Errorf("kill with ctr failing: %v", err)
	}

	// The router restarts once however many users reach the step; other
	// deployment faults are refused.
	for range 3 {
		if d, err := k.Deployment(ctx, 0, scenario.Step{Do: scenario.Fault, FaultSpec: scenario.FaultSpec{Kind: scenario.RestartRouter}}); err != nil || d.Did != "restarted" {
			t.Errorf("restart-router: %+v, %v", d, err)
		}
	}
	if restarts != 1 || k.Did()[0] != "restarted" {
		t.Errorf("%d restarts, did %v; want 1", restarts, k.Did())
	}
	if _, err := k.Deployment(ctx, 1, scenario.Step{Do: scenario.Fault, FaultSpec: scenario.FaultSpec{Kind: scenario.KillAgent, Target: "a"}}); err == nil ||
		!strings.Contains(err.Error(), "kill-agent is refused") {
		t.Errorf("kill-agent on kubernetes: %v", err)
	}
}

// kill-kubelet, with the API server, the kubelet and the PMs' health
// answers stood in for (a unit test: the real kubelet is killed by
// TestKillKubeletRealNode and `upc scenario run scenarios/faults-kubernetes.yaml`):
// every running pod is probed while the kubelet is down, the kubelet is
// started again whatever the probes said, and a pod that did not answer or
// whose container changed is reported hit, naming its user.
func TestKubeFaultsKillKubelet(t *testing.T) {
	ctx := context.Background()
	pod := func(id, user, cid string) *corev1.Pod {
		p := pmPod(id, cid, true, true)
		p.Annotations = map[string]string{upck8s.AnnUser: user}
		return p
	}
	svc := func(id string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "upc-" + id, Namespace: upck8s.RouterNamespace,
			Labels:      map[string]string{upck8s.LabelManaged: "true", upck8s.LabelInstance: id},
			Annotations: map[string]string{upck8s.AnnAddress: "https://10.0.0.1:3" + id[2:]}}}
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: cluster.RealNode}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	renewed := metav1.NewMicroTime(time.Now().Add(time.Hour))
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: cluster.RealNode, Namespace: corev1.NamespaceNodeLease},
		Spec: coordinationv1.LeaseSpec{RenewTime: &renewed}}
	cs := fake.NewClientset(pod("pm1", "alice", "containerd://a1"), pod("pm2", "bob", "containerd://b1"), pod("pm3", "carol", "containerd://c1"),
		svc("pm1"), svc("pm2"), svc("pm3"), node, lease)
	var probed []string
	restarted := false
	k := &kubeFaults{cs: cs, ns: upck8s.RouterNamespace, readyWithin: 2 * time.Second,
		kubelet: func(context.Context) (int, func(context.Context) (int, error), error) {
			return 41, func(ctx context.Context) (int, error) {
				restarted = true
				// carol's container was replaced meanwhile.
				p, _ := cs.CoreV1().Pods(upck8s.RouterNamespace).Get(ctx, "upc-pm3", metav1.GetOptions{})
				p.Status.ContainerStatuses[0].ContainerID, p.Status.ContainerStatuses[0].RestartCount = "containerd://c2", 1
				_, err := cs.CoreV1().Pods(upck8s.RouterNamespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
				return 42, err
			}, nil
		},
		probe: func(_ context.Context, addr string) error {
			probed = append(probed, addr)
			if strings.HasSuffix(addr, ":32") {
				return os.ErrDeadlineExceeded
			}
			return nil
		}}
	st := scenario.Step{Do: scenario.Fault, FaultSpec: scenario.FaultSpec{Kind: scenario.KillKubelet, Target: scenario.TargetNode,
		Timeout: scenario.Duration(50 * time.Millisecond)}}
	d, err := k.Deployment(ctx, 0, st)
	if err != nil {
		t.Fatal(err)
	}
	if !restarted {
		t.Error("the kubelet was not started again")
	}
	if strings.Join(probed, ",") != "https://10.0.0.1:31,https://10.0.0.1:32,https://10.0.0.1:33" {
		t.Errorf("probed %v", probed)
	}
	if len(d.Hit) != 2 || !strings.Contains(d.Hit["bob"], "did not answer while the kubelet was down") ||
		!strings.Contains(d.Hit["carol"], "container changed across the kubelet's restart") {
		t.Errorf("hit %q", d.Hit)
	}
	for _, w := range []string{"(pid 41)", "2 of 3 running pods answered", "(pid 42)", "2 of 3 pods on the same container"} {
		if !strings.Contains(d.Did, w) {
			t.Errorf("did %q lacks %q", d.Did, w)
		}
	}

	// A kubelet that cannot be killed is an error, and nothing is probed.
	probed = nil
	k.kubelet = func(context.Context) (int, func(context.Context) (int, error), error) {
		return 0, nil, os.ErrPermission
	}
	if _, err := k.Deployment(ctx, 1, st); !errors.Is(err, os.ErrPermission) || probed != nil {
		t.Errorf("kill refused: %v, probed %v", err, probed)
	}
	// A kubelet that does not come back is an error naming the fault.
	k.kubelet = func(context.Context) (int, func(context.Context) (int, error), error) {
		return 41, func(context.Context) (int, error) { return 0, os.ErrNotExist }, nil
	}
	if _, err := k.Deployment(ctx, 2, st); err == nil || !strings.Contains(err.Error(), "kill-kubelet:") {
		t.Errorf("kubelet not back: %v", err)
	}
}
