// Package query is the PM's MongoDB subset: filters, updates, projections and
// sorts over JSON documents (map[string]any, with numbers as json.Number,
// float64 or ints). It is the subset e-mission's timeseries code uses:
// equality on dotted paths, $gt $gte $lt $lte $ne $in $nin $exists $not $and
// $or $nor, $geoWithin ($geometry Polygon/MultiPolygon on the sphere, or
// $centerSphere), updates with $set $unset $inc, include/exclude projections
// and multi-key sorts. Anything else is an error naming it, never a silent
// mismatch.
//
// ObjectIds are their 24-hex strings (as the e-mission client library sends
// them); {"$oid": "<hex>"} is accepted as the same thing.
package query

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// IsObjectID reports whether s is a 24-hex ObjectId, as bson.ObjectId.is_valid
// decides for strings.
func IsObjectID(s string) bool {
	if len(s) != 24 {
		return false
	}
	for i := 0; i < 24; i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// number returns v as a float64 when v is a JSON number.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(n), 64)
		return f, err == nil
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint64:
		return float64(n), true
	}
	return 0, false
}

// Number is number for callers outside the package (the store's indexes).
func Number(v any) (float64, bool) { return number(v) }

// typeRank orders BSON types as MongoDB compares them across types.
func typeRank(v any) int {
	switch v.(type) {
	case nil:
		return 1
	case string:
		return 3
	case map[string]any:
		return 4
	case []any:
		return 5
	case bool:
		return 8
	}
	if _, ok := number(v); ok {
		return 2
	}
	return 20
}

// Compare orders two values the way MongoDB does: by type bracket first, then
// by value within it.
func Compare(a, b any) int {
	ra, rb := typeRank(a), typeRank(b)
	if ra != rb {
		return cmpInt(ra, rb)
	}
	switch x := a.(type) {
	case nil:
		return 0
	case string:
		return strings.Compare(x, b.(string))
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	case map[string]any:
		y := b.(map[string]any)
		kx, ky := sortedKeys(x), sortedKeys(y)
		for i := 0; i < len(kx) && i < len(ky); i++ {
			if c := strings.Compare(kx[i], ky[i]); c != 0 {
				return c
			}
			if c := Compare(x[kx[i]], y[ky[i]]); c != 0 {
				return c
			}
		}
		return cmpInt(len(kx), len(ky))
	case []any:
		y := b.([]any)
		for i := 0; i < len(x) && i < len(y); i++ {
			if c := Compare(x[i], y[i]); c != 0 {
				return c
			}
		}
		return cmpInt(len(x), len(y))
	}
	fa, _ := number(a)
	fb, _ := number(b)
	switch {
	case fa < fb:
		return -1
	case fa > fb:
		return 1
	case fa == fb:
		return 0
	case math.IsNaN(fa) && !math.IsNaN(fb):
		return -1
	case math.IsNaN(fb) && !math.IsNaN(fa):
		return 1
	}
	return 0
}

