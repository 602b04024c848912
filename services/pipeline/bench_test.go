package pipeline

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time: on a shared machine wall
// time also counts other processes, CPU time does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var benchDays = []string{"shankari_2015-aug-27", "shankari_2016-06-20", "shankari_2016-08-10", "shankari_2015-08-23", "iphone_3_2016-02-22", "sunil_2016-07-20"}

// BenchmarkPipelineUserDay runs the whole pipeline over one user-day held in
// the in-memory store (the store is rebuilt outside the timer), and reports
// wall and CPU time per user-day, per-stage time, and filtered points per
// second of pipeline time (overall and per stage).
func BenchmarkPipelineUserDay(b *testing.B) {
	ctx := context.Background()
	for _, day := range benchDays {
		b.Run(day, func(b *testing.B) {
			base, user := loadDay(b, day)
			entries, _ := base.Find(ctx, Query{})
			points := base.Count(Timeseries, KeyFilteredLocation)
			stage := map[string]time.Duration{}
			var total, cpu time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				st := NewMemStore()
				_ = st.Insert(ctx, Timeseries, entries)
				r := &Run{Store: st, UserID: user}
				b.StartTimer()
				c0, t0 := cpuTime(), time.Now()
				if err := r.Execute(ctx); err != nil {
					b.Fatal(err)
				}
				total += time.Since(t0)
				cpu += cpuTime() - c0
				for k, d := range r.Timing() {
					stage[k] += d
				}
			}
			n := float64(b.N)
			b.ReportMetric(float64(total.Microseconds())/n/1000, "ms/userday")
			b.ReportMetric(float64(cpu.Microseconds())/n/1000, "cpu-ms/userday")
			b.ReportMetric(float64(points)*n/total.Seconds(), "points/s")
			for _, s := range Stages[2:] {
				d := stage[s.Name].Seconds() / n
				b.ReportMetric(d*1000, s.Name+"-ms")
				if d > 0 {
					b.ReportMetric(float64(points)/d, s.Name+"-points/s")
				}
			}
		})
	}
}
