// Package kubernetes is the router's Kubernetes backend (client-go): per
// instance a Pod and a NodePort Service carrying upc.* labels, readiness
// learnt from a pod watch, per-user data on PersistentVolumeClaims that
// outlive pods, and an optional warm pool of ready pods per service.
//
// Pause deletes the pod and keeps the Service (so the address stays) and the
// claim; resume creates a pod again on the same claim. Everything the router
// needs to know after a restart is in the Services' labels and annotations.
package kubernetes

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/router"
)

// Labels and annotations on UPC's objects.
const (
	LabelManaged  = "upc.managed" // "true" on every pod and Service the backend makes
	LabelInstance = "upc.instance"
	LabelService  = "upc.service"
	LabelUser     = "upc.user"     // the user when it is a valid label value (see AnnUser)
	LabelPool     = "upc.pool"     // service name, on warm pool pods not yet claimed
	LabelClaim    = "upc.claim"    // "true" on per-user claims and their volumes
	LabelUserKey  = "upc.user-key" // on claims: a hash of their user, by which a user's claims are found
	LabelVolume   = "upc.volume"   // on claims: the catalog volume they hold

	AnnUser    = "upc.user" // the user, always (labels cannot hold every user name)
	AnnImage   = "upc.image"
	AnnDigest  = "upc.digest"
	AnnAddress = "upc.address" // http://node:nodePort, fixed at launch
	AnnPaused  = "upc.paused"  // "true" while the instance is paused
	AnnSpec    = "upc.spec"    // the launch spec, to make the pod again on resume
)

var (
	_ router.Backend = (*Backend)(nil)
	_ router.Clearer = (*Backend)(nil)
)

// Options tune a Backend.
type Options struct {
	// Namespace holds every object; default "upc".
	Namespace string
	// NodeSelector places pods (e.g. upc.node=real on the local cluster).
	NodeSelector map[string]string
	// NodeAddress, when set, is the host in every instance address; else the
	// InternalIP of the node the first pod ran on (node ports are open on
	// every node, so the address stays valid when a pod moves).
	NodeAddress string
	// Labels are added to every object (tests add upc.test=1).
	Labels map[string]string
	// GracePeriod is the pods' terminationGracePeriodSeconds: our services
	// stop on SIGTERM in well under a second. Default 1s.
	GracePeriod time.Duration
	// ReadyTimeout bounds the wait for a pod to be Ready. Default 2m.
	ReadyTimeout time.Duration
	// ImageByID runs images by their ID (Spec.Digest) where one is pinned,
	// for clusters whose nodes hold our images already (the local cluster);
	// else pods run Spec.Image.
	ImageByID bool
	// PullPolicy of the containers; default IfNotPresent.
	PullPolicy corev1.PullPolicy
	// StorageClass of per-user claims. Empty means no class: with
	// HostPathDir set the backend binds each claim to a hostPath volume it
	// makes (the local cluster's provisioner); on another cluster, name a
	// dynamic class.
	StorageClass string
	// HostPathDir is the folder on the node where per-user volumes live
	// when StorageClass is empty.
	HostPathDir string
	// WarmPool is the number of ready pods kept per service, claimed on
	// launch and refilled. Pool pods of services with per-user volumes go
	// to new users only (see pool.go).
	WarmPool map[string]int
	// Catalog describes the pooled services' pods.
	Catalog *conf.Catalog
}

// Backend implements router.Backend on a Kubernetes cluster.
type Backend struct {
	cs     kubernetes.Interface
	opts   Options
	logger *slog.Logger

	factory informers.SharedInformerFactory
	pods    cache.SharedIndexInformer
	stop    chan struct{}
	done    sync.WaitGroup
	refill  chan struct{}

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{} // instance or pool → wakeups
	users   [64]sync.Mutex                        // by user hash: one claim lookup-or-make at a time per user
	nodes   map[string]string                     // node name → InternalIP
	closed  bool
}

