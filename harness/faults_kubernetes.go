package harness

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/e-mission/upc/harness/cluster"
	"github.com/e-mission/upc/harness/flow"
	"github.com/e-mission/upc/harness/scenario"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// kubernetesFaults are the fault kinds a kubernetes-mode run injects, and
// why each other kind is refused there.
var (
	kubernetesFaults       = []string{scenario.RestartRouter, scenario.KillPMUpload, scenario.PausePM, scenario.KillKubelet}
	kubernetesFaultRefusal = map[string]string{
		scenario.KillAgent: "Kubernetes mode has no agents: a machine's counterpart is a node, whose kubelet kill-kubelet kills " +
			"(the node's containers live on); kill-agent runs on the docker backend",
		scenario.DisconnectAgent: "Kubernetes mode has no agents to cut off (the router drives the API server); disconnect-agent runs on the docker backend",
	}
)

// refuseKubernetesFaults says, naming each, which fault steps of sc a
// kubernetes-mode run cannot inject.
func refuseKubernetesFaults(sc *scenario.Scenario) error {
	var errs []error
	for i, st := range sc.Steps {
		if st.Do != scenario.Fault || slices.Contains(kubernetesFaults, st.Kind) {
			continue
		}
		why := kubernetesFaultRefusal[st.Kind]
		if why == "" {
			why = "not supported on kubernetes"
		}
		errs = append(errs, fmt.Errorf("steps[%d]: fault %s is refused on the kubernetes backend: %s", i, st.Kind, why))
	}
	return errors.Join(errs...)
}

// kubeFaults breaks a kubernetes-mode run for fault steps: the router's
// container through the Docker engine, a PM's container through the real
// node's containerd (ctr, as the node's operator would), found by the
// instance's pod in the router's namespace, and nothing else.
type kubeFaults struct {
	cs kubernetes.Interface
	ns string
	// ctr runs the node's containerd client with args (namespace k8s.io).
	ctr func(ctx context.Context, args ...string) error
	// restartRouter SIGKILLs the router's container and starts it again.
	restartRouter func(ctx context.Context) (flow.DeploymentFault, error)
	// readyWithin bounds the wait for a thawed PM's pod to be Ready again.
	readyWithin time.Duration
	// kubelet SIGKILLs the real node's kubelet (cluster.KillKubelet) and
	// returns how to start it again.
	kubelet func(ctx context.Context) (pid int, restart func(context.Context) (int, error), err error)
	// probe asks a PM's health path at its address, over the run's TLS.
	probe func(ctx context.Context, address string) error
	onceFaults
}

var _ flow.Faults = (*kubeFaults)(nil)

