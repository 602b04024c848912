package count

import (
	"testing"

	"github.com/e-mission/upc/services/internal/testpm"
)

// TestMetricsScrape: the count service counts its requests by route and
// code, refusals included; /metrics answers only its secret (the refusals
// are testpm.Scrape's), /readyz anyone.
func TestMetricsScrape(t *testing.T) {
	a := startPM(t, 1)
	url := serve(t).URL
	body := `{` + pmFields(t, a) + `, "uuid": "u", ` + accessQuery + `}`
	if resp, b := testpm.Post(t, url+"/v1/count_query", testpm.ServiceSecret, body); resp.StatusCode != 200 {
		t.Fatalf("count query: %d %s", resp.StatusCode, b)
	}
	if resp, _ := testpm.Post(t, url+"/count_query", "", body); resp.StatusCode != 401 {
		t.Fatalf("count query without a credential: %d", resp.StatusCode)
	}
	if resp, _ := testpm.Post(t, url+"/v1/count_query", testpm.ServiceSecret, `{}`); resp.StatusCode != 400 {
		t.Fatalf("an empty count query: %d", resp.StatusCode)
	}
	f := testpm.Scrape(t, url, testpm.GrantOf(t, a))
	for _, w := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"method", "post", "route", "/v1/count_query", "code", "200"}, 1},
		{[]string{"method", "post", "route", "/v1/count_query", "code", "400"}, 1},
		{[]string{"method", "post", "route", "/count_query", "code", "401"}, 1},
	} {
		if got := f.Value("upc_http_requests_total", w.labels...); got != w.want {
			t.Errorf("upc_http_requests_total%v = %v, want %v", w.labels, got, w.want)
		}
	}
}
