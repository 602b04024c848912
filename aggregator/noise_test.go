package aggregator

import (
	"math"
	"testing"

	"github.com/e-mission/upc/internal/dp"
)

// The noise the aggregator publishes, drawn through aggregate (what Run
// calls once the users have answered): the central count mechanism must
// carry DLap(1/ε) and the metrics one Lap(Δ/ε) per mode. Missing noise, or a
// scale off by 2× (variance off by about 4×), fails.
func TestPublishedNoise(t *testing.T) {
	const samples = 4000
	noise := dp.New(dp.WithSeed(11))
	// Count: 40 users answered 1 each; ε = ln 2, so p = 1/2 and
	// Var(DLap) = 2p/(1−p)² = 4.
	cq, err := ParseQuery(Count, []byte(`{"offset": 1, "alpha": 0.5, "start_ts": 0, "end_ts": 1, "sel_region": null}`))
	if err != nil {
		t.Fatal(err)
	}
	runs := make([]userRun, 40)
	for i := range runs {
		runs[i].answer = &answer{count: 1}
	}
	ceps, _ := cq.Epsilon()
	var xs []float64
	for range samples {
		res := &Result{}
		if err := res.aggregate(runs, Options{Query: cq, Noise: Central}, ceps, noise); err != nil {
			t.Fatal(err)
		}
		xs = append(xs, float64(res.NoisyTotal.(int64))-40)
	}
	checkMoments(t, "count", xs, 4)

	// Metrics: one day of trip counts, Δ = 55 for IN_VEHICLE; offset 55 and
	// α = e^−1 make ε = 1 and the Laplace scale Δ/ε = 55: variance 2·55².
	mq, err := ParseQuery(Metrics, []byte(`{"start_time": {"year": 2015, "month": 8, "day": 27, "timezone": "UTC"},
	  "end_time": {"year": 2015, "month": 8, "day": 28, "timezone": "UTC"}, "freq": "DAILY", "metric": "count",
	  "offset": {"IN_VEHICLE": 55}, "alpha": {"IN_VEHICLE": 0.36787944117144233}}`))
	if err != nil {
		t.Fatal(err)
	}
	meps, _ := mq.Epsilon()
	if math.Abs(meps.Total-1) > 1e-9 {
		t.Fatalf("ε = %v, want 1", meps.Total)
	}
	mruns := make([]userRun, 30)
	for i := range mruns {
		mruns[i].answer = &answer{metrics: map[string]float64{"IN_VEHICLE": 100}}
	}
	xs = xs[:0]
	for range samples {
		res := &Result{}
		if err := res.aggregate(mruns, Options{Query: mq, Noise: Central}, meps, noise); err != nil {
			t.Fatal(err)
		}
		xs = append(xs, res.NoisyTotal.(map[string]float64)["IN_VEHICLE"]-3000)
	}
	checkMoments(t, "metrics", xs, 2*55*55)
}

// checkMoments wants mean ≈ 0 and variance within 25% of want: a sample of
// 4000 puts the variance within about ±10% of the truth.
func checkMoments(t *testing.T, what string, xs []float64, want float64) {
	t.Helper()
	var sum, sq float64
	for _, x := range xs {
		sum += x
	}
	mean := sum / float64(len(xs))
	for _, x := range xs {
		sq += (x - mean) * (x - mean)
	}
	variance := sq / float64(len(xs)-1)
	if math.Abs(mean) > 4*math.Sqrt(want/float64(len(xs))) || variance < 0.75*want || variance > 1.33*want {
		t.Errorf("%s noise: mean %.3f, variance %.3f; want 0 and %.3f", what, mean, variance, want)
	}
}