// New starts the backend's pod watch (and warm pool, if any) and waits for
// its cache to sync. Close stops them.
func New(ctx context.Context, cs kubernetes.Interface, opts Options, logger *slog.Logger) (*Backend, error) {
	opts.Namespace = cmp.Or(opts.Namespace, "upc")
	opts.GracePeriod = cmp.Or(opts.GracePeriod, time.Second)
	opts.ReadyTimeout = cmp.Or(opts.ReadyTimeout, 2*time.Minute)
	opts.PullPolicy = cmp.Or(opts.PullPolicy, corev1.PullIfNotPresent)
	var errs []error
	for svc, n := range opts.WarmPool {
		if n < 0 {
			errs = append(errs, fmt.Errorf("warm pool of %s: size %d is negative", svc, n))
		}
		if n == 0 {
			continue
		}
		if opts.Catalog == nil {
			errs = append(errs, fmt.Errorf("warm pool of %s: no catalog to describe its pods", svc))
			continue
		}
		if _, ok := opts.Catalog.Lookup(svc); !ok {
			errs = append(errs, fmt.Errorf("warm pool of %s: %w", svc, router.ErrUnknownService))
		}
	}
	if opts.StorageClass == "" && opts.HostPathDir != "" && !strings.HasPrefix(opts.HostPathDir, "/") {
		errs = append(errs, fmt.Errorf("host path dir %q must be absolute", opts.HostPathDir))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("kubernetes backend: %w", err)
	}
	b := &Backend{
		cs: cs, opts: opts, logger: cmp.Or(logger, slog.New(slog.DiscardHandler)),
		stop: make(chan struct{}), refill: make(chan struct{}, 1),
		waiters: map[string]map[chan struct{}]struct{}{}, nodes: map[string]string{},
	}
	b.factory = informers.NewSharedInformerFactoryWithOptions(cs, 0,
		informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelManaged + "=true" }))
	b.pods = b.factory.Core().V1().Pods().Informer()
	if err := b.pods.AddIndexers(cache.Indexers{"key": func(obj any) ([]string, error) {
		if k := podKey(obj); k != "" {
			return []string{k}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("kubernetes backend: %w", err)
	}
	wake := func(obj any) {
		if k := podKey(obj); k != "" {
			b.wake(k)
		}
	}
	if _, err := b.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: wake,
		UpdateFunc: func(old, obj any) {
			wake(old) // a claimed pool pod changes key
			wake(obj)
		},
		DeleteFunc: wake,
	}); err != nil {
		return nil, fmt.Errorf("kubernetes backend: %w", err)
	}
	b.factory.Start(b.stop)
	syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), b.pods.HasSynced) {
		close(b.stop)
		return nil, fmt.Errorf("kubernetes backend: pod watch in namespace %s did not sync: %w", opts.Namespace, cmp.Or(syncCtx.Err(), errors.New("stopped")))
	}
	if b.poolSize() > 0 {
		b.done.Add(1)
		go b.poolLoop()
	}
	return b, nil
}

// Close stops the watch and the warm pool's refill; pods stay.
func (b *Backend) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.factory.Shutdown()
	b.done.Wait()
}

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

func name(id router.ID) string { return "upc-" + string(id) }

// Launch makes the instance's Service (the API server allocates its node
// port), then its pod (a warm one when the pool has it), and returns once
// the pod runs.
func (b *Backend) Launch(ctx context.Context, spec router.Spec) (router.Instance, error) {
	if err := router.ValidID(string(spec.ID)); err != nil {
		return router.Instance{}, err
	}
	if err := router.ValidUser(spec.User); err != nil {
		return router.Instance{}, err
	}
	if spec.Port < 1 || spec.Port > 65535 || spec.Image == "" || spec.Service == "" {
		return router.Instance{}, fmt.Errorf("%w: spec needs a service, an image and a port (got %q, %q, %d)", router.ErrInvalid, spec.Service, spec.Image, spec.Port)
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return router.Instance{}, fmt.Errorf("encode spec: %w", err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name(spec.ID), Labels: b.labels(spec), Annotations: map[string]string{
			AnnUser: spec.User, AnnImage: spec.Image, AnnDigest: spec.Digest, AnnSpec: string(raw),
		}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeNodePort,
			Selector: map[string]string{LabelInstance: string(spec.ID)},
			// The router's health probe, not the pod's readiness, decides
			// when a launch is done: it must reach a starting pod, and see
			// its 503 when it never turns healthy.
			PublishNotReadyAddresses: true,
			Ports:                    []corev1.ServicePort{{Name: "http", Port: int32(spec.Port), TargetPort: intstr.FromInt32(int32(spec.Port)), Protocol: corev1.ProtocolTCP}},
		},
	}
	svc, err = b.cs.CoreV1().Services(b.opts.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		if apierrors.IsAlreadyExists(err) {
			return router.Instance{}, fmt.Errorf("%w: instance %s exists", router.ErrInvalid, spec.ID)
		}
		return router.Instance{}, fmt.Errorf("create service: %w", err)
	}
	in, err := b.start(ctx, svc, spec, true)
	if err != nil {
		// The caller's context may be what failed the launch: still clean up.
		if derr := b.Destroy(context.WithoutCancel(ctx), spec.ID); derr != nil && !errors.Is(derr, router.ErrNotFound) {
			err = errors.Join(err, fmt.Errorf("remove failed launch: %w", derr))
		}
		return router.Instance{}, err
	}
	return in, nil
}

