package kubernetes_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/obs/obstest"
	"github.com/e-mission/upc/router"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// readyKubelet plays a node on the fake clientset: every pod it sees runs
// and turns Ready, as a kubelet reports once the readiness probe passes.
func readyKubelet(t *testing.T, cs kubernetes.Interface, ns string) {
	playKubelet(t, cs, ns, func(p *corev1.Pod) bool {
		if p.Status.Phase == corev1.PodRunning {
			return false
		}
		runPod(p, "")
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		p.Status.ContainerStatuses[0].Ready = true
		return true
	})
}

// TestUnitWarmPoolMetricsWithFakeAPI: the backend reports its warm pool
// (router.WarmPool) from the pod watch's cache, and the router, which
// imports no backend, exports it: once the pool is full, a scrape of the
// router's /metrics shows the ready pods and the target per service.
func TestUnitWarmPoolMetricsWithFakeAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := fake.NewClientset()
	ns := "upc-unit"
	readyKubelet(t, cs, ns)
	cat := &conf.Catalog{Services: []conf.Service{{Name: "count", Image: "upc/count:v1", Port: 8080, Health: "/healthz"}}}
	be, err := upck8s.New(ctx, cs, upck8s.Options{Namespace: ns, NodeAddress: "127.0.0.1", Catalog: cat,
		WarmPool: map[string]int{"count": 2}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(be.Close)
	if err := be.WaitPool(ctx); err != nil {
		t.Fatal(err)
	}
	if got := be.WarmPool(); len(got) != 1 || got[0] != (router.PoolSize{Service: "count", Ready: 2, Target: 2}) {
		t.Fatalf("warm pool %+v, want count: 2 ready of 2", got)
	}

	admin := strings.Repeat("m", 40)
	users, err := router.OpenUsers("", admin)
	if err != nil {
		t.Fatal(err)
	}
	core, err := router.New(router.Options{Backend: be, Catalog: cat, Users: users, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(router.Handler(core, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	f := obstest.Scrape(t, srv.Client(), srv.URL+"/metrics", admin)
	if r, tg := f.Value("upc_router_warm_pool_ready", "service", "count"), f.Value("upc_router_warm_pool_target", "service", "count"); r != 2 || tg != 2 {
		t.Fatalf("scraped warm pool: %v ready, %v target; want 2 and 2", r, tg)
	}
	if code, _ := obstest.Get(t, srv.Client(), srv.URL+"/metrics", ""); code != http.StatusUnauthorized {
		t.Fatalf("scrape without a token: %d", code)
	}
}
