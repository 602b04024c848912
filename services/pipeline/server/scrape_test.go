package server

import (
	"testing"

	"github.com/e-mission/upc/services/internal/testpm"
)

// TestMetricsScrape: the pipeline service counts its requests by route and
// code, refusals and failures included; /metrics answers only its secret
// (the refusals are testpm.Scrape's), /readyz anyone.
func TestMetricsScrape(t *testing.T) {
	url := serve(t, testpm.Shared())
	if code, b := post(t, url+"/v1/run", `{}`); code != 400 {
		t.Fatalf("an empty run: %d %s", code, b)
	}
	if code, b := post(t, url+"/run_pipeline", `{"pm_address": "http://127.0.0.1:1", "grant": "g", "uuid": "u"}`); code != 502 {
		t.Fatalf("a run over a PM that does not answer: %d %s", code, b)
	}
	if resp, _ := testpm.Post(t, url+"/v1/run", "", `{}`); resp.StatusCode != 401 {
		t.Fatalf("a run without a credential: %d", resp.StatusCode)
	}
	f := testpm.Scrape(t, url, "upcg_not-a-grant-of-this-service")
	for _, w := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"method", "post", "route", "/v1/run", "code", "400"}, 1},
		{[]string{"method", "post", "route", "/v1/run", "code", "401"}, 1},
		{[]string{"method", "post", "route", "/run_pipeline", "code", "502"}, 1},
	} {
		if got := f.Value("upc_http_requests_total", w.labels...); got != w.want {
			t.Errorf("upc_http_requests_total%v = %v, want %v", w.labels, got, w.want)
		}
	}
}
