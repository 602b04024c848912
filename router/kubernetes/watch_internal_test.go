package kubernetes

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A pod that cannot start ends a launch's wait with the reason, whether its
// main container or an init container (the PM's own-data one, same image)
// waits on it; a pod merely starting does not. A unit test: pods are built
// by hand, as the kubelet would report them.
func TestPodFailure(t *testing.T) {
	waiting := func(reason string) []corev1.ContainerStatus {
		return []corev1.ContainerStatus{{Name: "c", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "no such image"}}}}
	}
	for name, c := range map[string]struct {
		st   corev1.PodStatus
		want string
	}{
		"main image missing":  {corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: waiting("ErrImagePull")}, "ErrImagePull: no such image"},
		"init image missing":  {corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: waiting("ImagePullBackOff")}, "ImagePullBackOff: no such image"},
		"init crash loop":     {corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: waiting("CrashLoopBackOff")}, "CrashLoopBackOff"},
		"failed":              {corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}, "Failed: Evicted"},
		"creating":            {corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: waiting("ContainerCreating")}, ""},
		"init still creating": {corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: waiting("PodInitializing")}, ""},
	} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "upc-x"}, Status: c.st}
		err := podFailure(p)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want none", name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}