// Equal is MongoDB equality: numbers by value whatever their encoding.
func Equal(a, b any) bool {
	if typeRank(a) != typeRank(b) {
		return false
	}
	return Compare(a, b) == 0
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Key is a canonical string for v, equal for Equal values (used to find
// distinct values).
func Key(v any) string {
	var b strings.Builder
	writeKey(&b, v)
	return b.String()
}

func writeKey(b *strings.Builder, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("n")
	case string:
		b.WriteString("s")
		b.WriteString(strconv.Quote(x))
	case bool:
		b.WriteString("b")
		b.WriteString(strconv.FormatBool(x))
	case map[string]any:
		b.WriteString("{")
		for _, k := range sortedKeys(x) {
			b.WriteString(strconv.Quote(k))
			b.WriteString(":")
			writeKey(b, x[k])
			b.WriteString(",")
		}
		b.WriteString("}")
	case []any:
		b.WriteString("[")
		for _, e := range x {
			writeKey(b, e)
			b.WriteString(",")
		}
		b.WriteString("]")
	default:
		f, _ := number(v)
		if f == 0 {
			f = 0 // -0 is Equal to 0: one key
		}
		b.WriteString("d")
		b.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
	}
}

// splitPath splits a dotted path, refusing empty parts.
func splitPath(p string) ([]string, error) {
	if p == "" {
		return nil, fmt.Errorf("empty field path")
	}
	parts := strings.Split(p, ".")
	for _, s := range parts {
		if s == "" {
			return nil, fmt.Errorf("field path %q has an empty part", p)
		}
	}
	return parts, nil
}

// Lookup returns the values at path in doc, expanding arrays the way MongoDB
// does for queries: a path through an array reaches into each element, and an
// array at the end contributes itself and each of its elements. found says
// whether the path exists at all.
func Lookup(doc any, path []string) (vals []any, found bool) {
	var walk func(v any, i int, viaArray bool)
	walk = func(v any, i int, viaArray bool) {
		if i == len(path) {
			found = true
			vals = append(vals, v)
			if arr, ok := v.([]any); ok && !viaArray {
				vals = append(vals, arr...)
			}
			return
		}
		switch x := v.(type) {
		case map[string]any:
			if c, ok := x[path[i]]; ok {
				walk(c, i+1, false)
			}
		case []any:
			if idx, err := strconv.Atoi(path[i]); err == nil && idx >= 0 && idx < len(x) {
				walk(x[idx], i+1, false)
			}
			for _, e := range x {
				if _, ok := e.(map[string]any); ok {
					walk(e, i, true)
				}
			}
		}
	}
	walk(doc, 0, false)
	return vals, found
}

// Get returns the single value at a dotted path without array expansion.
func Get(doc map[string]any, path string) (any, bool) {
	var cur any = doc
	for _, p := range strings.Split(path, ".") {
		switch x := cur.(type) {
		case map[string]any:
			v, ok := x[p]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			cur = x[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// Normalize checks a document (or filter value) from a client and rewrites
// {"$oid": "<hex>"} into the hex string. With doc set, it also refuses field
// names that start with '$' or contain '.', which MongoDB will not store.
// A document holds at most MaxValues values (objects, arrays and scalars
// alike) nested at most MaxDepth deep; a filter value is held to MaxDepth.
func Normalize(v any, doc bool) (any, error) {
	n := &normalizer{doc: doc}
	return n.normalize(v, "", 0)
}

// Limits on what a client may send: MongoDB nests documents at most 100 deep,
// and e-mission's entries hold a few dozen values, so these refuse only
// documents built to exhaust the PM.
const (
	MaxDepth  = 100
	MaxValues = 100_000
)

type normalizer struct {
	doc    bool
	values int
}

func (n *normalizer) normalize(v any, at string, depth int) (any, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("%s: nested deeper than %d levels", where(at), MaxDepth)
	}
	if n.doc {
		if n.values++; n.values > MaxValues {
			return nil, fmt.Errorf("document holds more than %d values", MaxValues)
		}
	}
	doc := n.doc
	switch x := v.(type) {
	case map[string]any:
		if oid, ok := x["$oid"]; ok && len(x) == 1 {
			s, ok := oid.(string)
			if !ok || !IsObjectID(s) {
				return nil, fmt.Errorf("%s: $oid must be a 24-hex string", where(at))
			}
			return s, nil
		}
		for k, e := range x {
			if doc && (strings.HasPrefix(k, "$") || strings.Contains(k, ".") || k == "") {
				return nil, fmt.Errorf("%s: field name %q is not allowed in a document (empty, starts with '$' or contains '.')", where(at), k)
			}
			e, err := n.normalize(e, join(at, k), depth+1)
			if err != nil {
				return nil, err
			}
			x[k] = e
		}
	case []any:
		for i, e := range x {
			e, err := n.normalize(e, join(at, strconv.Itoa(i)), depth+1)
			if err != nil {
				return nil, err
			}
			x[i] = e
		}
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%s: number must be finite", where(at))
		}
	}
	return v, nil
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func where(at string) string {
	if at == "" {
		return "document"
	}
	return "field " + strconv.Quote(at)
}

// Clone deep-copies a JSON value.
func Clone(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = Clone(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = Clone(e)
		}
		return a
	}
	return v
}
