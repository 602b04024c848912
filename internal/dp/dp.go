// Package dp holds UPC's differential-privacy noise: the Laplace mechanism of
// the original aggregator (ε = −ln(α)·Δf/offset, max(total + Lap(1/ε), 0)),
// an exact discrete Laplace sampler for counts, and shares of discrete Laplace
// noise that users add independently (distributed noise).
//
// Randomness is cryptographic (crypto/rand) unless a seed is given explicitly
// with WithSeed, which is meant for tests and experiment mode only.
package dp

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"sync"
)

// MinEpsilon is the least ε any answered query may cost unless a deployment
// sets another: nothing is free, and no number of queries adds up to nothing.
// A PM enforces its own minimum (the same by default) whatever a service says.
const MinEpsilon = 0.01

// Epsilon is the privacy cost of the original AE query:
// ε = −ln(alpha)·Δf/offset. alpha must be in (0, 1), Δf > 0 and offset > 0,
// all finite, and the cost itself finite.
func Epsilon(alpha, deltaF, offset float64) (float64, error) {
	var errs []error
	if !(alpha > 0 && alpha < 1) {
		errs = append(errs, fmt.Errorf("alpha must be in (0, 1), got %v", alpha))
	}
	if !(deltaF > 0) || math.IsInf(deltaF, 0) {
		errs = append(errs, fmt.Errorf("sensitivity (delta_f) must be a finite number > 0, got %v", deltaF))
	}
	if !(offset > 0) || math.IsInf(offset, 0) {
		errs = append(errs, fmt.Errorf("offset must be a finite number > 0, got %v", offset))
	}
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	eps := -math.Log(alpha) * deltaF / offset
	if math.IsInf(eps, 0) || math.IsNaN(eps) {
		return 0, fmt.Errorf("the cost −ln(%v)·%v/%v is not a finite number", alpha, deltaF, offset)
	}
	return eps, nil
}

// CheckCost refuses a cost that is not finite or is below min: the check
// every service makes before it asks a PM to charge.
func CheckCost(eps, min float64) error {
	switch {
	case math.IsNaN(eps) || math.IsInf(eps, 0) || eps < 0:
		return fmt.Errorf("the privacy cost %v is not a finite number ≥ 0", eps)
	case eps < min:
		return fmt.Errorf("the privacy cost %v is below the least ε an answer may cost (%v): raise the offset's precision or lower alpha", eps, min)
	}
	return nil
}

// Noise draws noise from one random source. It is safe for concurrent use.
type Noise struct {
	mu     sync.Mutex
	rng    *mrand.Rand
	seeded bool
}

// Option configures New.
type Option func(*Noise)

// WithSeed makes the noise reproducible from seed (ChaCha8). Only for tests and
// an explicit experiment mode: seeded noise protects nothing against anyone
// who knows the seed.
func WithSeed(seed uint64) Option {
	return func(n *Noise) {
		var s [32]byte
		binary.LittleEndian.PutUint64(s[:], seed)
		n.rng = mrand.New(mrand.NewChaCha8(s))
		n.seeded = true
	}
}

// WithKey makes the noise a deterministic function of a 256-bit secret key
// (ChaCha8 keyed with it): as unpredictable as crypto/rand to anyone without
// the key, and the same for the same key. A service keys a query's noise
// with the seed its PM kept for the query's charge, so a replayed query gets
// the same noise and retries cannot average it away.
func WithKey(key [32]byte) Option {
	return func(n *Noise) { n.rng = mrand.New(mrand.NewChaCha8(key)) }
}

// WithSource draws from src (for tests that need a particular source).
func WithSource(src mrand.Source) Option {
	return func(n *Noise) {
		n.rng = mrand.New(src)
		n.seeded = true
	}
}

// New returns a Noise drawing from crypto/rand unless an option says otherwise.
func New(opts ...Option) *Noise {
	n := &Noise{rng: mrand.New(&cryptoSource{})}
	for _, o := range opts {
		o(n)
	}
	return n
}

// Seeded reports whether the noise is reproducible (not for production).
func (n *Noise) Seeded() bool { return n.seeded }

// cryptoSource is a math/rand/v2 Source over crypto/rand, buffered because
// the samplers draw many small values.
type cryptoSource struct {
	buf [512]byte
	off int
}

func (c *cryptoSource) Uint64() uint64 {
	if c.off == 0 || c.off >= len(c.buf) {
		rand.Read(c.buf[:]) // never fails (it crashes the program instead)
		c.off = 0
	}
	v := binary.LittleEndian.Uint64(c.buf[c.off:])
	c.off += 8
	return v
}

// uniform53 returns a uniform float in (0, 1), never 0 so logs are finite.
func (n *Noise) uniformOpen() float64 {
	for {
		u := float64(n.rng.Uint64()>>11) / (1 << 53)
		if u > 0 {
			return u
		}
	}
}

// Laplace draws from the continuous Laplace distribution with mean 0 and the
// given scale (inverse CDF on a 53-bit uniform). Floating-point Laplace noise
// can leak the true value through the low bits of its result; use it for the
// original's real-valued metrics only, and DiscreteLaplace for counts.
func (n *Noise) Laplace(scale float64) float64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.laplace(scale)
}

func (n *Noise) laplace(scale float64) float64 {
	u := n.uniformOpen() - 0.5 // (-0.5, 0.5)
	if u < 0 {
		return scale * math.Log(1+2*u)
	}
	return -scale * math.Log(1-2*u)
}

// LaplaceMechanism is the original aggregator's answer:
// max(total + Lap(1/ε), 0).
func (n *Noise) LaplaceMechanism(total, epsilon float64) (float64, error) {
	if !(epsilon > 0) || math.IsInf(epsilon, 0) {
		return 0, fmt.Errorf("laplace mechanism: epsilon must be a finite number > 0, got %v", epsilon)
	}
	return math.Max(total+n.Laplace(1/epsilon), 0), nil
}
