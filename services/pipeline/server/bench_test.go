package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkServiceRunThroughPM times one POST /run_pipeline for a user-day
// held in a real PM (encrypted store, HTTP on loopback): every read and
// write of the pipeline goes through the PM's data API. The PM is created and
// the day uploaded outside the timer.
func BenchmarkServiceRunThroughPM(b *testing.B) {
	for _, day := range []string{"shankari_2015-aug-27", "shankari_2015-08-23", "iphone_3_2016-02-22"} {
		b.Run(day, func(b *testing.B) {
			srv := httptest.NewServer(New(quiet, PMStores(nil)).Handler())
			defer srv.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				c := startPM(b)
				upload(b, c, day, "u")
				body := `{"pm_address": "` + c.BaseURL() + `", "uuid": "u"}`
				b.StartTimer()
				resp, err := http.Post(srv.URL+"/run_pipeline", "application/json", strings.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("run_pipeline: %s", resp.Status)
				}
			}
		})
	}
}
