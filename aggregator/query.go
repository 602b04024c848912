package aggregator

import (
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/internal/dp"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/metrics"
)

// Kinds of aggregate query.
const (
	Count   = "count"
	Metrics = "metrics"
)

// Noise modes.
const (
	// Central: users' services answer exactly; the aggregator adds the noise
	// to the total (the original).
	Central = "central"
	// Distributed: each user's count service adds its share of the noise, so
	// the aggregator never sees one user's exact answer (count only).
	Distributed = "distributed"
)

// Query is a parsed query file.
type Query struct {
	Kind string
	// Count is the count service's query (Kind count).
	Count count.Query
	// Metrics is the metrics request without pm_address and uuid (Kind metrics).
	Metrics metrics.LocalDateRequest
}

// LoadQuery reads a query file of kind, in the formats the user's client
// reads (client.LoadCountQuery, client.LoadMetricsQuery).
func LoadQuery(kind, path string) (Query, error) {
	var q Query
	var err error
	switch kind {
	case Count:
		q.Count, err = client.LoadCountQuery(path)
	case Metrics:
		q.Metrics, err = client.LoadMetricsQuery(path)
	default:
		err = fmt.Errorf("query kind %q is not count or metrics", kind)
	}
	if err != nil {
		return Query{}, err
	}
	q.Kind = kind
	return q, nil
}

// ParseQuery decodes and checks a query file's content.
func ParseQuery(kind string, b []byte) (Query, error) {
	switch kind {
	case Count:
		q, err := client.ParseCountQuery(b)
		if err != nil {
			return Query{}, err
		}
		return Query{Kind: Count, Count: q}, nil
	case Metrics:
		q, err := client.ParseMetricsQuery(b)
		if err != nil {
			return Query{}, err
		}
		return Query{Kind: Metrics, Metrics: q}, nil
	}
	return Query{}, fmt.Errorf("query kind %q is not count or metrics", kind)
}

// Epsilons are a query's privacy costs: the total charged to each user and,
// for metrics, its part by mode.
type Epsilons struct {
	Total  float64
	ByMode map[string]float64
	// Sensitivity by mode (days·Δf) for metrics, 1 for count.
	Sensitivity map[string]float64
}

// Epsilon is ε of q, as the services charge it: −ln(α)·Δf/offset, with
// Δf = 1 for count and days·Δf[metric][mode] for metrics.
func (q Query) Epsilon() (Epsilons, error) {
	if q.Kind == Count {
		e, err := q.Count.Cost()
		return Epsilons{Total: e}, err
	}
	r := q.Metrics
	days, err := metrics.NumDays(r.StartTime, r.EndTime)
	if err != nil {
		return Epsilons{}, err
	}
	out := Epsilons{ByMode: map[string]float64{}, Sensitivity: map[string]float64{}}
	for _, m := range q.Modes() {
		df, ok := metrics.DeltaF[r.Metric][m]
		if !ok {
			return Epsilons{}, fmt.Errorf("mode %s has no sensitivity for %s", m, r.Metric)
		}
		e, err := dp.Epsilon(r.Alpha[m], days*df, r.Offset[m])
		if err != nil {
			return Epsilons{}, fmt.Errorf("mode %s: %w", m, err)
		}
		out.ByMode[m], out.Sensitivity[m] = e, days*df
		out.Total += e
	}
	return out, nil
}

// Modes are a metrics query's modes, sorted.
func (q Query) Modes() []string {
	var ms []string
	for m := range q.Metrics.Offset {
		ms = append(ms, m)
	}
	sort.Strings(ms)
	return ms
}

// countNoise is the central discrete Laplace answer, clamped at 0 like the original.
func countNoise(n *dp.Noise, total int64, eps float64) (int64, error) {
	return n.CountMechanism(total, eps)
}

// metricsNoise adds Laplace noise of scale Δ/ε to each mode's total (the
// original's max(total + Lap(1/ε), 0) generalised to sensitivity Δ).
func metricsNoise(n *dp.Noise, totals map[string]float64, eps Epsilons) (map[string]float64, error) {
	out := map[string]float64{}
	// Modes in sorted order: a seeded run draws each mode's noise in the
	// same order, so its rerun gives the same answers (a map's order is
	// random).
	for _, m := range slices.Sorted(maps.Keys(totals)) {
		t := totals[m]
		e, ok := eps.ByMode[m]
		if !ok {
			out[m] = t // a mode the service does not answer: always 0
			continue
		}
		v, err := n.LaplaceMechanism(t/eps.Sensitivity[m], e)
		if err != nil {
			return nil, fmt.Errorf("mode %s: %w", m, err)
		}
		out[m] = v * eps.Sensitivity[m]
	}
	return out, nil
}
