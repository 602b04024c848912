package dp

import (
	"fmt"
	"math"
	"sort"
	"testing"

	"github.com/e-mission/upc/internal/testskip"
)

// The statistical tests draw from the production source (crypto/rand). Each
// statistic is compared with a bound about 6.5 standard deviations (or a
// chi-square p-value near 1e-10) away from its expectation, so a correct
// sampler fails them with probability below 1e-9 per run; the "power" cases
// check that the same bounds reject a 5% error in the scale.
const zBound = 6.5

// chiSquareBound is the chi-square quantile for df degrees of freedom at the
// upper-tail normal deviate z (Wilson–Hilferty).
func chiSquareBound(df int, z float64) float64 {
	d := float64(df)
	h := 2 / (9 * d)
	return d * math.Pow(1-h+z*math.Sqrt(h), 3)
}

func moments(xs []float64) (mean, variance, m4 float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		d := (x - mean) * (x - mean)
		variance += d
		m4 += d * d
	}
	return mean, variance / float64(len(xs)-1), m4 / float64(len(xs))
}

// momentProblems checks the sample mean against 0 and the sample variance
// against want, each within zBound standard errors.
func momentProblems(xs []float64, want float64) []string {
	var probs []string
	n := float64(len(xs))
	mean, v, m4 := moments(xs)
	if se := math.Sqrt(want / n); math.Abs(mean) > zBound*se {
		probs = append(probs, fmt.Sprintf("mean %.4f is %.1f SE from 0", mean, math.Abs(mean)/se))
	}
	if se := math.Sqrt((m4 - v*v) / n); math.Abs(v-want) > zBound*se {
		probs = append(probs, fmt.Sprintf("variance %.4f vs %.4f is %.1f SE off", v, want, math.Abs(v-want)/se))
	}
	return probs
}

// dlapProblems runs the moment and chi-square tests of integer samples
// against DLap(sc).
func dlapProblems(xs []int64, sc Scale) []string {
	fs := make([]float64, len(xs))
	counts := map[int64]int{}
	for i, x := range xs {
		fs[i] = float64(x)
		counts[x]++
	}
	probs := momentProblems(fs, DiscreteLaplaceVariance(sc))
	// Bins −K..K each expecting ≥ 20 draws, plus the two tails.
	n := float64(len(xs))
	var k int64
	for n*DiscreteLaplacePMF(sc, k+1) >= 20 {
		k++
	}
	p := math.Exp(-1 / sc.Float())
	tail := math.Pow(p, float64(k+1)) / (1 + p) * n
	var lo, hi int
	for x, c := range counts {
		if x < -k {
			lo += c
		} else if x > k {
			hi += c
		}
	}
	chi := sq(float64(lo)-tail)/tail + sq(float64(hi)-tail)/tail
	for x := -k; x <= k; x++ {
		e := n * DiscreteLaplacePMF(sc, x)
		chi += sq(float64(counts[x])-e) / e
	}
	df := int(2*k + 2)
	if b := chiSquareBound(df, zBound); chi > b {
		probs = append(probs, fmt.Sprintf("chi-square %.1f > %.1f (df %d)", chi, b, df))
	}
	return probs
}

func sq(x float64) float64 { return x * x }

