package dp

import (
	"fmt"
	"math"
	"math/bits"
)

// The exact samplers below follow Canonne, Kamath and Steinke, "The Discrete
// Gaussian for Differential Privacy" (2020), algorithms 1 and 2: every
// decision is a comparison of uniform integers, so no floating-point rounding
// ever touches the output distribution.

// scaleDenominator is the s of a rational scale t/s. Scales are rounded up
// to a multiple of 1/scaleDenominator, which lowers the effective ε slightly
// (more privacy, never less).
const scaleDenominator = 1 << 20

// maxScale keeps t = scale·s ≤ 2^50, so t·V cannot overflow for any V short of
// 2^13 (probability e^−8192).
const maxScale = 1 << 30

// Scale is a rational noise scale Num/Den (> 0).
type Scale struct{ Num, Den uint64 }

// Float is the scale's value.
func (s Scale) Float() float64 { return float64(s.Num) / float64(s.Den) }

// ScaleFor returns the rational scale used for a discrete Laplace mechanism
// of privacy ε on a query of sensitivity Δf: Δf/ε rounded up.
func ScaleFor(epsilon, deltaF float64) (Scale, error) {
	if !(epsilon > 0) || math.IsInf(epsilon, 0) {
		return Scale{}, fmt.Errorf("epsilon must be a finite number > 0, got %v", epsilon)
	}
	if !(deltaF > 0) || math.IsInf(deltaF, 0) {
		return Scale{}, fmt.Errorf("delta_f must be a finite number > 0, got %v", deltaF)
	}
	sc := deltaF / epsilon
	if sc > maxScale {
		return Scale{}, fmt.Errorf("noise scale Δf/ε = %g is larger than %g", sc, float64(maxScale))
	}
	num := uint64(math.Ceil(sc * scaleDenominator))
	if num == 0 {
		num = 1
	}
	return Scale{Num: num, Den: scaleDenominator}, nil
}

// bernoulliRatio returns true with probability num/(den1·den2), using an
// unbiased uniform integer in [0, den1·den2) built from two draws.
func (n *Noise) bernoulliRatio(num, den1, den2 uint64) bool {
	x := n.rng.Uint64N(den1)
	y := n.rng.Uint64N(den2)
	hi, lo := bits.Mul64(x, den2)
	lo, carry := bits.Add64(lo, y, 0)
	hi += carry
	return hi == 0 && lo < num
}

// bernoulliExpFrac returns true with probability exp(−num/den) for
// 0 ≤ num ≤ den (CKS algorithm 1, γ ∈ [0, 1]).
func (n *Noise) bernoulliExpFrac(num, den uint64) bool {
	k := uint64(1)
	for n.bernoulliRatio(num, den, k) {
		k++
	}
	return k%2 == 1
}

// bernoulliExp returns true with probability exp(−num/den) for any num ≥ 0.
func (n *Noise) bernoulliExp(num, den uint64) bool {
	for ; num > den; num -= den {
		if !n.bernoulliExpFrac(1, 1) {
			return false
		}
	}
	return n.bernoulliExpFrac(num, den)
}

// DiscreteLaplace draws X with P(X = x) ∝ exp(−|x|/scale) over the integers,
// exactly (CKS algorithm 2 with scale t/s).
func (n *Noise) DiscreteLaplace(sc Scale) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.discreteLaplace(sc)
}

func (n *Noise) discreteLaplace(sc Scale) int64 {
	t, s := sc.Num, sc.Den
	for {
		u := n.rng.Uint64N(t)
		if !n.bernoulliExp(u, t) {
			continue
		}
		// V ~ Geometric with success 1 − e^{−1}.
		v := uint64(0)
		for n.bernoulliExpFrac(1, 1) {
			v++
		}
		x := u + t*v // P(X = x) ∝ exp(−x/t)
		y := x / s   // P(Y = y) ∝ exp(−y·s/t)
		neg := n.rng.Uint64()&1 == 1
		if neg && y == 0 {
			continue
		}
		if neg {
			return -int64(y)
		}
		return int64(y)
	}
}

// DiscreteLaplacePMF is P(X = x) for the discrete Laplace of this scale:
// (1 − p)/(1 + p)·p^|x| with p = exp(−1/scale).
func DiscreteLaplacePMF(sc Scale, x int64) float64 {
	p := math.Exp(-1 / sc.Float())
	return (1 - p) / (1 + p) * math.Pow(p, math.Abs(float64(x)))
}

// DiscreteLaplaceVariance is 2p/(1 − p)² with p = exp(−1/scale).
func DiscreteLaplaceVariance(sc Scale) float64 {
	p := math.Exp(-1 / sc.Float())
	return 2 * p / ((1 - p) * (1 - p))
}

// CountMechanism answers an integer total with discrete Laplace noise of
// privacy ε (sensitivity 1), clamped at 0 like the original.
func (n *Noise) CountMechanism(total int64, epsilon float64) (int64, error) {
	sc, err := ScaleFor(epsilon, 1)
	if err != nil {
		return 0, fmt.Errorf("count mechanism: %w", err)
	}
	return max(total+n.DiscreteLaplace(sc), 0), nil
}