// start gives the instance a running pod (a Ready one claimed from the pool
// when allowed) and fixes its address on the Service. Whether the service in
// it answers is the router's health probe's business, as in Docker mode.
//
// A service with per-user volumes mounts the user's claims. A user who has
// none yet may take a pool pod: its claims, made empty with it, become the
// user's. A user with data always gets a new pod on their own claims.
func (b *Backend) start(ctx context.Context, svc *corev1.Service, spec router.Spec, pool bool) (router.Instance, error) {
	claimed := false
	var claims map[string]string
	if hasPerUser(spec.Volumes) {
		mu := &b.users[userKeyByte(spec.User)%byte(len(b.users))]
		mu.Lock()
		defer mu.Unlock()
		var err error
		if claims, err = b.userClaims(ctx, spec.User); err != nil {
			return router.Instance{}, err
		}
		pool = pool && len(claims) == 0
	}
	if pool {
		var err error
		if claimed, err = b.claimWarm(ctx, spec); err != nil {
			return router.Instance{}, err
		}
	}
	if !claimed {
		for _, v := range spec.Volumes {
			if v.PerUser && claims[v.Name] == "" {
				c := ClaimName(spec.User, v.Name)
				if err := b.makeClaim(ctx, c, b.claimLabels(spec.User, v.Name), spec.User, v); err != nil {
					return router.Instance{}, err
				}
				claims[v.Name] = c
			}
		}
		pod := b.pod(name(spec.ID), spec, b.labels(spec), claims)
		if _, err := b.cs.CoreV1().Pods(b.opts.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return router.Instance{}, fmt.Errorf("create pod: %w", err)
		}
	}
	pod, err := b.waitStarted(ctx, "i/"+string(spec.ID))
	if err != nil {
		return router.Instance{}, fmt.Errorf("instance %s: %w", spec.ID, err)
	}
	addr := svc.Annotations[AnnAddress]
	if addr == "" {
		host, err := b.nodeAddress(ctx, pod)
		if err != nil {
			return router.Instance{}, err
		}
		addr = "http://" + net.JoinHostPort(host, strconv.Itoa(int(svc.Spec.Ports[0].NodePort)))
		svc, err = b.annotate(ctx, svc.Name, map[string]*string{AnnAddress: &addr})
		if err != nil {
			return router.Instance{}, err
		}
	}
	return b.instance(svc, []*corev1.Pod{pod}), nil
}

func (b *Backend) labels(spec router.Spec) map[string]string {
	l := maps.Clone(b.opts.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l[LabelManaged] = "true"
	l[LabelService] = spec.Service
	if spec.ID != "" {
		l[LabelInstance] = string(spec.ID)
	}
	if labelValueRE.MatchString(spec.User) {
		l[LabelUser] = spec.User
	}
	return l
}

var labelValueRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)

