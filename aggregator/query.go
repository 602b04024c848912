package aggregator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"

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

// DefaultModes are the modes a metrics query file with one number for
// offset and alpha asks about.
var DefaultModes = []string{"BICYCLE", "CAR", "TRANSIT", "WALK"}

// Query is a parsed query file.
type Query struct {
	Kind string
	// Count is the count service's query (Kind count).
	Count count.Query
	// Metrics is the metrics request without pm_address and uuid (Kind metrics).
	Metrics metrics.LocalDateRequest
}

// LoadQuery reads a query file of kind: for count, the original's
// example_count_query.json (the query object itself) or {"query": {...}} as
// count_aggregator.py read it; for metrics, example_metric_query.json, where
// offset and alpha are one number (applied to every mode of DefaultModes) or
// an object by mode.
func LoadQuery(kind, path string) (Query, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Query{}, fmt.Errorf("read query: %w", err)
	}
	q, err := ParseQuery(kind, b)
	if err != nil {
		return Query{}, fmt.Errorf("query %s: %w", path, err)
	}
	return q, nil
}

// ParseQuery decodes and checks a query file's content.
func ParseQuery(kind string, b []byte) (Query, error) {
	switch kind {
	case Count:
		var wrapped struct {
			Query json.RawMessage `json:"query"`
		}
		if json.Unmarshal(b, &wrapped) == nil && len(wrapped.Query) > 0 {
			b = wrapped.Query
		}
		var q count.Query
		if err := strict(b, &q); err != nil {
			return Query{}, err
		}
		if _, err := q.Validate(); err != nil {
			return Query{}, err
		}
		return Query{Kind: Count, Count: q}, nil
	case Metrics:
		var f struct {
			StartTime metrics.DateBound `json:"start_time"`
			EndTime   metrics.DateBound `json:"end_time"`
			Freq      string            `json:"freq"`
			Metric    string            `json:"metric"`
			Offset    json.RawMessage   `json:"offset"`
			Alpha     json.RawMessage   `json:"alpha"`
		}
		if err := strict(b, &f); err != nil {
			return Query{}, err
		}
		var errs []error
		offset, err := byMode(f.Offset)
		if err != nil {
			errs = append(errs, fmt.Errorf("offset: %w", err))
		}
		alpha, err := byMode(f.Alpha)
		if err != nil {
			errs = append(errs, fmt.Errorf("alpha: %w", err))
		}
		if _, err := metrics.ParseFreq(f.Freq); err != nil {
			errs = append(errs, err)
		}
		req := metrics.LocalDateRequest{StartTime: f.StartTime, EndTime: f.EndTime, Freq: f.Freq, Metric: f.Metric, Offset: offset, Alpha: alpha}
		if len(errs) == 0 {
			if _, err := metrics.Cost(f.Metric, f.StartTime, f.EndTime, offset, alpha); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return Query{}, err
		}
		return Query{Kind: Metrics, Metrics: req}, nil
	}
	return Query{}, fmt.Errorf("query kind %q is not count or metrics", kind)
}

func strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}

// byMode reads a number (for every default mode) or an object of numbers.
func byMode(raw json.RawMessage) (map[string]float64, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, errors.New("required")
	}
	var one float64
	if err := json.Unmarshal(raw, &one); err == nil {
		m := map[string]float64{}
		for _, mode := range DefaultModes {
			m[mode] = one
		}
		return m, nil
	}
	var m map[string]float64
	if err := json.Unmarshal(raw, &m); err != nil || len(m) == 0 {
		return nil, errors.New("want a number or an object of numbers by mode")
	}
	return m, nil
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
	for m, t := range totals {
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
