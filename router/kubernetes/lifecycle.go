package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/e-mission/upc/router"
)

func (b *Backend) annotate(ctx context.Context, svcName string, ann map[string]*string) (*corev1.Service, error) {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	svc, err := b.cs.CoreV1().Services(b.opts.Namespace).Patch(ctx, svcName, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("annotate service %s: %w", svcName, err)
	}
	return svc, nil
}

// service finds an instance's Service; ErrNotFound when it has none.
func (b *Backend) service(ctx context.Context, id router.ID) (*corev1.Service, error) {
	if err := router.ValidID(string(id)); err != nil {
		return nil, err
	}
	svc, err := b.cs.CoreV1().Services(b.opts.Namespace).Get(ctx, name(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && svc.Labels[LabelManaged] != "true") {
		return nil, fmt.Errorf("%w: %s", router.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("get service of %s: %w", id, err)
	}
	return svc, nil
}

// Pause deletes the instance's pod and waits until it is gone; the Service
// (its address) and the user's claim stay.
func (b *Backend) Pause(ctx context.Context, id router.ID) error {
	svc, err := b.service(ctx, id)
	if err != nil {
		return err
	}
	t := "true"
	if _, err := b.annotate(ctx, svc.Name, map[string]*string{AnnPaused: &t}); err != nil {
		return err
	}
	return b.deletePods(ctx, id)
}

// Resume makes a pod again for a paused instance, on the same claim, and
// waits until it runs.
func (b *Backend) Resume(ctx context.Context, id router.ID) error {
	svc, err := b.service(ctx, id)
	if err != nil {
		return err
	}
	if svc.Annotations[AnnPaused] != "true" {
		return nil
	}
	var spec router.Spec
	if err := json.Unmarshal([]byte(svc.Annotations[AnnSpec]), &spec); err != nil {
		return fmt.Errorf("resume %s: service %s has no readable spec: %w", id, svc.Name, err)
	}
	if len(b.cached("i/"+string(id))) == 0 {
		if _, err := b.start(ctx, svc, spec, false); err != nil {
			return fmt.Errorf("resume %s: %w", id, err)
		}
	}
	if _, err := b.annotate(ctx, svc.Name, map[string]*string{AnnPaused: nil}); err != nil {
		return err
	}
	return nil
}

// Destroy removes the instance's Service, pod and NetworkPolicy; per-user
// claims stay.
func (b *Backend) Destroy(ctx context.Context, id router.ID) error {
	svc, err := b.service(ctx, id)
	if errors.Is(err, router.ErrNotFound) && len(b.cached("i/"+string(id))) > 0 {
		err = nil // a pod whose Service is gone: remove it too
	}
	if err != nil {
		return err
	}
	if svc != nil {
		err := b.cs.CoreV1().Services(b.opts.Namespace).Delete(ctx, svc.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete service of %s: %w", id, err)
		}
	}
	if err := b.deletePods(ctx, id); err != nil {
		return err
	}
	// Last: the pod never runs without its policy.
	return b.deletePolicy(ctx, id)
}

// deletePods deletes the instance's pods and waits, by watch, until they are gone.
func (b *Backend) deletePods(ctx context.Context, id router.ID) error {
	grace := int64(b.opts.GracePeriod.Seconds())
	err := b.cs.CoreV1().Pods(b.opts.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &grace},
		metav1.ListOptions{LabelSelector: LabelManaged + "=true," + LabelInstance + "=" + string(id)})
	if err != nil {
		return fmt.Errorf("delete pods of %s: %w", id, err)
	}
	wctx, cancel := context.WithTimeout(ctx, b.opts.GracePeriod+b.opts.ReadyTimeout)
	defer cancel()
	if err := b.await(wctx, "i/"+string(id), func(p []*corev1.Pod) (bool, error) { return len(p) == 0, nil }); err != nil {
		return fmt.Errorf("wait for the pods of %s to go: %w", id, err)
	}
	return nil
}

// List reports every instance from the API server (not the cache: a router
// restarting must see everything): one per UPC Service, its state from its
// pods.
func (b *Backend) List(ctx context.Context) ([]router.Instance, error) {
	sel := metav1.ListOptions{LabelSelector: LabelManaged + "=true," + LabelInstance}
	svcs, err := b.cs.CoreV1().Services(b.opts.Namespace).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	pods, err := b.cs.CoreV1().Pods(b.opts.Namespace).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	byID := map[string][]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		byID[p.Labels[LabelInstance]] = append(byID[p.Labels[LabelInstance]], p)
	}
	out := make([]router.Instance, 0, len(svcs.Items))
	for i := range svcs.Items {
		s := &svcs.Items[i]
		out = append(out, b.instance(s, byID[s.Labels[LabelInstance]]))
	}
	return out, nil
}

// instance is what the router sees of a Service and its pods.
func (b *Backend) instance(svc *corev1.Service, pods []*corev1.Pod) router.Instance {
	in := router.Instance{
		ID: router.ID(svc.Labels[LabelInstance]), Service: svc.Labels[LabelService], User: svc.Annotations[AnnUser],
		Owner: svc.Annotations[AnnOwner], PM: router.ID(svc.Annotations[AnnPM]),
		Address: svc.Annotations[AnnAddress], Image: svc.Annotations[AnnImage], Digest: svc.Annotations[AnnDigest],
		Created: svc.CreationTimestamp.Time, State: router.StateDead,
		// Recorded at launch from the node; honoured only while simulated
		// nodes are accepted (a router restarted without probes them again).
		Simulated: b.opts.SimulatedNodes && svc.Annotations[AnnSimulated] == "true",
	}
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		in.Machine = p.Spec.NodeName
		if p.Status.Phase == corev1.PodPending || p.Status.Phase == corev1.PodRunning {
			in.State = router.StateRunning
		}
	}
	if in.State == router.StateDead && svc.Annotations[AnnPaused] == "true" && in.Address != "" {
		in.State = router.StatePaused
	}
	return in
}

// Clear removes every instance (Services, their pods and NetworkPolicies)
// and any policy left without its instance; claims and the warm pool stay.
func (b *Backend) Clear(ctx context.Context) (int, error) {
	all, err := b.List(ctx)
	if err != nil {
		return 0, fmt.Errorf("clear: %w", err)
	}
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, in := range all {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := b.Destroy(ctx, in.ID); err != nil && !errors.Is(err, router.ErrNotFound) {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	n := 0
	for _, e := range errs {
		if e == nil {
			n++
		}
	}
	if err := errors.Join(errs...); err != nil {
		return n, err
	}
	_, err = b.orphanPolicies(ctx, nil)
	return n, err
}
