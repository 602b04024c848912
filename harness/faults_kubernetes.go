package harness

import (
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

	"github.com/e-mission/upc/harness/flow"
	"github.com/e-mission/upc/harness/scenario"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// kubernetesFaults are the fault kinds a kubernetes-mode run injects, and
// why each other kind is refused there.
var (
	kubernetesFaults       = []string{scenario.RestartRouter, scenario.KillPMUpload, scenario.PausePM}
	kubernetesFaultRefusal = map[string]string{
		scenario.KillAgent: "the local cluster has one real node, whose kubelet every pod on it depends on (other runs' and tests' too): " +
			"killing it is not done to a shared cluster; kill-agent runs on the docker backend",
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
		if st.Kind != scenario.RestartRouter {
			return flow.DeploymentFault{}, fmt.Errorf("fault %s is refused on the kubernetes backend", st.Kind)
		}
		return k.restartRouter(ctx)
	})
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
