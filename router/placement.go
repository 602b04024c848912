package router

import "sync"

// placer spreads launches over machines in proportion to their weights with
// smooth weighted round-robin (as nginx does): deterministic, so a test can
// check the exact split, and interleaved rather than in bursts.
type placer struct {
	mu      sync.Mutex
	current map[string]float64
}

// pick chooses among the machines that are up; ok is false if none is.
func (p *placer) pick(ms []Machine) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == nil {
		p.current = map[string]float64{}
	}
	total, best := 0.0, -1
	for i, m := range ms {
		if !m.Up || m.Weight <= 0 {
			continue
		}
		total += m.Weight
		p.current[m.Name] += m.Weight
		if best < 0 || p.current[m.Name] > p.current[ms[best].Name] {
			best = i
		}
	}
	if best < 0 {
		return "", false
	}
	p.current[ms[best].Name] -= total
	return ms[best].Name, true
}
