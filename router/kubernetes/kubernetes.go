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
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	LabelOwner    = "upc.owner"    // the launching router identity when it is a valid label value (see AnnOwner)

	AnnUser    = "upc.user" // the user, always (labels cannot hold every user name)
	AnnImage   = "upc.image"
	AnnDigest  = "upc.digest"
	AnnAddress = "upc.address" // http://node:nodePort, fixed at launch
	AnnPaused  = "upc.paused"  // "true" while the instance is paused
	AnnSpec    = "upc.spec"    // the launch spec, to make the pod again on resume
	AnnOwner   = "upc.owner"   // the router identity that launched it, always (only it and admins act on it)
	AnnPM      = "upc.pm"      // the PM instance a bound service reaches
	// AnnSimulated is "true" on the Service of an instance whose pod was
	// bound to a simulated node (AnnKwokNode) with Options.SimulatedNodes on.
	AnnSimulated = "upc.simulated"

	// AnnKwokNode is kwok's annotation on the nodes it simulates (value
	// KwokNodeFake): their pods run no process.
	AnnKwokNode  = "kwok.x-k8s.io/node"
	KwokNodeFake = "fake"
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
	// NodeAddressType is the node address used when NodeAddress is empty:
	// corev1.NodeInternalIP (the default) or corev1.NodeExternalIP, for
	// clients outside the cluster's network.
	NodeAddressType corev1.NodeAddressType
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
	// PMRouterPods are the labels of the router's pods, in Namespace, that
	// each PM's NetworkPolicy admits; nil means DefaultPMRouterPods, an
	// empty map none (a router outside the cluster: see PMClients).
	PMRouterPods map[string]string
	// PMClients are the networks (CIDRs) each PM's NetworkPolicy admits
	// besides: a router outside the cluster, clients at the node ports.
	PMClients []string
	// SimulatedNodes accepts a pod's Ready status as a launch's end on
	// kwok's simulated nodes (AnnKwokNode), where nothing runs to answer a
	// health probe: the instance is reported Simulated and the router never
	// probes it. For scale tests of the control plane only; off, such a
	// launch fails after the router's health timeout, as any silent pod's.
	SimulatedNodes bool
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
	nodes   map[string]string                     // node name → its address (NodeAddressType)
	fake    map[string]bool                       // node name → simulated (AnnKwokNode), with SimulatedNodes
	closed  bool
}

// New starts the backend's pod watch (and warm pool, if any) and waits for
// its cache to sync. Close stops them.
func New(ctx context.Context, cs kubernetes.Interface, opts Options, logger *slog.Logger) (*Backend, error) {
	opts.Namespace = cmp.Or(opts.Namespace, "upc")
	opts.GracePeriod = cmp.Or(opts.GracePeriod, time.Second)
	opts.ReadyTimeout = cmp.Or(opts.ReadyTimeout, 2*time.Minute)
	opts.PullPolicy = cmp.Or(opts.PullPolicy, corev1.PullIfNotPresent)
	opts.NodeAddressType = cmp.Or(opts.NodeAddressType, corev1.NodeInternalIP)
	if t := opts.NodeAddressType; t != corev1.NodeInternalIP && t != corev1.NodeExternalIP {
		return nil, fmt.Errorf("kubernetes: node address type %q: want %s or %s", t, corev1.NodeInternalIP, corev1.NodeExternalIP)
	}
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
	if opts.PMRouterPods == nil {
		opts.PMRouterPods = DefaultPMRouterPods
	}
	if err := validCIDRs(opts.PMClients); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("kubernetes backend: %w", err)
	}
	b := &Backend{
		cs: cs, opts: opts, logger: cmp.Or(logger, slog.New(slog.DiscardHandler)),
		stop: make(chan struct{}), refill: make(chan struct{}, 1),
		waiters: map[string]map[chan struct{}]struct{}{}, nodes: map[string]string{}, fake: map[string]bool{},
	}
	if opts.SimulatedNodes {
		b.logger.Warn("SIMULATED NODES ACCEPTED: an instance whose pod is bound to a kwok node (annotation " + AnnKwokNode + "=" + KwokNodeFake +
			") launches on its Ready status with no health probe; it runs no process. For scale tests only: never on a cluster serving users")
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
	b.dropOrphanPolicies(ctx)
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

// TuneClient sets what the backend needs of its API client: a request rate
// that does not cap launches (client-go's default, 5/s, would hold them to
// about two a second) and protobuf, which costs the API server much less to
// encode and decode than JSON (it is the bottleneck of a launch storm).
func TuneClient(rc *rest.Config) {
	rc.QPS, rc.Burst = 500, 1000
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	rc.ContentType = "application/vnd.kubernetes.protobuf"
}
