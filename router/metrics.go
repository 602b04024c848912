package router

import (
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/obs"
	"github.com/e-mission/upc/router/api"
)

// What the router exports at GET /metrics (docs/metrics.md), beside
// obs's HTTP and runtime metrics. Labels name catalog services, states,
// outcomes and reasons: never a user, an identity or an instance.
//
//	upc_router_launch_duration_seconds{service, outcome}  histogram: from the backend's start to the instance's first healthy answer; outcome ok, unhealthy or failed
//	upc_router_launches_refused_total{reason}             launch requests refused once read (4xx or 503), by reason; a backend's refusal is also a failed launch
//	upc_router_instances{service, state}                  the router's view: instances by catalog service and state
//	upc_router_warm_pool_ready{service}                   ready pods in the backend's warm pool (backends with one)
//	upc_router_warm_pool_target{service}                  the pool size the backend keeps
//	upc_router_view_rebuilt                               1 once the view has been rebuilt from the backend's labels
type metrics struct {
	*obs.Metrics
	launches *prometheus.HistogramVec
	refused  *prometheus.CounterVec
}

// Launch outcomes (upc_router_launch_duration_seconds).
const (
	outcomeOK        = "ok"
	outcomeUnhealthy = "unhealthy" // started, never answered its health path: removed
	outcomeFailed    = "failed"    // the backend could not start it
)

// Refusal reasons (upc_router_launches_refused_total): one per error the
// API answers a launch with, other than the backend's own failures.
var refusalReasons = []struct {
	err    error
	reason string
}{
	{ErrUnknownService, "unknown_service"},
	{ErrInvalid, "invalid"},
	{ErrForbidden, "forbidden"},
	{ErrLimit, "limit"},
	{ErrConflict, "conflict"},
	{ErrNoMachine, "no_machine"},
	{ErrMachineDown, "machine_down"},
	{ErrPMUnreachable, "pm_unreachable"},
}

func newMetrics(r *Router) *metrics {
	m := &metrics{
		Metrics: obs.New(),
		launches: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: obs.Namespace, Subsystem: "router", Name: "launch_duration_seconds",
			Help:    "Launches that reached the backend, from its start to the instance's first healthy answer, by catalog service and outcome (ok, unhealthy, failed).",
			Buckets: obs.LatencyBuckets,
		}, []string{"service", "outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: obs.Namespace, Subsystem: "router", Name: "launches_refused_total",
			Help: "Launch requests refused, by reason (" + reasonList() + ").",
		}, []string{"reason"}),
	}
	for _, rr := range refusalReasons {
		m.refused.WithLabelValues(rr.reason) // every reason shows, at 0
	}
	for _, s := range r.catalog.Services {
		for _, o := range []string{outcomeOK, outcomeUnhealthy, outcomeFailed} {
			m.launches.WithLabelValues(s.Name, o)
		}
	}
	m.MustRegister(m.launches, m.refused, viewCollector{r})
	return m
}

func reasonList() string {
	s := ""
	for i, rr := range refusalReasons {
		if i > 0 {
			s += ", "
		}
		s += rr.reason
	}
	return s
}

// observeLaunch records a launch that reached the backend.
func (m *metrics) observeLaunch(service, outcome string, took time.Duration) {
	m.launches.WithLabelValues(service, outcome).Observe(took.Seconds())
}

// refusal counts err if it refuses a launch, and returns it.
func (m *metrics) refusal(err error) error {
	for _, rr := range refusalReasons {
		if errors.Is(err, rr.err) {
			m.refused.WithLabelValues(rr.reason).Inc()
			break
		}
	}
	return err
}

// PoolSize is one service's warm pool as a backend reports it.
type PoolSize struct {
	Service string
	Ready   int // ready pods waiting to be claimed
	Target  int // the pool's configured size
}

// WarmPool is a backend keeping ready instances to claim at launch (the
// Kubernetes backend): the router exports their number. It must answer from
// what the backend already knows, without I/O.
type WarmPool interface {
	WarmPool() []PoolSize
}

var (
	instancesDesc = prometheus.NewDesc(obs.Namespace+"_router_instances",
		"Instances in the router's view, by catalog service and state.", []string{"service", "state"}, nil)
	poolReadyDesc = prometheus.NewDesc(obs.Namespace+"_router_warm_pool_ready",
		"Ready pods in the backend's warm pool, by service.", []string{"service"}, nil)
	poolTargetDesc = prometheus.NewDesc(obs.Namespace+"_router_warm_pool_target",
		"The warm pool's configured size, by service.", []string{"service"}, nil)
	rebuiltDesc = prometheus.NewDesc(obs.Namespace+"_router_view_rebuilt",
		"1 once the router's view has been rebuilt from the backend's labels.", nil, nil)
)

// viewCollector reads the router's view (under its lock) at each scrape.
type viewCollector struct{ r *Router }

func (c viewCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- instancesDesc
	ch <- poolReadyDesc
	ch <- poolTargetDesc
	ch <- rebuiltDesc
}

func (c viewCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ service, state string }
	n := map[key]int{}
	for _, s := range c.r.catalog.Services {
		n[key{s.Name, string(StateRunning)}] = 0
		n[key{s.Name, string(StatePaused)}] = 0
	}
	c.r.mu.RLock()
	for _, in := range c.r.instances {
		n[key{in.Service, string(in.State)}]++
	}
	c.r.mu.RUnlock()
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(v), k.service, k.state)
	}
	if wp, ok := c.r.backend.(WarmPool); ok {
		for _, p := range wp.WarmPool() {
			ch <- prometheus.MustNewConstMetric(poolReadyDesc, prometheus.GaugeValue, float64(p.Ready), p.Service)
			ch <- prometheus.MustNewConstMetric(poolTargetDesc, prometheus.GaugeValue, float64(p.Target), p.Service)
		}
	}
	if ready, size := c.r.PoolReady(); size > 0 {
		ch <- prometheus.MustNewConstMetric(poolReadyDesc, prometheus.GaugeValue, float64(ready), c.r.pool.svc.Name)
		ch <- prometheus.MustNewConstMetric(poolTargetDesc, prometheus.GaugeValue, float64(size), c.r.pool.svc.Name)
	}
	rebuilt := 0.0
	if c.r.rebuilt.Load() {
		rebuilt = 1
	}
	ch <- prometheus.MustNewConstMetric(rebuiltDesc, prometheus.GaugeValue, rebuilt)
}

// errNotRebuilt is /readyz's answer before the first rebuild.
var errNotRebuilt = errors.New("the view is not rebuilt from the backend yet")

// Ready reports whether the router can serve: its view has been rebuilt
// from the backend's labels (Rebuild has run, even with machines that did
// not answer: their instances are adopted when they do).
func (r *Router) Ready() error {
	if !r.rebuilt.Load() {
		return errNotRebuilt
	}
	return nil
}

// monitorOnly lets admins and monitors through: the router's metrics.
func (r *Router) monitorOnly(f httpx.HandlerFunc) httpx.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) error {
		if who := caller(req); !who.IsAdmin() && who.Role != api.RoleMonitor {
			return r.forbidden(req, "only an admin or a monitor may read the router's metrics")
		}
		return f(w, req)
	}
}
