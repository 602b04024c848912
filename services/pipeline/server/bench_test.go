package server

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/e-mission/upc/services/internal/testpm"
)

// cpuTime is the process's CPU time; the PM runs in this process, so it
// counts both sides of the service call.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkServiceRunThroughPM times one POST /run_pipeline for a user-day
// held in a real PM (encrypted store, HTTP on loopback): every read and
// write of the pipeline goes through the PM's data API. The PM is created and
// the day uploaded outside the timer.
func BenchmarkServiceRunThroughPM(b *testing.B) {
	for _, day := range []string{"shankari_2015-aug-27", "shankari_2015-08-23", "iphone_3_2016-02-22"} {
		b.Run(day, func(b *testing.B) {
			url := serve(b, testpm.Shared())
			var cpu time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				c := startPM(b)
				upload(b, c, day, "u")
				body := `{` + pmFields(b, c) + `, "uuid": "u"}`
				b.StartTimer()
				c0 := cpuTime()
				resp, _ := testpm.Post(b, url+"/run_pipeline", testpm.ServiceSecret, body)
				cpu += cpuTime() - c0
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("run_pipeline: %s", resp.Status)
				}
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N)/1000, "cpu-ms/call")
		})
	}
}