// nodeCtr runs `ctr` against the containerd socket sock, in Kubernetes'
// namespace.
func nodeCtr(sock string) func(ctx context.Context, args ...string) error {
	return func(ctx context.Context, args ...string) error {
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"-a", sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
}

// Deployment implements flow.Faults: restart-router only (Run refuses the
// others before anything starts).
func (k *kubeFaults) Deployment(ctx context.Context, n int, st scenario.Step) (flow.DeploymentFault, error) {
	return k.do(n, func() (flow.DeploymentFault, error) {
		switch st.Kind {
		case scenario.RestartRouter:
			return k.restartRouter(ctx)
		case scenario.KillKubelet:
			outage := time.Duration(st.Timeout)
			if outage == 0 {
				outage = scenario.DefaultKubeletOutage
			}
			return k.killKubelet(ctx, outage)
		}
		return flow.DeploymentFault{}, fmt.Errorf("fault %s is refused on the kubernetes backend", st.Kind)
	})
}

// runPod is one of the run's pods as kill-kubelet checks it.
type runPod struct {
	name, user, address, container string
	restarts                       int32
}

// runPods lists the run's pods with a running main container, each with its
// user and its Service's address.
func (k *kubeFaults) runPods(ctx context.Context) ([]runPod, error) {
	sel := metav1.ListOptions{LabelSelector: upck8s.LabelManaged + "=true"}
	pods, err := k.cs.CoreV1().Pods(k.ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list the run's pods: %w", err)
	}
	svcs, err := k.cs.CoreV1().Services(k.ns).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list the run's services: %w", err)
	}
	addr := map[string]string{}
	for _, s := range svcs.Items {
		addr[s.Labels[upck8s.LabelInstance]] = s.Annotations[upck8s.AnnAddress]
	}
	var out []runPod
	for _, p := range pods.Items {
		for _, c := range p.Status.ContainerStatuses {
			if c.Name != "main" || c.State.Running == nil {
				continue
			}
			out = append(out, runPod{name: p.Name, user: cmpOr(p.Annotations[upck8s.AnnUser], p.Labels[upck8s.LabelUser]),
				address: addr[p.Labels[upck8s.LabelInstance]], container: c.ContainerID, restarts: c.RestartCount})
		}
	}
	slices.SortFunc(out, func(a, b runPod) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// killKubelet SIGKILLs the node's kubelet, asks every running PM for its
// health while the kubelet is down, starts it again after outage, and waits
// for the node and every pod to be Ready again. Each pod must still run the
// container it ran before, unrestarted: the runtime, not the kubelet, keeps
// a node's containers alive. A user whose PM did not answer meanwhile, or
// whose container changed, is reported hit, with why.
func (k *kubeFaults) killKubelet(ctx context.Context, outage time.Duration) (flow.DeploymentFault, error) {
	before, err := k.runPods(ctx)
	if err != nil {
		return flow.DeploymentFault{}, err
	}
	pid, restart, err := k.kubelet(ctx)
	if err != nil {
		return flow.DeploymentFault{}, err
	}
	down := time.Now()
	hit := map[string]string{}
	answered := 0
	for _, p := range before {
		pctx, cancel := context.WithTimeout(ctx, min(outage, 5*time.Second))
		err := k.probe(pctx, p.address)
		cancel()
		switch {
		case err != nil:
			hit[p.user] = fmt.Sprintf("pod %s did not answer while the kubelet was down: %v", p.name, err)
		default:
			answered++
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(down.Add(outage))):
	}
	// Whatever the run's context says: a node must not be left without
	// its kubelet.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	npid, err := restart(rctx)
	if err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("kill-kubelet: %w", err)
	}
	kept := time.Since(down)
	if err := k.untilNodeReady(rctx, down); err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("kill-kubelet: after the restart: %w", err)
	}
	readyAfter := time.Since(down)
	same := 0
	for _, p := range before {
		if err := k.untilReady(rctx, p.name); err != nil {
			hit[p.user] = fmt.Sprintf("after the kubelet's restart: %v", err)
			continue
		}
		cur, err := k.cs.CoreV1().Pods(k.ns).Get(rctx, p.name, metav1.GetOptions{})
		if err != nil {
			hit[p.user] = fmt.Sprintf("after the kubelet's restart: pod %s: %v", p.name, err)
			continue
		}
		for _, c := range cur.Status.ContainerStatuses {
			if c.Name != "main" {
				continue
			}
			if c.ContainerID != p.container || c.RestartCount != p.restarts {
				hit[p.user] = fmt.Sprintf("pod %s's container changed across the kubelet's restart (%s, %d restarts → %s, %d)",
					p.name, p.container, p.restarts, c.ContainerID, c.RestartCount)
			} else {
				same++
			}
		}
	}
	return flow.DeploymentFault{Hit: hit, Did: fmt.Sprintf(
		"SIGKILLed the node's kubelet (pid %d) and kept it down %.1f s: %d of %d running pods answered meanwhile; "+
			"started it again (pid %d): node and pods Ready %.1f s after the kill, %d of %d pods on the same container, unrestarted",
		pid, kept.Seconds(), answered, len(before), npid, readyAfter.Seconds(), same, len(before))}, nil
}

