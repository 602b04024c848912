package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moby/moby/api/types/container"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/e-mission/upc/aggregator"
	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/harness/standup"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// The aggregator's container joins the deployment's network on Docker, and
// the host's network in Kubernetes mode (where the router listens on the
// host's loopback and instances answer at the node's address).
func TestAggregatorContainerNetwork(t *testing.T) {
	for _, host := range []bool{false, true} {
		a := &aggregateRun{network: "upc-e2e-net", hostNetwork: host, image: "img", scope: standup.Scope{Run: "r", Deployment: "e2e-r"}}
		req := a.request("aggregate#1", "/staged", []string{"-kind", "count"}, []byte("{}"), 0)
		hc := &container.HostConfig{}
		req.HostConfigModifier(hc)
		if host {
			if len(req.Networks) != 0 || hc.NetworkMode != "host" {
				t.Errorf("host network: networks %v, mode %q; want none and host", req.Networks, hc.NetworkMode)
			}
		} else if !slices.Equal(req.Networks, []string{"upc-e2e-net"}) || hc.NetworkMode != "" {
			t.Errorf("docker: networks %v, mode %q; want the run's network", req.Networks, hc.NetworkMode)
		}
		if len(hc.Mounts) != 1 || hc.Mounts[0].Source != "/staged" || !hc.Mounts[0].ReadOnly {
			t.Errorf("mounts %+v: want the staged days, read-only", hc.Mounts)
		}
		if req.Name != "upc-r-aggregate-1" || req.Labels[standup.LabelDeployment] != "e2e-r" {
			t.Errorf("name %q, labels %v: want the run's", req.Name, req.Labels)
		}
	}
}

// The users of a seeded aggregate step are the ids the aggregator gives
// the staged files: one per user, other seeds other users.
func TestAggregateUserIDs(t *testing.T) {
	users := []scenario.User{{Name: "shankari#1", DayPath: "/d/a.json"}, {Name: "synth/u2", DayPath: "/d/b.json.gz"}}
	a := &aggregateRun{users: users}
	got := a.userIDs(7)
	want := []string{aggregator.UserIDFor("seed-7", "0001-shankari-1"), aggregator.UserIDFor("seed-7", "0002-synth-u2.gz")}
	if !slices.Equal(got, want) {
		t.Errorf("user ids %v, want %v", got, want)
	}
	if slices.Equal(a.userIDs(8), got) {
		t.Error("seed 8 gives seed 7's users")
	}
}

// A step's users' storage is removed (claim, volume and its folder on the
// host); another user's, and a folder outside the cluster's, are not.
func TestRemoveClaims(t *testing.T) {
	pvDir := t.TempDir()
	outside := t.TempDir()
	cs := fake.NewClientset()
	ctx := context.Background()
	mk := func(user, claim, path string) {
		t.Helper()
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(path, "store"), []byte("x"), 0o600)
		cs.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-" + claim},
			Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path}}}},
			metav1.CreateOptions{})
		cs.CoreV1().PersistentVolumeClaims(upck8s.RouterNamespace).Create(ctx, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: claim, Labels: map[string]string{upck8s.LabelClaim: "true", upck8s.LabelUserKey: upck8s.UserKey(user)}},
			Spec:       corev1.PersistentVolumeClaimSpec{VolumeName: "pv-" + claim}}, metav1.CreateOptions{})
	}
	mine := filepath.Join(pvDir, "upc", "upc-data-alice")
	theirs := filepath.Join(pvDir, "upc", "upc-data-bob")
	escaped := filepath.Join(outside, "upc-data-carol")
	mk("alice", "upc-data-alice", mine)
	mk("bob", "upc-data-bob", theirs)
	mk("carol", "upc-data-carol", escaped)
	// Many users at once (removeClaims works claimRemovers at a time): the
	// first 30 of 40 go, the rest stay.
	var crowd []string
	for i := range 40 {
		u := fmt.Sprintf("user-%02d", i)
		mk(u, "upc-data-"+u, filepath.Join(pvDir, "upc", "upc-data-"+u))
		if i < 30 {
			crowd = append(crowd, u)
		}
	}
	d := &kubeDeployment{cs: cs, pvDir: pvDir}
	d.removeClaims(ctx, append([]string{"alice", "carol", "nobody"}, crowd...))
	for i := range 40 {
		u := fmt.Sprintf("user-%02d", i)
		_, err := cs.CoreV1().PersistentVolumeClaims(upck8s.RouterNamespace).Get(ctx, "upc-data-"+u, metav1.GetOptions{})
		_, serr := os.Stat(filepath.Join(pvDir, "upc", "upc-data-"+u))
		if gone := i < 30; (err != nil) != gone || os.IsNotExist(serr) != gone {
			t.Errorf("%s: claim err %v, folder %v; want gone=%v", u, err, serr, gone)
		}
	}

	for _, c := range []struct {
		claim, dir    string
		gone, dirGone bool
	}{{"upc-data-alice", mine, true, true}, {"upc-data-bob", theirs, false, false}, {"upc-data-carol", escaped, true, false}} {
		_, err := cs.CoreV1().PersistentVolumeClaims(upck8s.RouterNamespace).Get(ctx, c.claim, metav1.GetOptions{})
		_, perr := cs.CoreV1().PersistentVolumes().Get(ctx, "pv-"+c.claim, metav1.GetOptions{})
		if (err != nil) != c.gone || (perr != nil) != c.gone {
			t.Errorf("%s: claim err %v, volume err %v; want gone=%v", c.claim, err, perr, c.gone)
		}
		if _, err := os.Stat(c.dir); os.IsNotExist(err) != c.dirGone {
			t.Errorf("%s: folder stat %v; want gone=%v", c.claim, err, c.dirGone)
		}
	}
}

func TestHostPathUnder(t *testing.T) {
	pv := func(p string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: p}}}}
	}
	for _, c := range []struct {
		pv   *corev1.PersistentVolume
		root string
		ok   bool
	}{
		{pv("/c/pv/upc/x"), "/c/pv", true},
		{pv("/c/pv"), "/c/pv", false},
		{pv("/c/pv/../etc"), "/c/pv", false},
		{pv("/c/pvx/y"), "/c/pv", false},
		{pv("relative/x"), "/c/pv", false},
		{pv("/c/pv/x"), "", false},
		{&corev1.PersistentVolume{}, "/c/pv", false},
	} {
		if _, ok := hostPathUnder(c.pv, c.root); ok != c.ok {
			t.Errorf("%+v under %q: %v, want %v", c.pv.Spec.HostPath, c.root, ok, c.ok)
		}
	}
}

// TestKubeSettingsSimulatedNodes: the router accepts simulated nodes only
// for a run on the fake tier; on the real node (named or by default) a pod
// must answer its health path.
func TestKubeSettingsSimulatedNodes(t *testing.T) {
	for nodes, want := range map[string]bool{scenario.NodesFake: true, scenario.NodesReal: false, "": false} {
		k := kubeSettings("/state", nodes)
		if k.SimulatedNodes != want {
			t.Errorf("nodes %q: simulated_nodes %v, want %v", nodes, k.SimulatedNodes, want)
		}
		c := conf.Default()
		c.UPCMode, c.Kubernetes = conf.ModeKubernetes, k
		if err := c.Validate(); err != nil {
			t.Errorf("nodes %q: %v", nodes, err)
		}
	}
}
