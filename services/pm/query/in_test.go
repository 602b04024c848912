package query

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
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

// TestClientInputBounded: documents, filters, updates and projections built
// to exhaust the PM are refused with a message naming the limit, and those
// just inside each limit compile.
func TestClientInputBounded(t *testing.T) {
	deep := func(n int) any {
		var v any = 1.0
		for range n {
			v = map[string]any{"a": v}
		}
		return v
	}
	wide := func(n int) map[string]any {
		m := make(map[string]any, n)
		for i := range n {
			m[fmt.Sprintf("f%d", i)] = 1.0
		}
		return m
	}
	if _, err := Normalize(deep(MaxDepth), true); err != nil {
		t.Errorf("a document %d deep: %v", MaxDepth, err)
	}
	if _, err := Normalize(deep(MaxDepth+1), true); err == nil || !strings.Contains(err.Error(), "deeper than 100") {
		t.Errorf("a document %d deep: %v, want refused for depth", MaxDepth+1, err)
	}
	if _, err := Normalize(wide(MaxValues-1), true); err != nil { // and the object holding them
		t.Errorf("a document of %d values: %v", MaxValues, err)
	}
	if _, err := Normalize(wide(MaxValues), true); err == nil || !strings.Contains(err.Error(), "more than 100000 values") {
		t.Errorf("a document of %d values: %v, want refused for width", MaxValues+1, err)
	}
	if _, err := Compile(wide(MaxFilterTerms)); err != nil {
		t.Errorf("a filter of %d terms: %v", MaxFilterTerms, err)
	}
	if _, err := Compile(wide(MaxFilterTerms + 1)); err == nil || !strings.Contains(err.Error(), "more than 10000 terms") {
		t.Errorf("a filter of %d terms: %v, want refused", MaxFilterTerms+1, err)
	}
	if _, err := Compile(map[string]any{"a": map[string]any{"$all": slicesOf(MaxFilterTerms)}}); err == nil {
		t.Errorf("an $all of %d values compiled", MaxFilterTerms)
	}
	if _, err := CompileUpdate(map[string]any{"$set": wide(MaxUpdateFields)}, false, false); err != nil {
		t.Errorf("an update of %d fields: %v", MaxUpdateFields, err)
	}
	if _, err := CompileUpdate(map[string]any{"$set": wide(MaxUpdateFields / 2), "$inc": wide(MaxUpdateFields/2 + 1)}, false, false); err == nil || !strings.Contains(err.Error(), "at most 1000") {
		t.Errorf("an update of %d fields: %v, want refused", MaxUpdateFields+1, err)
	}
	if _, err := CompileProjection(wide(MaxProjectionFields + 1)); err == nil {
		t.Errorf("a projection of %d fields compiled", MaxProjectionFields+1)
	}
	if _, err := Compile(map[string]any{"a": deep(MaxDepth + 1)}); err == nil {
		t.Errorf("a filter value %d deep compiled", MaxDepth+1)
	}
}

func slicesOf(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = float64(i)
	}
	return out
}