// pod is the pod of spec: pinned image, prompt stop, no service links (a
// thousand Services would otherwise become environment variables) and no
// API token (our services do not call the API).
// claims names the claim of each per-user volume.
func (b *Backend) pod(podName string, spec router.Spec, labels map[string]string, claims map[string]string) *corev1.Pod {
	image := spec.Image
	if b.opts.ImageByID && spec.Digest != "" {
		image = spec.Digest
	}
	grace := int64(b.opts.GracePeriod.Seconds())
	c := corev1.Container{
		Name: "main", Image: image, ImagePullPolicy: b.opts.PullPolicy,
		Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: int32(spec.Port), Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: readiness(spec),
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
		c.Env = append(c.Env, corev1.EnvVar{Name: k, Value: spec.Env[k]})
	}
	if r := spec.Resources; r.CPUMillis > 0 || r.MemoryMB > 0 {
		// Requests stay small so a node holds many idle instances; limits bound them.
		c.Resources.Limits = corev1.ResourceList{}
		c.Resources.Requests = corev1.ResourceList{}
		if r.CPUMillis > 0 {
			c.Resources.Limits[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(r.CPUMillis), resource.DecimalSI)
			c.Resources.Requests[corev1.ResourceCPU] = *resource.NewMilliQuantity(1, resource.DecimalSI)
		}
		if r.MemoryMB > 0 {
			c.Resources.Limits[corev1.ResourceMemory] = *resource.NewQuantity(int64(r.MemoryMB)<<20, resource.BinarySI)
			c.Resources.Requests[corev1.ResourceMemory] = *resource.NewQuantity(8<<20, resource.BinarySI)
		}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Labels: labels, Annotations: map[string]string{AnnUser: spec.User, AnnDigest: spec.Digest}},
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{c},
			NodeSelector:                  b.opts.NodeSelector,
			TerminationGracePeriodSeconds: &grace,
			EnableServiceLinks:            new(false),
			AutomountServiceAccountToken:  new(false),
			RestartPolicy:                 corev1.RestartPolicyAlways,
		},
	}
	for _, v := range spec.Volumes {
		vol := corev1.Volume{Name: v.Name}
		if v.PerUser {
			vol.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claims[v.Name]}
		} else {
			vol.EmptyDir = &corev1.EmptyDirVolumeSource{}
		}
		p.Spec.Volumes = append(p.Spec.Volumes, vol)
		p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: v.Name, MountPath: v.Path})
	}
	return p
}

// readiness marks the pod Ready once its health path answers: the warm
// pool hands out only Ready pods.
func readiness(spec router.Spec) *corev1.Probe {
	if spec.Health == "" {
		return nil
	}
	return &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: spec.Health, Port: intstr.FromInt32(int32(spec.Port))}},
		PeriodSeconds: 1, TimeoutSeconds: 1, FailureThreshold: 3,
	}
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
	for _, cs := range p.Status.ContainerStatuses {
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

// nodeAddress is Options.NodeAddress or the InternalIP of the pod's node.
func (b *Backend) nodeAddress(ctx context.Context, pod *corev1.Pod) (string, error) {
	if b.opts.NodeAddress != "" {
		return b.opts.NodeAddress, nil
	}
	b.mu.Lock()
	ip, ok := b.nodes[pod.Spec.NodeName]
	b.mu.Unlock()
	if ok {
		return ip, nil
	}
	n, err := b.cs.CoreV1().Nodes().Get(ctx, pod.Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("node of pod %s: %w", pod.Name, err)
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ip = a.Address
			break
		}
	}
	if ip == "" {
		ip = pod.Status.HostIP
	}
	if ip == "" {
		return "", fmt.Errorf("node %s reports no InternalIP", n.Name)
	}
	b.mu.Lock()
	b.nodes[n.Name] = ip
	b.mu.Unlock()
	return ip, nil
}

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

// Destroy removes the instance's Service and pod; per-user claims stay.
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
	return b.deletePods(ctx, id)
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
		Address: svc.Annotations[AnnAddress], Image: svc.Annotations[AnnImage], Digest: svc.Annotations[AnnDigest],
		Created: svc.CreationTimestamp.Time, State: router.StateDead,
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

// Clear removes every instance (Services and their pods); claims and the
// warm pool stay.
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
	return n, errors.Join(errs...)
}

func hasPerUser(vs []conf.Volume) bool {
	return slices.ContainsFunc(vs, func(v conf.Volume) bool { return v.PerUser })
}

// ClaimName is the PersistentVolumeClaim holding user's volume vol: readable,
// and unique even for users whose names differ only in case or punctuation.
func ClaimName(user, vol string) string {
	sum := sha256.Sum256([]byte(user))
	clean := strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(user), "-"), "-")
	if len(clean) > 30 {
		clean = clean[:30]
	}
	return "upc-" + vol + "-" + cmp.Or(clean, "u") + "-" + hex.EncodeToString(sum[:4])
}

// UserKey is the claims' upc.user-key label of user: a hash, since labels
// cannot hold every user name.
func UserKey(user string) string {
	sum := sha256.Sum256([]byte(user))
	return hex.EncodeToString(sum[:12])
}

func userKeyByte(user string) byte {
	sum := sha256.Sum256([]byte(user))
	return sum[0]
}

func (b *Backend) claimLabels(user, vol string) map[string]string {
	labels := maps.Clone(b.opts.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelClaim] = "true"
	labels[LabelVolume] = vol
	if user != "" {
		labels[LabelUserKey] = UserKey(user)
	}
	if labelValueRE.MatchString(user) {
		labels[LabelUser] = user
	}
	return labels
}

