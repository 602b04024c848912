package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/router"
)

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
			AnnOwner: spec.Owner, AnnPM: string(spec.PM),
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
		// Access control: pool pods were made before anyone asked for
		// them, so they lack the instance's secret hash (env
		// UPC_ACCESS_SHA256, fixed at pod creation). A PM is the owner's
		// data: with access control on it is never taken from the pool.
		// (claimWarm's env comparison keeps every other access-controlled
		// launch off pool pods too; the lifecycle issue revisits the pool.)
		if spec.Env[access.EnvSHA256] != "" || spec.Env[access.EnvLegacy] != "" {
			pool = false
		}
	}
	if err := b.ensurePolicy(ctx, spec); err != nil {
		return router.Instance{}, err
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
	sim, err := b.simulated(ctx, pod)
	if err != nil {
		return router.Instance{}, fmt.Errorf("instance %s: %w", spec.ID, err)
	}
	if sim && !isReady(pod) {
		if pod, err = b.waitReady(ctx, "i/"+string(spec.ID)); err != nil {
			return router.Instance{}, fmt.Errorf("instance %s on a simulated node: %w", spec.ID, err)
		}
	}
	digest, err := b.runningImage(pod, spec)
	if err != nil {
		// Never let it answer: the pod goes now, whoever retries.
		if derr := b.deletePods(context.WithoutCancel(ctx), spec.ID); derr != nil {
			err = errors.Join(err, derr)
		}
		return router.Instance{}, fmt.Errorf("instance %s: %w", spec.ID, err)
	}
	ann := map[string]*string{}
	if digest != svc.Annotations[AnnDigest] {
		ann[AnnDigest] = &digest // what runs, which List reports from now on
	}
	if svc.Annotations[AnnAddress] == "" {
		host, err := b.nodeAddress(ctx, pod)
		if err != nil {
			return router.Instance{}, err
		}
		scheme := "http://"
		if spec.TLS {
			scheme = "https://"
		}
		addr := scheme + net.JoinHostPort(host, strconv.Itoa(int(svc.Spec.Ports[0].NodePort)))
		ann[AnnAddress] = &addr
	}
	if was := svc.Annotations[AnnSimulated] == "true"; sim && !was {
		t := "true"
		ann[AnnSimulated] = &t
	} else if !sim && was {
		ann[AnnSimulated] = nil // resumed on a real node
	}
	if len(ann) > 0 {
		if svc, err = b.annotate(ctx, svc.Name, ann); err != nil {
			return router.Instance{}, err
		}
	}
	return b.instance(svc, []*corev1.Pod{pod}), nil
}

// runningImage is the digest of the image pod's container runs, as its node
// reports it (status.containerStatuses[].imageID), checked against the pin
// (spec.Digest): a pod running another image is refused (router.ErrForbidden)
// and its caller deletes it. With ImageByID the pod names the pinned ID
// itself; without, it names the reference, which a node may resolve to
// whatever was tagged or pushed under it since the pin was taken.
//
// Nodes report either the image ID ("sha256:...", images loaded into the
// node, as on the local cluster) or, for an image pulled from a registry,
// its registry digest ("repo@sha256:...", the digest of its manifest, not
// the image ID the pin is). An ID is compared with the pin. A registry
// digest cannot be: with ImageByID the pod ran the pinned ID anyway; without
// it the launch goes on with a warning and reports the registry digest, so a
// client requiring the pinned digest refuses it. A node that reports nothing
// (kwok's simulated nodes run no process) leaves the pin as the answer.
func (b *Backend) runningImage(pod *corev1.Pod, spec router.Spec) (string, error) {
	var reported string
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == "main" || reported == "" {
			reported = cs.ImageID
		}
	}
	for _, p := range []string{"docker-pullable://", "docker://"} { // kubelets of the dockershim era
		reported = strings.TrimPrefix(reported, p)
	}
	pin := spec.Digest
	switch {
	case reported == "":
		return pin, nil
	case pin == "" || reported == pin:
		return reported, nil
	case strings.HasPrefix(reported, "sha256:"):
		b.logger.Warn("refused a pod running another image than the pinned one", "instance", spec.ID, "pod", pod.Name,
			"image", spec.Image, "runs", reported, "pinned", pin, "node", pod.Spec.NodeName)
		return "", fmt.Errorf("%w: pod %s on node %s runs image %s as %s, not the pinned %s: deleted it "+
			"(the tag was moved to another image on the node; load the pinned image again, or rebuild with make images and restart with the new manifest)",
			router.ErrForbidden, pod.Name, pod.Spec.NodeName, spec.Image, reported, pin)
	case b.opts.ImageByID || strings.HasSuffix(reported, "@"+pin):
		return pin, nil
	}
	b.logger.Warn("image not validated: the node reports a registry digest, which the pinned image ID cannot be compared with",
		"instance", spec.ID, "pod", pod.Name, "image", spec.Image, "runs", reported, "pinned", pin)
	return reported, nil
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
	if labelValueRE.MatchString(spec.Owner) {
		l[LabelOwner] = spec.Owner
	}
	if spec.PM != "" && router.ValidID(string(spec.PM)) == nil {
		l[LabelPM] = string(spec.PM) // its PM's NetworkPolicy admits it
	}
	return l
}

var labelValueRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)

// pod is the pod of spec: pinned image, prompt stop, no service links (a
// thousand Services would otherwise become environment variables), no API
// token (our services do not call the API), hardened (harden.go), and, for
// per-user claims on hostPath volumes, the own-data init container.
// claims names the claim of each per-user volume.
func (b *Backend) pod(podName string, spec router.Spec, labels map[string]string, claims map[string]string) *corev1.Pod {
	image := spec.Image
	if b.opts.ImageByID && spec.Digest != "" {
		image = spec.Digest
	}
	grace := int64(b.opts.GracePeriod.Seconds())
	c := corev1.Container{
		Name: "main", Image: image, ImagePullPolicy: b.opts.PullPolicy,
		Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: int32(spec.Port), Protocol: corev1.ProtocolTCP}},
		ReadinessProbe:  readiness(spec),
		SecurityContext: containerSecurity(),
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
		ObjectMeta: metav1.ObjectMeta{Name: podName, Labels: labels, Annotations: map[string]string{AnnUser: spec.User, AnnOwner: spec.Owner, AnnDigest: spec.Digest}},
		Spec: corev1.PodSpec{
			Containers:                    []corev1.Container{c},
			NodeSelector:                  b.opts.NodeSelector,
			TerminationGracePeriodSeconds: &grace,
			EnableServiceLinks:            new(false),
			AutomountServiceAccountToken:  new(false),
			RestartPolicy:                 corev1.RestartPolicyAlways,
			SecurityContext:               podSecurity(),
		},
	}
	var hostPaths []corev1.VolumeMount
	for _, v := range spec.Volumes {
		vol := corev1.Volume{Name: v.Name}
		m := corev1.VolumeMount{Name: v.Name, MountPath: v.Path}
		if v.PerUser {
			vol.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claims[v.Name]}
			if b.opts.StorageClass == "" {
				hostPaths = append(hostPaths, m)
			}
		} else {
			vol.EmptyDir = &corev1.EmptyDirVolumeSource{}
		}
		p.Spec.Volumes = append(p.Spec.Volumes, vol)
		p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, m)
	}
	if !slices.ContainsFunc(spec.Volumes, func(v conf.Volume) bool { return v.Path == "/tmp" }) {
		vol, m := tmpVolume()
		p.Spec.Volumes = append(p.Spec.Volumes, vol)
		p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, m)
	}
	if len(hostPaths) > 0 {
		p.Spec.InitContainers = []corev1.Container{ownData(image, b.opts.PullPolicy, hostPaths)}
	}
	return p
}

// readiness marks the pod Ready once its health path answers: the warm
// pool hands out only Ready pods.
func readiness(spec router.Spec) *corev1.Probe {
	if spec.Health == "" {
		return nil
	}
	// The kubelet probes HTTPS without verifying: readiness only.
	scheme := corev1.URISchemeHTTP
	if spec.TLS {
		scheme = corev1.URISchemeHTTPS
	}
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: spec.Health, Port: intstr.FromInt32(int32(spec.Port)),
			Scheme: scheme}},
		PeriodSeconds: 1, TimeoutSeconds: 1, FailureThreshold: 3,
	}
}

// nodeAddress is Options.NodeAddress or the pod's node's address of
// Options.NodeAddressType (its InternalIP unless told otherwise).
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
	want := b.opts.NodeAddressType
	for _, a := range n.Status.Addresses {
		if a.Type == want {
			ip = a.Address
			break
		}
	}
	if ip == "" && want == corev1.NodeInternalIP {
		ip = pod.Status.HostIP
	}
	if ip == "" {
		// An ExternalIP is never guessed: the host IP is the node's
		// internal one, which the clients this was set for cannot reach.
		return "", fmt.Errorf("node %s reports no %s", n.Name, want)
	}
	b.mu.Lock()
	b.nodes[n.Name] = ip
	b.mu.Unlock()
	return ip, nil
}

// simulated reports whether pod is bound to a simulated node (kwok's
// annotation on it) and simulated nodes are accepted; with
// Options.SimulatedNodes off it is always false, and a pod there is
// launched as any other (the router's health wait then fails it).
func (b *Backend) simulated(ctx context.Context, pod *corev1.Pod) (bool, error) {
	if !b.opts.SimulatedNodes || pod.Spec.NodeName == "" {
		return false, nil
	}
	b.mu.Lock()
	fake, ok := b.fake[pod.Spec.NodeName]
	b.mu.Unlock()
	if ok {
		return fake, nil
	}
	n, err := b.cs.CoreV1().Nodes().Get(ctx, pod.Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("node of pod %s: %w", pod.Name, err)
	}
	fake = n.Annotations[AnnKwokNode] == KwokNodeFake
	b.mu.Lock()
	b.fake[n.Name] = fake
	b.mu.Unlock()
	return fake, nil
}
