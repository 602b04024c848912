package kubernetes

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// podKey is "i/<instance>" for an instance's pod, "p/<service>" for an
// unclaimed pool pod.
func podKey(obj any) string {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return ""
	}
	if id := p.Labels[LabelInstance]; id != "" {
		return "i/" + id
	}
	if s := p.Labels[LabelPool]; s != "" {
		return "p/" + s
	}
	if w := p.Labels[LabelWipe]; w != "" {
		return "w/" + w
	}
	return ""
}

func (b *Backend) wake(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.waiters[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// await re-evaluates cond on the cached pods under key at every pod event
// for that key until it reports done, an error, or ctx ends.
func (b *Backend) await(ctx context.Context, key string, cond func([]*corev1.Pod) (bool, error)) error {
	ch := make(chan struct{}, 1)
	b.mu.Lock()
	if b.waiters[key] == nil {
		b.waiters[key] = map[chan struct{}]struct{}{}
	}
	b.waiters[key][ch] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.waiters[key], ch)
		if len(b.waiters[key]) == 0 {
			delete(b.waiters, key)
		}
		b.mu.Unlock()
	}()
	for {
		done, err := cond(b.cached(key))
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (b *Backend) cached(key string) []*corev1.Pod {
	objs, _ := b.pods.GetIndexer().ByIndex("key", key)
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*corev1.Pod))
	}
	return out
}

// waitStarted waits, by watch, for a pod under key whose containers run (or
// that is Ready: simulated nodes report that at once); a pod that cannot
// start (image missing, crash loop, failed) ends the wait with its reason.
func (b *Backend) waitStarted(ctx context.Context, key string) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.ReadyTimeout)
	defer cancel()
	var ready *corev1.Pod
	var last string
	err := b.await(ctx, key, func(pods []*corev1.Pod) (bool, error) {
		for _, p := range pods {
			if p.DeletionTimestamp != nil {
				continue
			}
			if isReady(p) || isRunning(p) {
				ready = p
				return true, nil
			}
			if err := podFailure(p); err != nil {
				return false, err
			}
			last = podWaiting(p)
		}
		return false, nil
	})
	if err != nil {
		if ctx.Err() != nil && last != "" {
			err = fmt.Errorf("%w (pod: %s)", err, last)
		}
		return nil, fmt.Errorf("wait for a running pod: %w", err)
	}
	return ready, nil
}

func isReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func isRunning(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || len(p.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Running == nil {
			return false
		}
	}
	return true
}

// podFailure reports a pod that will not become Ready by itself.
func podFailure(p *corev1.Pod) error {
	if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
		return fmt.Errorf("pod %s %s: %s %s", p.Name, p.Status.Phase, p.Status.Reason, p.Status.Message)
	}
	// Init containers first: a PM's own-data init container runs the
	// same image, so a missing image shows there before the main one.
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff":
				return fmt.Errorf("pod %s: %s: %s", p.Name, w.Reason, w.Message)
			}
		}
	}
	return nil
}

func podWaiting(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			return fmt.Sprintf("%s %s: %s", p.Name, c.Type, c.Message)
		}
	}
	return fmt.Sprintf("%s %s", p.Name, p.Status.Phase)
}

// waitReady waits, by watch, for a Ready pod under key: on a simulated node
// its Ready status is all a launch can wait for.
func (b *Backend) waitReady(ctx context.Context, key string) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.ReadyTimeout)
	defer cancel()
	var ready *corev1.Pod
	err := b.await(ctx, key, func(pods []*corev1.Pod) (bool, error) {
		for _, p := range pods {
			if p.DeletionTimestamp == nil && isReady(p) {
				ready = p
				return true, nil
			}
			if err := podFailure(p); err != nil {
				return false, err
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("wait for a Ready pod: %w", err)
	}
	return ready, nil
}