// untilNodeReady waits until the real node reports Ready and its kubelet
// has renewed the node's Lease since since: the Lease is the kubelet's
// heartbeat (its node status is reported only every few minutes unless it
// changes).
func (k *kubeFaults) untilNodeReady(ctx context.Context, since time.Time) error {
	limit := cmp.Or(k.readyWithin, time.Minute)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		if nodeHeartbeat(ctx, k.cs, cluster.RealNode, since) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not Ready with a new heartbeat (its Lease renewed) within %s", cluster.RealNode, limit)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// nodeHeartbeat reports whether node is Ready and its Lease was renewed
// after since.
func nodeHeartbeat(ctx context.Context, cs kubernetes.Interface, node string, since time.Time) bool {
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil || !slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
		return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
	}) {
		return false
	}
	l, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, node, metav1.GetOptions{})
	return err == nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(since)
}

// container is the containerd id of the running main container of the pod
// of instance id.
func (k *kubeFaults) container(ctx context.Context, id string) (*corev1.Pod, string, error) {
	pods, err := k.cs.CoreV1().Pods(k.ns).List(ctx, metav1.ListOptions{LabelSelector: upck8s.LabelManaged + "=true," + upck8s.LabelInstance + "=" + id})
	if err != nil {
		return nil, "", fmt.Errorf("find instance %s's pod: %w", id, err)
	}
	if len(pods.Items) != 1 {
		return nil, "", fmt.Errorf("find instance %s's pod: %d pods carry its label", id, len(pods.Items))
	}
	p := &pods.Items[0]
	for _, c := range p.Status.ContainerStatuses {
		if c.Name != "main" {
			continue
		}
		cid, ok := strings.CutPrefix(c.ContainerID, "containerd://")
		if !ok || cid == "" || c.State.Running == nil {
			return nil, "", fmt.Errorf("instance %s: pod %s's container is not running under containerd (%q)", id, p.Name, c.ContainerID)
		}
		return p, cid, nil
	}
	return nil, "", fmt.Errorf("instance %s: pod %s has no main container", id, p.Name)
}

// KillInstance implements flow.Faults: SIGKILL to the PM's process through
// the node's containerd, as a crash would (deleting the pod would send
// SIGTERM first, which the PM handles). The kubelet then restarts the
// container, sealed, in the same pod; the flow deletes the instance and
// launches the PM again on the user's claim.
func (k *kubeFaults) KillInstance(ctx context.Context, id string) error {
	_, cid, err := k.container(ctx, id)
	if err != nil {
		return err
	}
	if err := k.ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", cid); err != nil {
		return fmt.Errorf("SIGKILL instance %s: %w", id, err)
	}
	return nil
}

// FreezeInstance implements flow.Faults: the PM's container is frozen
// (cgroup freezer) through the node's containerd, behind the router's and
// the kubelet's back. Thawing resumes it and waits until the pod is Ready
// again: its readiness probe fails while frozen, which takes it out of its
// Service until it answers again.
func (k *kubeFaults) FreezeInstance(ctx context.Context, id string) (func(context.Context) error, error) {
	p, cid, err := k.container(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := k.ctr(ctx, "tasks", "pause", cid); err != nil {
		return nil, fmt.Errorf("freeze instance %s: %w", id, err)
	}
	return func(ctx context.Context) error {
		if err := k.ctr(ctx, "tasks", "resume", cid); err != nil {
			return fmt.Errorf("thaw instance %s: %w", id, err)
		}
		return k.untilReady(ctx, p.Name)
	}, nil
}

// untilReady polls pod name until it is Ready or readyWithin passes.
func (k *kubeFaults) untilReady(ctx context.Context, name string) error {
	limit := k.readyWithin
	if limit <= 0 {
		limit = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		p, err := k.cs.CoreV1().Pods(k.ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s not Ready again within %s", name, limit)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
