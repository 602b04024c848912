package kubernetes

import (
	"context"
	"fmt"
	"maps"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/internal/owndata"
	"github.com/e-mission/upc/router"
)

// Hardening of every instance pod (docs/security.md#hardening): the
// images' non-root user, no service-account token, the runtime's default
// seccomp profile; in the container a read-only root, no capabilities, no
// privilege escalation, and an emptyDir at /tmp. Process limits are the
// kubelet's (podPidsLimit), not the pod's.

// DefaultPMRouterPods are the labels of the router's pods that a PM's
// NetworkPolicy admits when Options.PMRouterPods is nil: upc infra's.
var DefaultPMRouterPods = map[string]string{"upc.component": "router"}

// LabelPM is on the pods of a service bound to a PM: the PM's instance ID,
// which the PM's NetworkPolicy admits.
const LabelPM = "upc.pm"

// OwnDataContainer is the name of the init container that gives hostPath
// volumes to the images' user.
const OwnDataContainer = "own-data"

func podSecurity() *corev1.PodSecurityContext {
	uid, gid := int64(images.UID), int64(images.GID)
	return &corev1.PodSecurityContext{
		RunAsNonRoot: new(true), RunAsUser: &uid, RunAsGroup: &gid,
		// fsGroup gives volumes that support it (emptyDir, most dynamic
		// classes) to the group; hostPath is not one: see ownData.
		FSGroup:             &gid,
		FSGroupChangePolicy: new(corev1.FSGroupChangeOnRootMismatch),
		SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func containerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		ReadOnlyRootFilesystem:   new(true),
		AllowPrivilegeEscalation: new(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// tmpVolume is the pod's /tmp: a small emptyDir in memory.
func tmpVolume() (corev1.Volume, corev1.VolumeMount) {
	size := resource.MustParse("16Mi")
	return corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &size}}},
		corev1.VolumeMount{Name: "tmp", MountPath: "/tmp"}
}

// ownData is the init container of a pod whose per-user claims are bound to
// hostPath volumes (no storage class: the local cluster). The kubelet makes
// a hostPath directory as root and fsGroup does not apply to it, and a PM
// that ran as root left root's files; the service runs as 65532 and could
// not write either. So before it, the service's own image runs its own-data
// subcommand (internal/owndata) on the claims' mounts: as root, the only
// thing in UPC that is, with every capability dropped but CAP_CHOWN, no
// privilege escalation, a read-only root, no network use, and exits.
func ownData(image string, pull corev1.PullPolicy, mounts []corev1.VolumeMount) corev1.Container {
	root := int64(0)
	args := []string{owndata.Command, images.User}
	for _, m := range mounts {
		args = append(args, m.MountPath)
	}
	return corev1.Container{
		Name: OwnDataContainer, Image: image, ImagePullPolicy: pull, Args: args, VolumeMounts: mounts,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: &root, RunAsGroup: &root, RunAsNonRoot: new(false),
			ReadOnlyRootFilesystem:   new(true),
			AllowPrivilegeEscalation: new(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"CHOWN"}},
		},
	}
}

// guarded reports whether spec's instance gets a NetworkPolicy of its own:
// it holds a user's data (per-user volumes), as a PM does.
func guarded(spec router.Spec) bool { return hasPerUser(spec.Volumes) }

func policyName(id router.ID) string { return name(id) }

// policy is the NetworkPolicy of a PM instance: its pod admits, on its
// port, only the pods of services bound to it (upc.pm=<id>), the router's
// pods (Options.PMRouterPods) and the networks of Options.PMClients.
// Everything else in the cluster is refused, where the network plugin
// enforces policies (the local cluster's bridge does not).
func (b *Backend) policy(spec router.Spec) *networkingv1.NetworkPolicy {
	port := intstr.FromInt32(int32(spec.Port))
	tcp := corev1.ProtocolTCP
	from := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
		LabelManaged: "true", LabelPM: string(spec.ID)}}}}
	if len(b.opts.PMRouterPods) > 0 {
		from = append(from, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: maps.Clone(b.opts.PMRouterPods)}})
	}
	for _, c := range b.opts.PMClients {
		from = append(from, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: c}})
	}
	labels := b.labels(spec)
	delete(labels, LabelPool)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policyName(spec.ID), Labels: labels, Annotations: map[string]string{AnnUser: spec.User}},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelManaged: "true", LabelInstance: string(spec.ID)}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
				From:  from,
			}},
		},
	}
}

// ensurePolicy makes spec's NetworkPolicy if it has none (a launch, or a
// resume of a PM launched before policies were made), before its pod.
func (b *Backend) ensurePolicy(ctx context.Context, spec router.Spec) error {
	if !guarded(spec) {
		return nil
	}
	_, err := b.cs.NetworkingV1().NetworkPolicies(b.opts.Namespace).Create(ctx, b.policy(spec), metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create network policy of %s: %w", spec.ID, err)
	}
	return nil
}

// deletePolicy removes the instance's NetworkPolicy, if any.
func (b *Backend) deletePolicy(ctx context.Context, id router.ID) error {
	err := b.cs.NetworkingV1().NetworkPolicies(b.opts.Namespace).Delete(ctx, policyName(id), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete network policy of %s: %w", id, err)
	}
	return nil
}

// orphanPolicies removes the backend's NetworkPolicies whose instance has no
// Service any more (a router stopped between the two deletions).
func (b *Backend) orphanPolicies(ctx context.Context, live map[string]bool) (int, error) {
	list, err := b.cs.NetworkingV1().NetworkPolicies(b.opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelManaged + "=true," + LabelInstance})
	if err != nil {
		return 0, fmt.Errorf("list network policies: %w", err)
	}
	n := 0
	for _, p := range list.Items {
		id := p.Labels[LabelInstance]
		if live[id] {
			continue
		}
		if err := b.deletePolicy(ctx, router.ID(id)); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func validCIDRs(cidrs []string) error {
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err != nil || p.Masked() != p {
			return fmt.Errorf("pm clients: %q is not a network in CIDR notation", c)
		}
	}
	return nil
}

// dropOrphanPolicies removes, at start, the policies of instances whose
// Service is gone; a failure is logged and left for Clear.
func (b *Backend) dropOrphanPolicies(ctx context.Context) {
	svcs, err := b.cs.CoreV1().Services(b.opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelManaged + "=true," + LabelInstance})
	if err == nil {
		live := map[string]bool{}
		for _, s := range svcs.Items {
			live[s.Labels[LabelInstance]] = true
		}
		var n int
		if n, err = b.orphanPolicies(ctx, live); n > 0 {
			b.logger.Info("removed network policies of instances that are gone", "count", n)
		}
	}
	if err != nil {
		b.logger.Warn("network policies of instances that are gone", "err", err)
	}
}
