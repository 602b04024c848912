package metrics

import (
	"testing"

	"github.com/e-mission/upc/services/internal/testpm"
)

// TestMetricsScrape: the metrics service counts its requests by route and
// code, refusals included; /metrics (beside its POST /metrics/local_date)
// answers only its secret (the refusals are testpm.Scrape's), /readyz
// anyone.
func TestMetricsScrape(t *testing.T) {
	a := startPM(t, 1)
	url := startMetricsWith(t, testpm.Shared())
	body := `{` + pmFields(t, a) + `, ` + accessQuery + `}`
	if resp, b := testpm.Post(t, url+"/v1/metrics/local_date", testpm.ServiceSecret, body); resp.StatusCode != 200 {
		t.Fatalf("local date query: %d %s", resp.StatusCode, b)
	}
	if resp, _ := testpm.Post(t, url+"/metrics/local_date", "", body); resp.StatusCode != 401 {
		t.Fatalf("a query without a credential: %d", resp.StatusCode)
	}
	if resp, _ := testpm.Post(t, url+"/metrics/local_date", testpm.ServiceSecret, `{}`); resp.StatusCode != 400 {
		t.Fatalf("an empty query: %d", resp.StatusCode)
	}
	f := testpm.Scrape(t, url, testpm.GrantOf(t, a))
	for _, w := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"method", "post", "route", "/v1/metrics/local_date", "code", "200"}, 1},
		{[]string{"method", "post", "route", "/metrics/local_date", "code", "400"}, 1},
		{[]string{"method", "post", "route", "/metrics/local_date", "code", "401"}, 1},
	} {
		if got := f.Value("upc_http_requests_total", w.labels...); got != w.want {
			t.Errorf("upc_http_requests_total%v = %v, want %v", w.labels, got, w.want)
		}
	}
}
