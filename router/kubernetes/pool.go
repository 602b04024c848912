package kubernetes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/e-mission/upc/router"
)

// The warm pool: per service, Options.WarmPool[service] Ready pods labelled
// upc.pool=<service> and no instance. A launch claims one by relabelling it
// (the instance's Service selects it at once) and the pool refills behind.
//
// A pool pod of a service with per-user volumes (the PM) mounts empty claims
// of its own, named <pod>-<volume>. Claiming the pod relabels them with the
// user's key, so they are the user's from then on: pause, resume and later
// launches find them by that label, as they find claims made for the user.
// The PM starts sealed and is keyed by its user after the claim, so a pool
// pod holds nothing of anyone before it is claimed.

var _ router.WarmPool = (*Backend)(nil)

// WarmPool reports, per pooled service, the Ready pool pods waiting to be
// claimed and the pool's configured size, from the pod watch's cache (no
// call to the API server): the router exports them as metrics.
func (b *Backend) WarmPool() []router.PoolSize {
	out := make([]router.PoolSize, 0, len(b.opts.WarmPool))
	for _, svc := range slices.Sorted(maps.Keys(b.opts.WarmPool)) {
		ready := 0
		for _, p := range b.cached("p/" + svc) {
			if p.DeletionTimestamp == nil && isReady(p) {
				ready++
			}
		}
		out = append(out, router.PoolSize{Service: svc, Ready: ready, Target: b.opts.WarmPool[svc]})
	}
	return out
}

func (b *Backend) poolSize() int {
	n := 0
	for _, k := range b.opts.WarmPool {
		n += k
	}
	return n
}

// poolSpec is the spec of service's pool pods, from the catalog.
func (b *Backend) poolSpec(service string) (router.Spec, bool) {
	s, ok := b.opts.Catalog.Lookup(service)
	if !ok {
		return router.Spec{}, false
	}
	return router.Spec{Service: s.Name, Image: s.Image, Digest: s.Digest, Port: s.Port, Health: s.Health,
		Env: s.Env, Resources: s.Resources, Volumes: s.Volumes}, true
}

// claimWarm relabels a Ready pool pod of spec's service as spec's instance.
// The patch carries the pod's resourceVersion, so two launches never claim
// the same pod. It reports false when no pool pod fits.
func (b *Backend) claimWarm(ctx context.Context, spec router.Spec) (bool, error) {
	if b.opts.WarmPool[spec.Service] == 0 {
		return false, nil
	}
	want, ok := b.poolSpec(spec.Service)
	if !ok || want.Image != spec.Image || want.Digest != spec.Digest || want.Port != spec.Port || !maps.Equal(want.Env, spec.Env) {
		return false, nil // the launch asks for another image or setting than the pool runs
	}
	pods := b.cached("p/" + spec.Service)
	slices.SortFunc(pods, func(x, y *corev1.Pod) int { return x.CreationTimestamp.Compare(y.CreationTimestamp.Time) })
	for _, p := range pods {
		if p.DeletionTimestamp != nil || !isReady(p) {
			continue
		}
		labels := map[string]any{LabelPool: nil, LabelInstance: string(spec.ID)}
		l := b.labels(spec)
		for _, k := range []string{LabelUser, LabelOwner, LabelPM} {
			if l[k] != "" {
				labels[k] = l[k]
			}
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
			"resourceVersion": p.ResourceVersion,
			"labels":          labels,
			"annotations":     map[string]string{AnnUser: spec.User, AnnOwner: spec.Owner},
		}})
		_, err := b.cs.CoreV1().Pods(b.opts.Namespace).Patch(ctx, p.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue // claimed by another launch, or gone
		}
		if err != nil {
			return false, fmt.Errorf("claim warm pod %s: %w", p.Name, err)
		}
		if err := b.giveClaims(ctx, p.Name, spec); err != nil {
			return false, err
		}
		b.kickRefill()
		return true, nil
	}
	b.kickRefill()
	return false, nil
}

// giveClaims makes a claimed pool pod's claims its user's.
func (b *Backend) giveClaims(ctx context.Context, podName string, spec router.Spec) error {
	for _, v := range spec.Volumes {
		if !v.PerUser {
			continue
		}
		labels := map[string]any{LabelPool: nil, LabelUserKey: UserKey(spec.User)}
		if labelValueRE.MatchString(spec.User) {
			labels[LabelUser] = spec.User
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
			"labels": labels, "annotations": map[string]string{AnnUser: spec.User}}})
		claim := poolClaim(podName, v.Name)
		if _, err := b.cs.CoreV1().PersistentVolumeClaims(b.opts.Namespace).Patch(ctx, claim, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("give claim %s of pool pod %s to %s: %w", claim, podName, spec.User, err)
		}
	}
	return nil
}

func poolClaim(podName, vol string) string { return podName + "-" + vol }

func (b *Backend) kickRefill() {
	select {
	case b.refill <- struct{}{}:
	default:
	}
}

// poolLoop keeps every pool full: at start, after each claim, and every few
// seconds in case a pool pod died.
func (b *Backend) poolLoop() {
	defer b.done.Done()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-b.stop; cancel() }()
	for {
		for _, svc := range slices.Sorted(maps.Keys(b.opts.WarmPool)) {
			if err := b.fill(ctx, svc); err != nil && ctx.Err() == nil {
				b.logger.Warn("warm pool refill", "service", svc, "err", err)
			}
		}
		select {
		case <-b.stop:
			return
		case <-b.refill:
		case <-tick.C:
		}
	}
}

func (b *Backend) fill(ctx context.Context, service string) error {
	want := b.opts.WarmPool[service]
	have := 0
	for _, p := range b.cached("p/" + service) {
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded {
			have++
		}
	}
	spec, ok := b.poolSpec(service)
	if !ok {
		return fmt.Errorf("%w: %s", router.ErrUnknownService, service)
	}
	for ; have < want; have++ {
		labels := b.labels(spec)
		labels[LabelPool] = spec.Service
		podName := fmt.Sprintf("upc-pool-%s-%s", spec.Service, randHex(4))
		claims := map[string]string{}
		for _, v := range spec.Volumes {
			if v.PerUser {
				c := poolClaim(podName, v.Name)
				cl := b.claimLabels("", v.Name)
				cl[LabelPool] = spec.Service
				if err := b.makeClaim(ctx, c, cl, "", v); err != nil {
					return err
				}
				claims[v.Name] = c
			}
		}
		pod := b.pod(podName, spec, labels, claims)
		if _, err := b.cs.CoreV1().Pods(b.opts.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create pool pod: %w", err)
		}
	}
	return nil
}

// WaitPool waits, by watch, until every pool has its Ready pods (benchmarks
// and tests start measuring from a full pool).
func (b *Backend) WaitPool(ctx context.Context) error {
	for svc, n := range b.opts.WarmPool {
		err := b.await(ctx, "p/"+svc, func(pods []*corev1.Pod) (bool, error) {
			ready := 0
			for _, p := range pods {
				if p.DeletionTimestamp == nil && isReady(p) {
					ready++
				}
			}
			return ready >= n, nil
		})
		if err != nil {
			return fmt.Errorf("warm pool of %s: %w", svc, err)
		}
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
