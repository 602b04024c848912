package pm

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/e-mission/upc/internal/obs"
)

// What a PM exports at GET /metrics (docs/metrics.md), to its owner and
// monitors, beside obs's HTTP and runtime metrics. Labels are outcomes and
// payer kinds: never a grant, a service's name, a stream or a query.
//
//	upc_pm_budget_spent_epsilon_total{payer}  ε charged to the budget since the process started; payer owner or grant
//	upc_pm_budget_spends_total{outcome}       spend requests by outcome: charged, replayed (already paid: nothing charged),
//	                                          refused_budget (the budget or the grant's cap in the ledger said no),
//	                                          refused_grant_cap (over the grant's ε cap: 403)
type metrics struct {
	*obs.Metrics
	spent  *prometheus.CounterVec
	spends *prometheus.CounterVec
}

// Payers and spend outcomes.
const (
	payerOwner = "owner"
	payerGrant = "grant"

	spendCharged         = "charged"
	spendReplayed        = "replayed"
	spendRefusedBudget   = "refused_budget"
	spendRefusedGrantCap = "refused_grant_cap"
)

func newMetrics() *metrics {
	m := &metrics{
		Metrics: obs.New(),
		spent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: obs.Namespace, Subsystem: "pm", Name: "budget_spent_epsilon_total",
			Help: "Privacy budget (ε) charged since the process started, by payer (owner or grant).",
		}, []string{"payer"}),
		spends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: obs.Namespace, Subsystem: "pm", Name: "budget_spends_total",
			Help: "Spend requests by outcome: charged, replayed (nothing charged), refused_budget, refused_grant_cap.",
		}, []string{"outcome"}),
	}
	for _, p := range []string{payerOwner, payerGrant} {
		m.spent.WithLabelValues(p)
	}
	for _, o := range []string{spendCharged, spendReplayed, spendRefusedBudget, spendRefusedGrantCap} {
		m.spends.WithLabelValues(o)
	}
	m.MustRegister(m.spent, m.spends)
	return m
}

// spend records one spend's outcome, and its ε once charged.
func (m *metrics) spend(payer, outcome string, eps float64) {
	m.spends.WithLabelValues(outcome).Inc()
	if outcome == spendCharged {
		m.spent.WithLabelValues(payer).Add(eps)
	}
}

// errClosed is /readyz's answer once the store is closed.
var errClosed = errors.New("the store is closed")

// ready: the PM serves once its store is open (sealed or not: a sealed PM
// serves its owner's claim).
func (s *Server) ready(context.Context) error {
	if s.st.Closed() {
		return errClosed
	}
	return nil
}
