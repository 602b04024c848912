package kubernetes

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/owndata"
	"github.com/e-mission/upc/router"
)

// A user's claims outlive their pods: delete, pause and clear keep them, and
// the user's next pod mounts them again (userClaims finds them by label).
// EraseUserStorage is the only way they go:
//
//  1. the user's claims are found by label and annotation; on a cluster
//     without a storage class, a volume the backend made for the user whose
//     claim is gone (the namespace was made again) gets its claim back first,
//     as a launch would, so it is erased too;
//  2. while any pod but a wipe pod mounts one of them, nothing is done
//     (router.ErrConflict, naming the pods);
//  3. a wipe pod empties them: the catalog's image (the one the user's PM
//     ran), its own-data init container (root with CAP_CHOWN only, as for
//     every hostPath claim) giving whatever is there to 65532, then wipe-data
//     as 65532 with no capabilities; it must succeed before anything is
//     deleted, since a hostPath volume's files outlive its objects;
//  4. the wipe pod, the claims and the volumes the backend made go, and the
//     erase returns once the API server no longer has them.
//
// The node keeps the emptied directory of a hostPath volume: the router
// cannot remove what holds the mount. A dynamically provisioned volume goes
// as its storage class's reclaim policy says, emptied first either way.

// LabelWipe is on wipe pods: the erase's id.
const LabelWipe = "upc.wipe"

var _ router.Storage = (*Backend)(nil)

// UserStorage lists user's claims.
func (b *Backend) UserStorage(ctx context.Context, user string) ([]router.StoredVolume, error) {
	if err := router.ValidUser(user); err != nil {
		return nil, err
	}
	claims, err := b.userClaims(ctx, user)
	if err != nil {
		return nil, err
	}
	out := make([]router.StoredVolume, 0, len(claims))
	for _, vol := range slices.Sorted(maps.Keys(claims)) {
		out = append(out, router.StoredVolume{Name: claims[vol], Volume: vol})
	}
	return out, nil
}

// EraseUserStorage wipes and deletes user's claims and the volumes the
// backend made for them (see above).
func (b *Backend) EraseUserStorage(ctx context.Context, user string, wipe router.Spec) ([]router.StoredVolume, error) {
	if err := router.ValidUser(user); err != nil {
		return nil, err
	}
	// No launch of this user's makes or finds claims meanwhile.
	mu := &b.users[userKeyByte(user)%byte(len(b.users))]
	mu.Lock()
	defer mu.Unlock()
	id := string(wipe.ID)
	if id == "" {
		var r [6]byte
		rand.Read(r[:])
		id = hex.EncodeToString(r[:])
	}
	if err := b.dropWipePods(ctx, user); err != nil {
		return nil, err
	}
	claims, err := b.claimsToErase(ctx, user)
	if err != nil || len(claims) == 0 {
		return nil, err
	}
	if err := b.claimsInUse(ctx, user, claims); err != nil {
		return nil, err
	}
	if err := b.wipeClaims(ctx, id, user, wipe, claims); err != nil {
		return nil, fmt.Errorf("nothing deleted: %w", err)
	}
	var erased []router.StoredVolume
	var volumes []string
	for _, c := range claims {
		err := b.cs.CoreV1().PersistentVolumeClaims(b.opts.Namespace).Delete(ctx, c.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return erased, fmt.Errorf("delete claim %s: %w", c.Name, err)
		}
		erased = append(erased, router.StoredVolume{Name: c.Name, Volume: c.Labels[LabelVolume]})
		if c.Spec.VolumeName != "" {
			volumes = append(volumes, c.Spec.VolumeName)
		}
	}
	for _, pv := range volumes {
		if err := b.deleteOwnVolume(ctx, pv); err != nil {
			return erased, err
		}
	}
	if err := b.waitGone(ctx, claims, volumes); err != nil {
		return erased, err
	}
	return erased, nil
}

