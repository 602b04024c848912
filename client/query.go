package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/metrics"
)

// DefaultModes are the modes a metrics query file with one number for
// offset and alpha asks about.
var DefaultModes = []string{"BICYCLE", "CAR", "TRANSIT", "WALK"}

// LoadCountQuery reads a count query file: the original's
// example_count_query.json (the query object itself), or {"query": {...}} as
// count_aggregator.py read it.
func LoadCountQuery(path string) (count.Query, error) {
	b, err := readQuery(path)
	if err != nil {
		return count.Query{}, err
	}
	q, err := ParseCountQuery(b)
	if err != nil {
		return count.Query{}, fmt.Errorf("query %s: %w", path, err)
	}
	return q, nil
}

// LoadMetricsQuery reads a metrics query file, the original's
// example_metric_query.json: the request without pm_address and uuid, where
// offset and alpha are one number (applied to every mode of DefaultModes) or
// an object by mode.
func LoadMetricsQuery(path string) (metrics.LocalDateRequest, error) {
	b, err := readQuery(path)
	if err != nil {
		return metrics.LocalDateRequest{}, err
	}
	q, err := ParseMetricsQuery(b)
	if err != nil {
		return metrics.LocalDateRequest{}, fmt.Errorf("query %s: %w", path, err)
	}
	return q, nil
}

func readQuery(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read query: %w", err)
	}
	return b, nil
}

// ParseCountQuery decodes and checks a count query file's content.
func ParseCountQuery(b []byte) (count.Query, error) {
	var wrapped struct {
		Query json.RawMessage `json:"query"`
	}
	if json.Unmarshal(b, &wrapped) == nil && len(wrapped.Query) > 0 {
		b = wrapped.Query
	}
	var q count.Query
	if err := strict(b, &q); err != nil {
		return count.Query{}, err
	}
	if _, err := q.Validate(); err != nil {
		return count.Query{}, err
	}
	return q, nil
}

// ParseMetricsQuery decodes and checks a metrics query file's content.
func ParseMetricsQuery(b []byte) (metrics.LocalDateRequest, error) {
	var f struct {
		StartTime metrics.DateBound `json:"start_time"`
		EndTime   metrics.DateBound `json:"end_time"`
		Freq      string            `json:"freq"`
		Metric    string            `json:"metric"`
		Offset    json.RawMessage   `json:"offset"`
		Alpha     json.RawMessage   `json:"alpha"`
	}
	if err := strict(b, &f); err != nil {
		return metrics.LocalDateRequest{}, err
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
		return metrics.LocalDateRequest{}, err
	}
	return req, nil
}

func strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
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
