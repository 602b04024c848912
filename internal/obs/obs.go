// Package obs holds what every UPC server exports about itself: a Prometheus
// registry of its own (never the global one: tests run many servers in one
// process), requests counted by method, route pattern and status code, the
// /metrics exposition and the /readyz answer. Who may scrape is each
// server's rule (docs/security.md); label values never name a user, an
// instance or a credential.
package obs

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/e-mission/upc/internal/httpx"
)

// Paths every server serves beside GET /healthz.
const (
	MetricsPath = "/metrics" // Prometheus text exposition; each server says who may read it
	ReadyPath   = "/readyz"  // 200 when the server can do its work, else 503; open, reveals nothing
)

// Namespace prefixes every UPC metric.
const Namespace = "upc"

// Unmatched is the route label of requests no pattern of the server's mux
// matched (404s, 405s, redirects): arbitrary paths never become labels.
const Unmatched = "unmatched"

// Metrics is one server's registry with its HTTP request metrics.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// New returns a registry holding the Go runtime's and the process's
// collectors and the HTTP request metrics:
//
//	upc_http_requests_total{method, route, code}
//	upc_http_request_duration_seconds{method, route}
//
// method is the request's (lowercase, "unknown" for any other than the
// standard ones), route the pattern it matched without its method (such as
// /v1/instances/{id}) or Unmatched, code the status answered.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests answered, by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to answer HTTP requests, by method and route pattern.",
			Buckets: []float64{.001, .005, .025, .1, .5, 2.5, 10, 60, 300},
		}, []string{"method", "route"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.duration,
	)
	return m
}

// MustRegister adds a server's own collectors to its registry; a name
// registered twice panics, as it is a programming error.
func (m *Metrics) MustRegister(cs ...prometheus.Collector) { m.reg.MustRegister(cs...) }

// Registry is the server's registry (tests gather from it directly).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus' text format (or OpenMetrics,
// as the scraper asks). It checks no credential: the server puts it behind
// its own rule.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, EnableOpenMetrics: true})
}

type routeKey struct{}

func routeOf(ctx context.Context) string {
	r, _ := ctx.Value(routeKey{}).(string)
	return r
}

// Instrument counts and times every request h serves (refusals included,
// so wrap the server's whole chain, access checks and all). mux is the
// server's router, asked which pattern each request matches: the route
// label is that pattern's path, never the request's own path.
func (m *Metrics) Instrument(mux *http.ServeMux, h http.Handler) http.Handler {
	route := promhttp.WithLabelFromCtx("route", routeOf)
	timed := promhttp.InstrumentHandlerDuration(m.duration,
		promhttp.InstrumentHandlerCounter(m.requests, h, route), route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		timed.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, Route(pattern))))
	})
}

// Route is the route label of a mux pattern: its path ("POST /v1/x/{id}"
// is "/v1/x/{id}"), or Unmatched for none.
func Route(pattern string) string {
	if pattern == "" {
		return Unmatched
	}
	if _, path, ok := strings.Cut(pattern, " "); ok {
		return strings.TrimSpace(path)
	}
	return pattern
}

// Ready answers GET /readyz: 200 {"status":"ready"} when check passes, else
// 503 {"status":"not ready","reason":...}. check's message is sent to
// anyone, so it must name a state ("the view is not rebuilt yet"), never a
// user, an instance or a secret.
func Ready(check func(ctx context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := check(ctx); err != nil {
			httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
			return
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// Always is a readiness check for servers that are ready once they serve.
func Always(context.Context) error { return nil }

// LatencyBuckets suit launches and container operations: 10 ms to about
// 5 min.
var LatencyBuckets = prometheus.ExponentialBuckets(0.01, 2.5, 12)
