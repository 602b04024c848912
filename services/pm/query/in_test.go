package query

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// linearIn is $in as one equality test per listed value: the meaning the
// set-backed inCond must keep.
func linearIn(list, vals []any, found bool) bool {
	for _, want := range list {
		if (eqCond{want}).test(vals, found) {
			return true
		}
	}
	return false
}

// TestInMatchesLinearScan: over random lists and values of every kind
// (numbers in several encodings, -0 and NaN, strings, booleans, null,
// objects, arrays), the set-backed $in answers as the linear scan does.
func TestInMatchesLinearScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pool := []any{nil, true, false, "a", "b", "1", 0.0, math.Copysign(0, -1), 1.0, int64(1), int(2), json.Number("2"),
		json.Number("1e0"), math.NaN(), 2.5, float32(2.5), uint64(3),
		map[string]any{"x": 1.0}, map[string]any{"x": int64(1)}, []any{1.0, "a"}, []any{}, map[string]any{}}
	pick := func(n int) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = pool[rng.IntN(len(pool))]
		}
		return out
	}
	for i := range 20000 {
		list, vals, found := pick(rng.IntN(5)), pick(rng.IntN(4)), rng.IntN(4) > 0
		if got, want := newInCond(list).test(vals, found), linearIn(list, vals, found); got != want {
			t.Fatalf("case %d: $in %v over %v (found %v) = %v, the linear scan says %v", i, list, vals, found, got, want)
		}
	}
}

func TestInListBounded(t *testing.T) {
	big := make([]any, MaxInValues+1)
	for i := range big {
		big[i] = fmt.Sprint(i)
	}
	if _, err := Compile(map[string]any{"_id": map[string]any{"$in": big}}); err == nil {
		t.Fatalf("a $in of %d values was compiled", len(big))
	}
	if _, err := Compile(map[string]any{"_id": map[string]any{"$nin": big[:MaxInValues]}}); err != nil {
		t.Fatalf("a $nin of %d values: %v", MaxInValues, err)
	}
}

// BenchmarkLargeIn: a 100,000-value $in matched against 20,000 documents
// (a scan costs 2·10⁹ comparisons; the set, one lookup per document).
func BenchmarkLargeIn(b *testing.B) {
	list := make([]any, MaxInValues)
	for i := range list {
		list[i] = fmt.Sprintf("id-%d", i*7)
	}
	f, err := Compile(map[string]any{"_id": map[string]any{"$in": list}})
	if err != nil {
		b.Fatal(err)
	}
	docs := make([]map[string]any, 20000)
	for i := range docs {
		docs[i] = map[string]any{"_id": fmt.Sprintf("id-%d", i)}
	}
	b.ResetTimer()
	for range b.N {
		n := 0
		for _, d := range docs {
			if f.Match(d) {
				n++
			}
		}
		if n != 20000/7+1 {
			b.Fatalf("%d matches", n)
		}
	}
}
