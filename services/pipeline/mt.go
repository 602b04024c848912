package pipeline

// MT19937 is numpy's legacy RandomState generator (Mersenne Twister), seeded
// as numpy.random.seed(int) does, so the iOS fill-in draws match e-mission's.
type MT19937 struct {
	mt  [624]uint32
	idx int
}

// NewMT19937 seeds like numpy's init_genrand: mt[i] = 1812433253·(mt[i-1] ^ mt[i-1]>>30) + i.
func NewMT19937(seed uint32) *MT19937 {
	g := &MT19937{}
	g.mt[0] = seed
	for i := 1; i < 624; i++ {
		g.mt[i] = 1812433253*(g.mt[i-1]^(g.mt[i-1]>>30)) + uint32(i)
	}
	g.idx = 624
	return g
}

func (g *MT19937) next() uint32 {
	if g.idx >= 624 {
		const upper, lower = 0x80000000, 0x7fffffff
		for i := 0; i < 624; i++ {
			y := (g.mt[i] & upper) | (g.mt[(i+1)%624] & lower)
			v := g.mt[(i+397)%624] ^ (y >> 1)
			if y&1 != 0 {
				v ^= 0x9908b0df
			}
			g.mt[i] = v
		}
		g.idx = 0
	}
	y := g.mt[g.idx]
	g.idx++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}

// Float64 is numpy's random_sample: res53 from two draws.
func (g *MT19937) Float64() float64 {
	a, b := g.next()>>5, g.next()>>6
	return (float64(a)*67108864.0 + float64(b)) / 9007199254740992.0
}

// Uniform is numpy's uniform(low, high) for one value.
func (g *MT19937) Uniform(low, high float64) float64 { return low + (high-low)*g.Float64() }
