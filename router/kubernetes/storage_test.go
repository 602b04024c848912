package kubernetes_test

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/client/clienttest"
	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// TestClusterPMStorage is clienttest.StorageFlow on the real node: the
// real PM image through the router over the Kubernetes backend, TLS on
// every hop. A user's claim outlives their PM, is found again and unsealed
// by the same key (a wrong one refused), exported whole and erased (refused
// while the PM runs; then the cluster holds no claim or volume of theirs,
// and, on the local cluster, no file where the volume kept its data).
func TestClusterPMStorage(t *testing.T) {
	c := needCluster(t)
	sel := needNodes(t, c, "real")
	pm := builtPM(t, c)
	ns := namespace(t, c)
	cat := &conf.Catalog{Services: []conf.Service{pm}}
	be := newBackend(t, c, upck8s.Options{Namespace: ns, NodeSelector: sel, ImageByID: c.local != "", Catalog: cat,
		PMClients: []string{"172.30.0.1/32"}})
	admin := access.NewToken(access.PrefixUser)
	ids, err := router.OpenUsers("", admin)
	if err != nil {
		t.Fatal(err)
	}
	ca := certstest.New(t)
	core, err := router.New(router.Options{Backend: be, Catalog: cat, HealthTimeout: 2 * time.Minute, Users: ids, CA: ca.CA,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	day, err := client.LoadDay(filepath.Join(realdata.DirT(t), "shankari_2015-08-23"))
	if err != nil {
		t.Fatal(err)
	}
	clienttest.StorageFlow(t, clienttest.ServeRouter(t, core, ca, admin, nil), day, leftovers(c, ns))
}

// leftovers reads the cluster itself: the claims in ns labelled for the
// user, the volumes made for them, and, on the local cluster, every file
// under their claims' directories on the node (an erased hostPath claim's
// directory stays, emptied: the router cannot remove a mount point).
func leftovers(c testCluster, ns string) clienttest.Leftovers {
	return func(t testing.TB, user string) []string {
		t.Helper()
		ctx := context.Background()
		sel := upck8s.LabelUserKey + "=" + upck8s.UserKey(user)
		claims, err := c.cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, cl := range claims.Items {
			out = append(out, "claim "+cl.Name)
		}
		pvs, err := c.cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{LabelSelector: sel + ",upc.namespace=" + ns})
		if err != nil {
			t.Fatal(err)
		}
		for _, pv := range pvs.Items {
			out = append(out, "volume "+pv.Name)
		}
		if dir := hostPathDir(c); dir != "" {
			root := filepath.Join(dir, ns, upck8s.ClaimName(user, "data"))
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					if !os.IsNotExist(err) {
						out = append(out, "unreadable "+p+": "+err.Error())
					}
					return nil
				}
				if p != root {
					out = append(out, "file "+p)
				}
				return nil
			})
		}
		slices.Sort(out)
		return out
	}
}
