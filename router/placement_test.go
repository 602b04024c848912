package router

import "testing"

func TestPlacerFollowsWeights(t *testing.T) {
	cases := []struct {
		name     string
		machines []Machine
		n        int
		want     map[string]int
	}{
		{"3:1", []Machine{{"a", 3, true}, {"b", 1, true}}, 8, map[string]int{"a": 6, "b": 2}},
		{"fractional", []Machine{{"a", 0.5, true}, {"b", 1.5, true}}, 8, map[string]int{"a": 2, "b": 6}},
		{"equal", []Machine{{"a", 1, true}, {"b", 1, true}, {"c", 1, true}}, 9, map[string]int{"a": 3, "b": 3, "c": 3}},
		{"down skipped", []Machine{{"a", 3, false}, {"b", 1, true}}, 4, map[string]int{"b": 4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p placer
			got := map[string]int{}
			for range c.n {
				m, ok := p.pick(c.machines)
				if !ok {
					t.Fatal("no machine picked")
				}
				got[m]++
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Fatalf("got %v, want %v", got, c.want)
				}
			}
		})
	}
	var p placer
	if _, ok := p.pick([]Machine{{"a", 1, false}}); ok {
		t.Fatal("picked a machine that is down")
	}
}

// TestPlacerInterleaves: smooth weighted round-robin never sends a burst to
// the heavy machine while the light one waits.
func TestPlacerInterleaves(t *testing.T) {
	var p placer
	ms := []Machine{{"a", 2, true}, {"b", 1, true}}
	var seq string
	for range 6 {
		m, _ := p.pick(ms)
		seq += m
	}
	if seq != "abaaba" {
		t.Fatalf("sequence %s, want abaaba", seq)
	}
}