func mustScale(t *testing.T, eps float64) Scale {
	t.Helper()
	sc, err := ScaleFor(eps, 1)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestEpsilon(t *testing.T) {
	eps, err := Epsilon(0.05, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(eps-0.029957322735539909) > 1e-15 || math.Abs(1/eps-33.38) > 0.01 {
		t.Fatalf("Epsilon(0.05, 1, 100) = %v (scale %v); want ≈ 0.02996, scale ≈ 33.4", eps, 1/eps)
	}
	for _, bad := range [][3]float64{{0, 1, 1}, {1, 1, 1}, {0.5, -1, 1}, {0.5, 1, 0}, {math.NaN(), 1, 1}, {0.5, 1, math.Inf(1)}} {
		if _, err := Epsilon(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("Epsilon%v: expected an error", bad)
		}
	}
	if _, err := Epsilon(2, -1, 0); err == nil || len(fmt.Sprint(err)) < 60 {
		t.Errorf("Epsilon with three bad values should name all three: %v", err)
	}
}

func TestScaleRoundsUp(t *testing.T) {
	for _, eps := range []float64{0.029957, 0.1, 1, 3.7, 100} {
		sc := mustScale(t, eps)
		if sc.Float() < 1/eps || sc.Float()-1/eps > 1.0/scaleDenominator {
			t.Errorf("ScaleFor(%v) = %v (%v), want 1/ε = %v rounded up", eps, sc, sc.Float(), 1/eps)
		}
	}
	if _, err := ScaleFor(1e-12, 1); err == nil {
		t.Error("a scale of 1e12 should be refused")
	}
}

func TestDiscreteLaplaceDistribution(t *testing.T) {
	if testing.Short() {
		testskip.Skip(t, "statistical test")
	}
	const draws = 200_000
	for _, eps := range []float64{2, 1.0 / 3, 0.029957} {
		sc := mustScale(t, eps)
		t.Run(fmt.Sprintf("scale %.3f", sc.Float()), func(t *testing.T) {
			n := New()
			xs := make([]int64, draws)
			for i := range xs {
				xs[i] = n.DiscreteLaplace(sc)
			}
			if probs := dlapProblems(xs, sc); len(probs) > 0 {
				t.Fatalf("DLap(%v) samples fail: %v", sc.Float(), probs)
			}
		})
	}
	t.Run("power: a 5% wrong scale is rejected", func(t *testing.T) {
		sc := mustScale(t, 1.0/3)
		wrong := Scale{Num: sc.Num * 105 / 100, Den: sc.Den}
		n := New(WithSeed(7))
		xs := make([]int64, draws)
		for i := range xs {
			xs[i] = n.DiscreteLaplace(wrong)
		}
		if probs := dlapProblems(xs, sc); len(probs) == 0 {
			t.Fatal("the tests accepted samples of a 5% larger scale")
		}
	})
}

// laplaceProblems checks continuous samples against Lap(scale): moments and a
// chi-square over 40 equal-probability bins.
func laplaceProblems(xs []float64, scale float64) []string {
	probs := momentProblems(xs, 2*scale*scale)
	const bins = 40
	edges := make([]float64, bins-1)
	for i := range edges {
		q := float64(i+1) / bins
		if q < 0.5 {
			edges[i] = scale * math.Log(2*q)
		} else {
			edges[i] = -scale * math.Log(2*(1-q))
		}
	}
	counts := make([]int, bins)
	for _, x := range xs {
		counts[sort.SearchFloat64s(edges, x)]++
	}
	e := float64(len(xs)) / bins
	chi := 0.0
	for _, c := range counts {
		chi += sq(float64(c)-e) / e
	}
	if b := chiSquareBound(bins-1, zBound); chi > b {
		probs = append(probs, fmt.Sprintf("chi-square %.1f > %.1f", chi, b))
	}
	return probs
}

func TestLaplaceDistribution(t *testing.T) {
	if testing.Short() {
		testskip.Skip(t, "statistical test")
	}
	const draws = 200_000
	scale := 1 / 0.029957322735539909
	n := New()
	xs := make([]float64, draws)
	for i := range xs {
		xs[i] = n.Laplace(scale)
	}
	if probs := laplaceProblems(xs, scale); len(probs) > 0 {
		t.Fatalf("Laplace samples fail: %v", probs)
	}
	wrong := New(WithSeed(3))
	for i := range xs {
		xs[i] = wrong.Laplace(scale * 1.05)
	}
	if probs := laplaceProblems(xs, scale); len(probs) == 0 {
		t.Fatal("the tests accepted samples of a 5% larger scale")
	}
}

func TestMechanisms(t *testing.T) {
	n := New()
	eps, _ := Epsilon(0.05, 1, 100)
	for range 1000 {
		v, err := n.LaplaceMechanism(3, eps)
		if err != nil || v < 0 {
			t.Fatalf("LaplaceMechanism = %v, %v", v, err)
		}
		c, err := n.CountMechanism(3, eps)
		if err != nil || c < 0 {
			t.Fatalf("CountMechanism = %v, %v", c, err)
		}
	}
	// With a huge ε the noise is almost surely 0.
	if v, _ := n.CountMechanism(42, 50); v != 42 {
		t.Errorf("CountMechanism(42, ε=50) = %d", v)
	}
	for _, bad := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		if _, err := n.LaplaceMechanism(1, bad); err == nil {
			t.Errorf("LaplaceMechanism(ε=%v) accepted", bad)
		}
		if _, err := n.CountMechanism(1, bad); err == nil {
			t.Errorf("CountMechanism(ε=%v) accepted", bad)
		}
	}
}

func TestSeededIsReproducibleAndCryptoIsNot(t *testing.T) {
	sc := mustScale(t, 0.1)
	draw := func(n *Noise) []int64 {
		out := make([]int64, 50)
		for i := range out {
			out[i] = n.DiscreteLaplace(sc)
		}
		return out
	}
	a, b := draw(New(WithSeed(9))), draw(New(WithSeed(9)))
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("same seed, different draws")
	}
	if fmt.Sprint(draw(New())) == fmt.Sprint(draw(New())) {
		t.Fatal("two crypto sources gave the same 50 draws")
	}
	if New().Seeded() || !New(WithSeed(1)).Seeded() {
		t.Fatal("Seeded() is wrong")
	}
}

func TestLaplaceSharesSumToDiscreteLaplace(t *testing.T) {
	if testing.Short() {
		testskip.Skip(t, "statistical test")
	}
	const trials = 100_000
	for _, tc := range []struct {
		users int
		eps   float64
	}{{1, 0.5}, {5, 0.5}, {16, 0.029957}} {
		sc := mustScale(t, tc.eps)
		t.Run(fmt.Sprintf("%d users scale %.2f", tc.users, sc.Float()), func(t *testing.T) {
			n := New()
			sums := make([]int64, trials)
			partial := make([]int64, trials) // all shares but one
			for i := range sums {
				for u := 0; u < tc.users; u++ {
					s, err := n.LaplaceShare(sc, tc.users)
					if err != nil {
						t.Fatal(err)
					}
					sums[i] += s
					if u > 0 {
						partial[i] += s
					}
				}
			}
			if probs := dlapProblems(sums, sc); len(probs) > 0 {
				t.Fatalf("sum of shares fails: %v", probs)
			}
			if tc.users > 1 {
				if probs := dlapProblems(partial, sc); len(probs) == 0 {
					t.Fatal("the tests accepted the sum of all shares but one")
				}
			}
		})
	}
	if _, err := New().LaplaceShare(Scale{1, 1}, 0); err == nil {
		t.Fatal("0 users accepted")
	}
}

func BenchmarkDiscreteLaplace(b *testing.B) {
	sc, _ := ScaleFor(0.029957, 1)
	n := New()
	reportCPU(b, func() {
		n.DiscreteLaplace(sc)
	})
}

func BenchmarkLaplace(b *testing.B) {
	n := New()
	reportCPU(b, func() {
		n.Laplace(33.4)
	})
}

func BenchmarkLaplaceShare(b *testing.B) {
	sc, _ := ScaleFor(0.029957, 1)
	n := New()
	reportCPU(b, func() {
		n.LaplaceShare(sc, 16)
	})
}
