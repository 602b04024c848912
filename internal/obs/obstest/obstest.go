// Package obstest scrapes a UPC server's /metrics in tests, over real HTTP,
// and reads values out of what it parsed.
package obstest

import (
	"io"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is one scrape, by metric name.
type Families map[string]*dto.MetricFamily

// Get sends GET url with token as a bearer ("" sends none) and returns the
// status and body.
func Get(t testing.TB, c *http.Client, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// Scrape GETs url (a server's /metrics) with token and parses the answer,
// failing the test unless it is 200 and well formed.
func Scrape(t testing.TB, c *http.Client, url, token string) Families {
	t.Helper()
	code, body := Get(t, c, url, token)
	if code != http.StatusOK {
		t.Fatalf("scrape %s: %d %s", url, code, body)
	}
	return Parse(t, body)
}

// Parse reads Prometheus' text format.
func Parse(t testing.TB, text string) Families {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse metrics: %v\n%s", err, text)
	}
	return fs
}

// Has reports whether the scrape holds a family named name.
func (f Families) Has(name string) bool { _, ok := f[name]; return ok }

// Value sums, over the series of name whose labels include every pair of
// labels ("k1", "v1", "k2", "v2", ...), a counter's, gauge's or untyped
// value, or a histogram's sample count. A missing family or series is 0.
func (f Families) Value(name string, labels ...string) float64 {
	return f.sum(name, labels, func(m *dto.Metric) float64 {
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
		return 0
	})
}

// Sum is Value for a histogram's sum of observations.
func (f Families) Sum(name string, labels ...string) float64 {
	return f.sum(name, labels, func(m *dto.Metric) float64 { return m.GetHistogram().GetSampleSum() })
}

func (f Families) sum(name string, labels []string, v func(*dto.Metric) float64) float64 {
	mf, ok := f[name]
	if !ok {
		return 0
	}
	total := 0.0
	for _, m := range mf.Metric {
		if matches(m, labels) {
			total += v(m)
		}
	}
	return total
}

// LabelValues lists the values label takes among name's series.
func (f Families) LabelValues(name, label string) []string {
	var out []string
	mf, ok := f[name]
	if !ok {
		return nil
	}
	for _, m := range mf.Metric {
		for _, lp := range m.Label {
			if lp.GetName() == label {
				out = append(out, lp.GetValue())
			}
		}
	}
	return out
}

func matches(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.Label {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