// claimsToErase is user's claims, a volume's claim made again first where
// the backend made the volume for user and its claim is gone.
func (b *Backend) claimsToErase(ctx context.Context, user string) ([]corev1.PersistentVolumeClaim, error) {
	sel := LabelClaim + "=true," + LabelUserKey + "=" + UserKey(user)
	list, err := b.cs.CoreV1().PersistentVolumeClaims(b.opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("find the claims of %s: %w", user, err)
	}
	var out []corev1.PersistentVolumeClaim
	have := map[string]bool{}
	for _, c := range list.Items {
		if c.Annotations[AnnUser] != user {
			continue
		}
		if c.DeletionTimestamp != nil {
			return nil, fmt.Errorf("%w: claim %s of %s is being deleted: try again once it is gone", router.ErrConflict, c.Name, user)
		}
		out = append(out, c)
		have[c.Name] = true
	}
	if b.opts.StorageClass != "" {
		return out, nil
	}
	pvs, err := b.cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{LabelSelector: sel + ",upc.namespace=" + b.opts.Namespace})
	if err != nil {
		return nil, fmt.Errorf("find the volumes of %s: %w", user, err)
	}
	for _, pv := range pvs.Items {
		ref := pv.Spec.ClaimRef
		if ref == nil || ref.Namespace != b.opts.Namespace || have[ref.Name] || pv.DeletionTimestamp != nil ||
			(pv.Labels[LabelUser] != "" && pv.Labels[LabelUser] != user) {
			continue
		}
		// Kept without its claim: bind a claim to it again, as the user's
		// next launch would, so the wipe pod reaches its files.
		vol := pv.Labels[LabelVolume]
		size := pv.Spec.Capacity[corev1.ResourceStorage]
		v := conf.Volume{Name: vol, PerUser: true, SizeMB: int(size.Value() >> 20)}
		if err := b.makeClaim(ctx, ref.Name, b.claimLabels(user, vol), user, v); err != nil {
			return nil, fmt.Errorf("claim kept volume %s again to erase it: %w", pv.Name, err)
		}
		c, err := b.cs.CoreV1().PersistentVolumeClaims(b.opts.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("claim kept volume %s again to erase it: %w", pv.Name, err)
		}
		b.logger.Info("kept volume without its claim claimed again to be erased", "user", user, "volume", pv.Name, "claim", c.Name)
		out = append(out, *c)
		have[c.Name] = true
	}
	slices.SortFunc(out, func(x, y corev1.PersistentVolumeClaim) int { return cmp.Compare(x.Name, y.Name) })
	return out, nil
}

// claimsInUse refuses while a pod that has not ended, other than a wipe
// pod, mounts one of claims.
func (b *Backend) claimsInUse(ctx context.Context, user string, claims []corev1.PersistentVolumeClaim) error {
	names := map[string]bool{}
	for _, c := range claims {
		names[c.Name] = true
	}
	pods, err := b.cs.CoreV1().Pods(b.opts.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("find pods mounting %s's claims: %w", user, err)
	}
	var users []string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.Labels[LabelWipe] != "" {
			continue // ended, or a wipe pod of an erase cut short (deleted just before)
		}
		for _, v := range p.Spec.Volumes {
			if pvc := v.PersistentVolumeClaim; pvc != nil && names[pvc.ClaimName] {
				users = append(users, fmt.Sprintf("pod %s (claim %s)", p.Name, pvc.ClaimName))
			}
		}
	}
	if len(users) > 0 {
		slices.Sort(users)
		return fmt.Errorf("%w: %s's claims are mounted by %s: delete those first", router.ErrConflict, user, strings.Join(users, ", "))
	}
	return nil
}

// dropWipePods deletes wipe pods of user's left by an erase cut short.
func (b *Backend) dropWipePods(ctx context.Context, user string) error {
	grace := int64(0)
	err := b.cs.CoreV1().Pods(b.opts.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &grace},
		metav1.ListOptions{LabelSelector: LabelManaged + "=true," + LabelWipe + "," + LabelUserKey + "=" + UserKey(user)})
	if err != nil {
		return fmt.Errorf("delete old wipe pods of %s: %w", user, err)
	}
	return nil
}

