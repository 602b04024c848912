package kubernetes

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/router"
)

func hasPerUser(vs []conf.Volume) bool {
	return slices.ContainsFunc(vs, func(v conf.Volume) bool { return v.PerUser })
}

// ClaimName is the PersistentVolumeClaim made for user's volume vol:
// readable (the volume, then up to 20 characters of the user folded to
// lowercase), then 16 bytes (32 hex digits) of SHA-256 of the user, so that
// no two users share one: 4 bytes, as before, would meet among about 65,000
// users. With the catalog's "data", at most 62 characters.
//
// Claims are found by their upc.user-key label and user annotation, not by
// this name: claims made under the older, shorter names stay their users'.
func ClaimName(user, vol string) string {
	sum := sha256.Sum256([]byte(user))
	clean := strings.Trim(claimCleanRE.ReplaceAllString(strings.ToLower(user), "-"), "-")
	if len(clean) > 20 {
		clean = strings.TrimRight(clean[:20], "-")
	}
	return "upc-" + vol + "-" + cmp.Or(clean, "u") + "-" + hex.EncodeToString(sum[:16])
}

var claimCleanRE = regexp.MustCompile(`[^a-z0-9]+`)

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
	if apierrors.IsAlreadyExists(err) {
		// Someone's claim has this name already: it must be this user's
		// volume (a launch that raced us), else it is refused.
		old, gerr := b.cs.CoreV1().PersistentVolumeClaims(b.opts.Namespace).Get(ctx, claim, metav1.GetOptions{})
		if gerr != nil {
			return fmt.Errorf("get existing claim %s: %w", claim, gerr)
		}
		if old.Annotations[AnnUser] != user || old.Labels[LabelVolume] != v.Name || old.Labels[LabelClaim] != "true" {
			b.logger.Warn("refused a claim of another user", "claim", claim, "user", user, "claim_user", old.Annotations[AnnUser], "claim_volume", old.Labels[LabelVolume])
			return fmt.Errorf("%w: claim %s is not user %s's volume %s", router.ErrForbidden, claim, user, v.Name)
		}
		return nil
	}
	if err != nil {
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
