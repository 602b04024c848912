package aggregator

import (
	"math"
	"strings"
	"testing"
)

func TestParseQuery(t *testing.T) {
	const countQuery = `{"offset": 100, "alpha": 0.05, "start_ts": "2017-08-01 00:00:00+00:00", "end_ts": 1556668800,
	  "sel_region": {"geometry": {"type": "Polygon", "coordinates": [[[-122.27, 37.86], [-122.27, 37.88], [-122.25, 37.88], [-122.25, 37.86], [-122.27, 37.86]]]}}}`
	const metricsQuery = `{"offset": 100, "alpha": 0.05, "start_time": {"year": 2015, "month": 7, "day": 22, "timezone": "America/Los_Angeles"},
	  "end_time": {"year": 2015, "month": 7, "day": 23, "timezone": "America/Los_Angeles"}, "freq": "DAILY", "metric": "count"}`
	cases := []struct {
		name, kind, body string
		eps              float64
		bad              string
	}{
		{"original count example", Count, countQuery, -math.Log(0.05) / 100, ""},
		{"count wrapped as count_aggregator read it", Count, `{"query": ` + countQuery + `}`, -math.Log(0.05) / 100, ""},
		{"original metrics example", Metrics, metricsQuery, 4 * -math.Log(0.05) * 55 / 100, ""},
		{"metrics by mode", Metrics, strings.Replace(strings.Replace(metricsQuery, `"offset": 100`, `"offset": {"CAR": 100}`, 1), `"alpha": 0.05`, `"alpha": {"CAR": 0.05}`, 1), -math.Log(0.05) * 55 / 100, ""},
		{"count alpha out of range", Count, strings.Replace(countQuery, "0.05", "1.5", 1), 0, "alpha"},
		{"count unknown field", Count, `{"ofset": 1}`, 0, "unknown field"},
		{"metrics bad freq", Metrics, strings.Replace(metricsQuery, "DAILY", "HOURLY", 1), 0, "HOURLY"},
		{"unknown kind", "sum", countQuery, 0, "not count or metrics"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, err := ParseQuery(c.kind, []byte(c.body))
			if c.bad != "" {
				if err == nil || !strings.Contains(err.Error(), c.bad) {
					t.Fatalf("error %v, want one naming %q", err, c.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			e, err := q.Epsilon()
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(e.Total-c.eps) > 1e-12 {
				t.Errorf("ε %v, want %v", e.Total, c.eps)
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	o := Options{Query: Query{Kind: Metrics}, Noise: Distributed, Upload: "zip", Parallel: -1}
	err := o.Validate()
	for _, want := range []string{"router", "distributed", "upload", "parallel"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
