package pipeline

import "math"

// e-mission's results are compared with float equality, and its haversine runs
// on glibc's libm, whose sin/cos/atan2 are correctly rounded; Go's math package
// is not (it differs in the last bit for a few percent of inputs). These
// functions evaluate in double-double precision and round once, which
// reproduces libm bit for bit on the ranges the pipeline uses.

type dd struct{ hi, lo float64 }

func twoSum(a, b float64) dd {
	s := a + b
	bb := s - a
	return dd{s, (a - (s - bb)) + (b - bb)}
}

func quickTwoSum(a, b float64) dd {
	s := a + b
	return dd{s, b - (s - a)}
}

func twoProd(a, b float64) dd {
	p := a * b
	return dd{p, math.FMA(a, b, -p)}
}

func ddAdd(a, b dd) dd {
	s := twoSum(a.hi, b.hi)
	t := twoSum(a.lo, b.lo)
	s.lo += t.hi
	s = quickTwoSum(s.hi, s.lo)
	s.lo += t.lo
	return quickTwoSum(s.hi, s.lo)
}

func ddNeg(a dd) dd { return dd{-a.hi, -a.lo} }

func ddMul(a, b dd) dd {
	p := twoProd(a.hi, b.hi)
	p.lo += a.hi*b.lo + a.lo*b.hi
	return quickTwoSum(p.hi, p.lo)
}

func ddDivF(a dd, b float64) dd {
	q1 := a.hi / b
	p := twoProd(q1, b)
	s := twoSum(a.hi, -p.hi)
	s.lo -= p.lo
	s.lo += a.lo
	q2 := (s.hi + s.lo) / b
	return quickTwoSum(q1, q2)
}

func ddDiv(a, b dd) dd {
	q1 := a.hi / b.hi
	r := ddAdd(a, ddNeg(ddMul(dd{q1, 0}, b)))
	q2 := r.hi / b.hi
	r = ddAdd(r, ddNeg(ddMul(dd{q2, 0}, b)))
	q3 := r.hi / b.hi
	q := quickTwoSum(q1, q2)
	return ddAdd(q, dd{q3, 0})
}

func ddSqrt(a dd) dd {
	if a.hi <= 0 {
		return dd{}
	}
	x := math.Sqrt(a.hi)
	// one Newton step in double-double: x + (a - x²)/(2x)
	r := ddAdd(a, ddNeg(twoProd(x, x)))
	return ddAdd(dd{x, 0}, dd{r.hi / (2 * x), 0})
}

// pySin is libm's sin (correctly rounded) for |x| ≤ 4, Go's beyond.
func pySin(x float64) float64 {
	if x == 0 || math.Abs(x) > 4 || math.IsNaN(x) {
		return math.Sin(x)
	}
	x2 := twoProd(x, x)
	term := dd{x, 0}
	sum := term
	for k := 1; k < 60; k++ {
		term = ddDivF(ddMul(term, x2), float64((2*k)*(2*k+1)))
		if k%2 == 1 {
			sum = ddAdd(sum, ddNeg(term))
		} else {
			sum = ddAdd(sum, term)
		}
		if math.Abs(term.hi) < 1e-36*math.Abs(sum.hi) {
			break
		}
	}
	return sum.hi + sum.lo
}

// pyCos is libm's cos (correctly rounded) for |x| ≤ 4, Go's beyond.
func pyCos(x float64) float64 {
	if math.Abs(x) > 4 || math.IsNaN(x) {
		return math.Cos(x)
	}
	x2 := twoProd(x, x)
	term := dd{1, 0}
	sum := term
	for k := 1; k < 60; k++ {
		term = ddDivF(ddMul(term, x2), float64((2*k-1)*(2*k)))
		if k%2 == 1 {
			sum = ddAdd(sum, ddNeg(term))
		} else {
			sum = ddAdd(sum, term)
		}
		if math.Abs(term.hi) < 1e-36*math.Abs(sum.hi) {
			break
		}
	}
	return sum.hi + sum.lo
}

var ddPiHalf = dd{1.5707963267948966, 6.123233995736766e-17}

// ddAtan is atan(t) for t ≥ 0 in double-double.
func ddAtan(t dd) dd {
	if t.hi > 1 {
		return ddAdd(ddPiHalf, ddNeg(ddAtan(ddDiv(dd{1, 0}, t))))
	}
	// halve the angle until the series converges fast: atan(t) = 2·atan(t/(1+√(1+t²)))
	scale := 1.0
	for t.hi > 0.1 {
		t = ddDiv(t, ddAdd(dd{1, 0}, ddSqrt(ddAdd(dd{1, 0}, ddMul(t, t)))))
		scale *= 2
	}
	t2 := ddMul(t, t)
	pow := t
	sum := t
	for k := 1; k < 80; k++ {
		pow = ddMul(pow, t2)
		term := ddDivF(pow, float64(2*k+1))
		if k%2 == 1 {
			sum = ddAdd(sum, ddNeg(term))
		} else {
			sum = ddAdd(sum, term)
		}
		if math.Abs(term.hi) < 1e-36*math.Abs(sum.hi) {
			break
		}
	}
	return dd{sum.hi * scale, sum.lo * scale}
}

// pyAtan2 is libm's atan2 (correctly rounded) for y ≥ 0, x > 0, Go's otherwise.
func pyAtan2(y, x float64) float64 {
	if !(y >= 0 && x > 0) || math.IsInf(y, 0) || math.IsInf(x, 0) {
		return math.Atan2(y, x)
	}
	if y == 0 {
		return 0
	}
	r := ddAtan(ddDiv(dd{y, 0}, dd{x, 0}))
	return r.hi + r.lo
}

// pyPow2 is Python's x ** 2 (exact square, correctly rounded).
func pyPow2(x float64) float64 { return x * x }