// wipeClaims runs the wipe pod over claims and waits for it to succeed;
// the pod is deleted whatever happens.
func (b *Backend) wipeClaims(ctx context.Context, id, user string, wipe router.Spec, claims []corev1.PersistentVolumeClaim) error {
	if wipe.Image == "" && wipe.Digest == "" {
		return errors.New("no image to wipe the claims with: the catalog has no service with per-user volumes")
	}
	pod := b.wipePod(id, user, wipe, claims)
	if _, err := b.cs.CoreV1().Pods(b.opts.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create wipe pod: %w", err)
	}
	defer func() {
		grace := int64(0)
		dctx := context.WithoutCancel(ctx)
		err := b.cs.CoreV1().Pods(b.opts.Namespace).Delete(dctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
		if err != nil && !apierrors.IsNotFound(err) {
			b.logger.Warn("wipe pod not deleted", "pod", pod.Name, "err", err)
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, b.opts.ReadyTimeout)
	defer cancel()
	var last string
	err := b.await(wctx, "w/"+id, func(pods []*corev1.Pod) (bool, error) {
		for _, p := range pods {
			switch p.Status.Phase {
			case corev1.PodSucceeded:
				return true, nil
			case corev1.PodFailed:
				return false, fmt.Errorf("wipe pod %s failed: %s", p.Name, terminated(p))
			}
			if err := podFailure(p); err != nil {
				return false, err
			}
			last = podWaiting(p)
		}
		return false, nil
	})
	if err != nil {
		if wctx.Err() != nil && last != "" {
			err = fmt.Errorf("%w (pod: %s)", err, last)
		}
		return fmt.Errorf("wipe the claims of %s: %w", user, err)
	}
	b.logger.Info("claims wiped", "user", user, "pod", pod.Name, "claims", len(claims))
	return nil
}

// terminated says how a failed pod's containers ended (their message holds
// the end of their log).
func terminated(p *corev1.Pod) string {
	var out []string
	for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			out = append(out, fmt.Sprintf("%s exited %d (%s): %s", cs.Name, t.ExitCode, t.Reason, strings.TrimSpace(t.Message)))
		}
	}
	if len(out) == 0 {
		return cmp.Or(p.Status.Reason+" "+p.Status.Message, "no reason given")
	}
	return strings.Join(out, "; ")
}

// wipePod mounts claims at /wipe/0, /wipe/1, ...: own-data gives what is
// there to the images' user, then wipe-data, as that user with nothing
// else, empties them.
func (b *Backend) wipePod(id, user string, wipe router.Spec, claims []corev1.PersistentVolumeClaim) *corev1.Pod {
	image := wipe.Image
	if (b.opts.ImageByID && wipe.Digest != "") || image == "" {
		image = wipe.Digest
	}
	labels := maps.Clone(b.opts.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelManaged] = "true"
	labels[LabelWipe] = id
	labels[LabelUserKey] = UserKey(user)
	var mounts []corev1.VolumeMount
	var vols []corev1.Volume
	args := []string{owndata.WipeCommand}
	for i, c := range claims {
		name := "claim-" + strconv.Itoa(i)
		path := "/wipe/" + strconv.Itoa(i)
		vols = append(vols, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name}}})
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: path})
		args = append(args, path)
	}
	grace := int64(b.opts.GracePeriod.Seconds())
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "upc-wipe-" + id, Labels: labels, Annotations: map[string]string{AnnUser: user}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{ownData(image, b.opts.PullPolicy, mounts)},
			Containers: []corev1.Container{{
				Name: "wipe", Image: image, ImagePullPolicy: b.opts.PullPolicy, Args: args, VolumeMounts: mounts,
				SecurityContext:          containerSecurity(),
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Volumes:                       vols,
			NodeSelector:                  b.opts.NodeSelector,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &grace,
			EnableServiceLinks:            new(false),
			AutomountServiceAccountToken:  new(false),
			SecurityContext:               podSecurity(),
		},
	}
}

// deleteOwnVolume deletes the volume pv if the backend made it (a hostPath
// volume labelled for a claim of this namespace); a provisioner's volumes
// go as their class says.
func (b *Backend) deleteOwnVolume(ctx context.Context, name string) error {
	pv, err := b.cs.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get volume %s: %w", name, err)
	}
	if pv.Labels[LabelClaim] != "true" || pv.Labels["upc.namespace"] != b.opts.Namespace {
		return nil
	}
	if err := b.cs.CoreV1().PersistentVolumes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete volume %s: %w", name, err)
	}
	return nil
}

// waitGone waits until the API server has none of claims, nor of the
// volumes the backend made among volumes.
func (b *Backend) waitGone(ctx context.Context, claims []corev1.PersistentVolumeClaim, volumes []string) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.ReadyTimeout)
	defer cancel()
	for {
		var left []string
		for _, c := range claims {
			if _, err := b.cs.CoreV1().PersistentVolumeClaims(b.opts.Namespace).Get(ctx, c.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left = append(left, "claim "+c.Name)
			}
		}
		for _, v := range volumes {
			pv, err := b.cs.CoreV1().PersistentVolumes().Get(ctx, v, metav1.GetOptions{})
			if err == nil && pv.Labels[LabelClaim] == "true" && pv.Labels["upc.namespace"] == b.opts.Namespace {
				left = append(left, "volume "+v)
			} else if err != nil && !apierrors.IsNotFound(err) {
				left = append(left, "volume "+v)
			}
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("deleted, but still there after %s: %s", b.opts.ReadyTimeout, strings.Join(left, ", "))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