// userClaims finds user's claims, by volume, whether the backend made them
// for the user or they came with a pool pod.
func (b *Backend) userClaims(ctx context.Context, user string) (map[string]string, error) {
	list, err := b.cs.CoreV1().PersistentVolumeClaims(b.opts.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: LabelClaim + "=true," + LabelUserKey + "=" + UserKey(user)})
	if err != nil {
		return nil, fmt.Errorf("find the claims of %s: %w", user, err)
	}
	out := map[string]string{}
	for _, c := range list.Items {
		if c.Annotations[AnnUser] == user && c.DeletionTimestamp == nil {
			out[c.Labels[LabelVolume]] = c.Name
		}
	}
	return out, nil
}

// makeClaim makes the claim if it does not exist, and with no storage class
// a hostPath volume bound to it first (the local cluster has no provisioner;
// the backend is one).
func (b *Backend) makeClaim(ctx context.Context, claim string, labels map[string]string, user string, v conf.Volume) error {
	size := resource.NewQuantity(int64(cmp.Or(v.SizeMB, 64))<<20, resource.BinarySI)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claim, Labels: labels, Annotations: map[string]string{AnnUser: user}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *size}},
		},
	}
	if b.opts.StorageClass != "" {
		pvc.Spec.StorageClassName = &b.opts.StorageClass
	} else {
		if b.opts.HostPathDir == "" {
			return fmt.Errorf("claim %s: no storage class and no host path dir to make its volume in", claim)
		}
		pvName := "upc-" + b.opts.Namespace + "-" + claim
		pvLabels := maps.Clone(labels)
		pvLabels["upc.namespace"] = b.opts.Namespace
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: pvName, Labels: pvLabels},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *size},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              "",
				ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: b.opts.Namespace, Name: claim},
				PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
					Path: strings.TrimRight(b.opts.HostPathDir, "/") + "/" + b.opts.Namespace + "/" + claim,
					Type: new(corev1.HostPathDirectoryOrCreate),
				}},
			},
		}
		// Bound both ways at birth (the volume's claimRef, the claim's
		// volumeName); the volume controller completes the binding. Marking
		// the claim bound-completed ourselves would spare the scheduler's
		// back-off, but the controller then marks it Lost for good whenever
		// its cache has not seen the volume yet.
		_, err := b.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = b.reclaim(ctx, pvName, claim)
		}
		if err != nil {
			return fmt.Errorf("create volume %s for claim %s: %w", pvName, claim, err)
		}
		pvc.Spec.StorageClassName = new("")
		pvc.Spec.VolumeName = pvName
	}
	_, err := b.cs.CoreV1().PersistentVolumeClaims(b.opts.Namespace).Create(ctx, pvc, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create claim %s: %w", claim, err)
	}
	return nil
}

// reclaim readies a kept volume for its user's new claim. Volumes are
// retained (they hold the user's data), so one can outlive its claim, e.g.
// when the namespace was removed and made again; it still names the old
// claim's UID, and the volume controller would never bind the new claim to
// it. Dropping the UID lets it bind the user's new claim to their data.
func (b *Backend) reclaim(ctx context.Context, pvName, claim string) error {
	pv, err := b.cs.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	ref := pv.Spec.ClaimRef
	if ref == nil || ref.Name != claim || ref.Namespace != b.opts.Namespace || ref.UID == "" {
		return nil
	}
	old, err := b.cs.CoreV1().PersistentVolumeClaims(b.opts.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err == nil && old.UID == ref.UID {
		return nil // still bound to the claim that exists
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	patch := []byte(`{"spec":{"claimRef":{"uid":null,"resourceVersion":null}}}`)
	if _, err := b.cs.CoreV1().PersistentVolumes().Patch(ctx, pvName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("release kept volume for a new claim: %w", err)
	}
	b.logger.Info("kept volume bound again to its user's new claim", "volume", pvName, "claim", claim)
	return nil
}

// TuneClient sets what the backend needs of its API client: a request rate
// that does not cap launches (client-go's default, 5/s, would hold them to
// about two a second) and protobuf, which costs the API server much less to
// encode and decode than JSON (it is the bottleneck of a launch storm).
func TuneClient(rc *rest.Config) {
	rc.QPS, rc.Burst = 500, 1000
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	rc.ContentType = "application/vnd.kubernetes.protobuf"
}
