package query

import (
	"fmt"
	"sort"
	"strings"
)

// Projection is a compiled include or exclude projection.
type Projection struct {
	include bool
	paths   [][]string
	noID    bool // include mode: _id explicitly excluded
	none    bool
}

// MaxProjectionFields bounds the fields a projection names.
const MaxProjectionFields = 1_000

// CompileProjection accepts nil, {"field": 0|1|true|false, ...} or a list of
// field names (pymongo's list form, include mode).
func CompileProjection(p any) (*Projection, error) {
	if n := filterTerms(p, MaxProjectionFields); n > MaxProjectionFields {
		return nil, fmt.Errorf("projection names more than %d fields", MaxProjectionFields)
	}
	switch x := p.(type) {
	case nil:
		return &Projection{none: true}, nil
	case []any:
		out := &Projection{include: true}
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("projection[%d] must be a field name", i)
			}
			parts, err := splitPath(s)
			if err != nil {
				return nil, fmt.Errorf("projection: %w", err)
			}
			out.paths = append(out.paths, parts)
		}
		return out, nil
	case map[string]any:
		if len(x) == 0 {
			return &Projection{none: true}, nil
		}
		out := &Projection{}
		mode := 0 // 1 include, -1 exclude
		idSet, idVal := false, true
		for _, k := range sortedKeys(x) {
			b, ok := truthy(x[k])
			if !ok {
				return nil, fmt.Errorf("projection of %q must be 0, 1, true or false", k)
			}
			if strings.HasPrefix(k, "$") {
				return nil, fmt.Errorf("projection operator %s is not supported", k)
			}
			parts, err := splitPath(k)
			if err != nil {
				return nil, fmt.Errorf("projection: %w", err)
			}
			if k == "_id" {
				idSet, idVal = true, b
				continue
			}
			m := -1
			if b {
				m = 1
			}
			if mode != 0 && m != mode {
				return nil, fmt.Errorf("projection cannot mix inclusion and exclusion (except for _id)")
			}
			mode = m
			out.paths = append(out.paths, parts)
		}
		switch {
		case mode == 1:
			out.include = true
			out.noID = idSet && !idVal
		case mode == -1:
			if idSet && !idVal {
				out.paths = append(out.paths, []string{"_id"})
			}
		default: // only _id
			if idVal {
				out.include = true
				out.paths = nil
			} else {
				out.paths = [][]string{{"_id"}}
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("projection must be an object or a list of field names")
}

// Identity reports whether the projection keeps documents as they are.
func (p *Projection) Identity() bool { return p == nil || p.none }

// Apply returns the projected document; doc is not changed unless the
// projection is empty (then doc itself is returned).
func (p *Projection) Apply(doc map[string]any) map[string]any {
	if p.none {
		return doc
	}
	if !p.include {
		out := Clone(doc).(map[string]any)
		for _, path := range p.paths {
			unsetAll(out, path)
		}
		return out
	}
	out := map[string]any{}
	if id, ok := doc["_id"]; ok && !p.noID {
		out["_id"] = id
	}
	for _, path := range p.paths {
		copyPath(doc, out, path)
	}
	return out
}

func unsetAll(v any, path []string) {
	switch x := v.(type) {
	case map[string]any:
		if len(path) == 1 {
			delete(x, path[0])
			return
		}
		unsetAll(x[path[0]], path[1:])
	case []any:
		for _, e := range x {
			unsetAll(e, path)
		}
	}
}

func copyPath(src any, dst map[string]any, path []string) {
	m, ok := src.(map[string]any)
	if !ok {
		return
	}
	v, ok := m[path[0]]
	if !ok {
		return
	}
	if len(path) == 1 {
		dst[path[0]] = Clone(v)
		return
	}
	switch x := v.(type) {
	case map[string]any:
		sub, ok := dst[path[0]].(map[string]any)
		if !ok {
			sub = map[string]any{}
			dst[path[0]] = sub
		}
		copyPath(x, sub, path[1:])
		if len(sub) == 0 {
			delete(dst, path[0])
		}
	case []any:
		arr, ok := dst[path[0]].([]any)
		if !ok {
			arr = make([]any, 0, len(x))
			for _, e := range x {
				if _, isMap := e.(map[string]any); isMap {
					arr = append(arr, map[string]any{})
				}
			}
		}
		j := 0
		for _, e := range x {
			if em, isMap := e.(map[string]any); isMap {
				copyPath(em, arr[j].(map[string]any), path[1:])
				j++
			}
		}
		dst[path[0]] = arr
	}
}

// SortKey is one compiled sort key.
type SortKey struct {
	Path string
	Desc bool
}

// Sorter orders documents by several keys, as MongoDB: a missing field sorts
// as null, an array by its smallest element ascending (largest descending).
type Sorter []SortKey

// Less reports whether a sorts before b.
func (s Sorter) Compare(a, b map[string]any) int {
	for _, k := range s {
		va, vb := sortValue(a, k), sortValue(b, k)
		c := Compare(va, vb)
		if k.Desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

func sortValue(doc map[string]any, k SortKey) any {
	parts := strings.Split(k.Path, ".")
	vals, found := Lookup(doc, parts)
	if !found || len(vals) == 0 {
		return nil
	}
	var best any
	have := false
	for _, v := range vals {
		if _, isArr := v.([]any); isArr && len(vals) > 1 {
			continue // compare by elements, not the array itself
		}
		if !have {
			best, have = v, true
			continue
		}
		c := Compare(v, best)
		if (!k.Desc && c < 0) || (k.Desc && c > 0) {
			best = v
		}
	}
	return best
}

// Sort sorts docs in place, stably. Each document's sort values are
// extracted once, not at every comparison.
func (s Sorter) Sort(docs []map[string]any) {
	if len(s) == 0 || len(docs) < 2 {
		return
	}
	type keyed struct {
		vals []any
		doc  map[string]any
	}
	ks := make([]keyed, len(docs))
	for i, d := range docs {
		vals := make([]any, len(s))
		for j, k := range s {
			vals[j] = sortValue(d, k)
		}
		ks[i] = keyed{vals, d}
	}
	sort.SliceStable(ks, func(a, b int) bool {
		for j, k := range s {
			c := Compare(ks[a].vals[j], ks[b].vals[j])
			if k.Desc {
				c = -c
			}
			if c != 0 {
				return c < 0
			}
		}
		return false
	})
	for i := range ks {
		docs[i] = ks[i].doc
	}
}

// Distinct returns the distinct values at path among docs, arrays flattened.
func Distinct(docs []map[string]any, path string) ([]any, error) {
	parts, err := splitPath(path)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	out := []any{}
	for _, d := range docs {
		vals, _ := Lookup(d, parts)
		for _, v := range vals {
			if _, isArr := v.([]any); isArr {
				continue // its elements are in vals too
			}
			k := Key(v)
			if !seen[k] {
				seen[k] = true
				out = append(out, v)
			}
		}
	}
	return out, nil
}
