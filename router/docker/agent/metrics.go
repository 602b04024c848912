package agent

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/e-mission/upc/internal/obs"
)

// What an agent exports at GET /metrics (docs/metrics.md), to the
// router's token and monitors, beside obs's HTTP and runtime metrics.
// Labels are operations and outcomes: never a user, an instance or an image.
//
//	upc_agent_container_operation_duration_seconds{op, outcome}  histogram: launch, remove, pause, unpause; outcome ok, refused (403) or error
type metrics struct {
	*obs.Metrics
	ops *prometheus.HistogramVec
}

// Operations and outcomes.
const (
	opLaunch  = "launch"
	opRemove  = "remove"
	opPause   = "pause"
	opUnpause = "unpause"

	outcomeOK      = "ok"
	outcomeRefused = "refused"
	outcomeError   = "error"
)

func newMetrics() *metrics {
	m := &metrics{
		Metrics: obs.New(),
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: obs.Namespace, Subsystem: "agent", Name: "container_operation_duration_seconds",
			Help:    "Container operations asked by the router (launch, remove, pause, unpause), by outcome (ok, refused, error).",
			Buckets: obs.LatencyBuckets,
		}, []string{"op", "outcome"}),
	}
	for _, op := range []string{opLaunch, opRemove, opPause, opUnpause} {
		for _, o := range []string{outcomeOK, outcomeRefused, outcomeError} {
			m.ops.WithLabelValues(op, o)
		}
	}
	m.MustRegister(m.ops)
	return m
}

// observe records one operation that began at start and ended with err.
func (m *metrics) observe(op string, err error, start time.Time) {
	outcome := outcomeOK
	switch {
	case errors.Is(err, ErrForbidden):
		outcome = outcomeRefused
	case err != nil:
		outcome = outcomeError
	}
	m.ops.WithLabelValues(op, outcome).Observe(time.Since(start).Seconds())
}

// errEngineDown is /readyz's answer while the Docker engine does not answer.
var errEngineDown = errors.New("the docker engine does not answer")
