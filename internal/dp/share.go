package dp

import (
	"fmt"
	"math"
)

// Distributed noise. A discrete Laplace variable with p = exp(−1/scale) is
// G1 − G2 for independent geometric G1, G2 (failures before a success of
// probability 1 − p). A geometric is a negative binomial NB(1, p), and NB is
// infinitely divisible: the sum of n independent NB(1/n, p) (Pólya) variables
// is NB(1, p). So if each of n users adds Pólya(1/n, p) − Pólya(1/n, p) to
// their own answer, the sum of the n noisy answers carries exactly
// DLap(scale) noise, and the aggregator never sees one user's exact answer.
//
// The guarantee holds for the total when all n users add their shares; a
// single share is much smaller noise than DLap(scale), so one user's noisy
// answer on its own is only weakly protected (collusion of the others with the
// aggregator removes their shares). Shares are integers, so the published sum
// has no floating-point low bits, but the Pólya draws themselves use floating
// point (Gamma–Poisson mixture): their distribution is exact up to float
// rounding of the Gamma rate, not bit-exact like DiscreteLaplace.

// LaplaceShare draws one of users shares whose sum is DLap(sc) noise.
func (n *Noise) LaplaceShare(sc Scale, users int) (int64, error) {
	if users < 1 {
		return 0, fmt.Errorf("laplace share: users must be ≥ 1, got %d", users)
	}
	if sc.Num == 0 || sc.Den == 0 {
		return 0, fmt.Errorf("laplace share: scale must be > 0")
	}
	p := math.Exp(-1 / sc.Float())
	r := 1 / float64(users)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.polya(r, p) - n.polya(r, p), nil
}

// polya draws NB(r, p): P(k) = Γ(k+r)/(k!·Γ(r))·p^k·(1−p)^r, as a Poisson
// whose rate is Gamma(r, p/(1−p)).
func (n *Noise) polya(r, p float64) int64 {
	lambda := n.gamma(r) * p / (1 - p)
	return n.poisson(lambda)
}

// gamma draws Gamma(shape a, scale 1) (Marsaglia–Tsang; for a < 1 the
// boost Gamma(a) = Gamma(a+1)·U^(1/a)).
func (n *Noise) gamma(a float64) float64 {
	if a < 1 {
		return n.gamma(a+1) * math.Pow(n.uniformOpen(), 1/a)
	}
	d := a - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := n.rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := n.uniformOpen()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}

// poisson draws Poisson(lambda): multiplication for small rates, Hörmann's
// PTRS transformed rejection for large ones.
func (n *Noise) poisson(lambda float64) int64 {
	if lambda <= 0 {
		return 0
	}
	if lambda < 10 {
		limit := math.Exp(-lambda)
		prod := n.uniformOpen()
		k := int64(0)
		for prod > limit {
			prod *= n.uniformOpen()
			k++
		}
		return k
	}
	slam := math.Sqrt(lambda)
	loglam := math.Log(lambda)
	b := 0.931 + 2.53*slam
	a := -0.059 + 0.02483*b
	invalpha := 1.1239 + 1.1328/(b-3.4)
	vr := 0.9277 - 3.6224/(b-2)
	for {
		u := n.uniformOpen() - 0.5
		v := n.uniformOpen()
		us := 0.5 - math.Abs(u)
		k := math.Floor((2*a/us+b)*u + lambda + 0.43)
		if us >= 0.07 && v <= vr {
			return int64(k)
		}
		if k < 0 || (us < 0.013 && v > us) {
			continue
		}
		lg, _ := math.Lgamma(k + 1)
		if math.Log(v)+math.Log(invalpha)-math.Log(a/(us*us)+b) <= -lambda+k*loglam-lg {
			return int64(k)
		}
	}
}
