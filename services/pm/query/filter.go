package query

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// Filter is a compiled MongoDB query document.
type Filter struct {
	root  andNode
	empty bool
}

type node interface {
	match(doc map[string]any) bool
}

type andNode []node
type orNode []node
type norNode []node

func (n andNode) match(d map[string]any) bool {
	for _, c := range n {
		if !c.match(d) {
			return false
		}
	}
	return true
}

func (n orNode) match(d map[string]any) bool {
	for _, c := range n {
		if c.match(d) {
			return true
		}
	}
	return false
}

func (n norNode) match(d map[string]any) bool { return !orNode(n).match(d) }

// fieldNode holds every condition on one path (ANDed).
type fieldNode struct {
	path  string
	parts []string
	conds []cond
}

func (n *fieldNode) match(d map[string]any) bool {
	vals, found := Lookup(d, n.parts)
	for _, c := range n.conds {
		if !c.test(vals, found) {
			return false
		}
	}
	return true
}

type cond interface {
	test(vals []any, found bool) bool
}

// Compile checks a filter and prepares it. A nil or empty filter matches
// every document.
func Compile(f map[string]any) (*Filter, error) {
	if n := filterTerms(f, MaxFilterTerms); n > MaxFilterTerms {
		return nil, fmt.Errorf("filter has more than %d terms (fields, operators and listed values; $in and $nin lists are capped apart, at %d values)", MaxFilterTerms, MaxInValues)
	}
	root, err := compileDoc(f, 0)
	if err != nil {
		return nil, err
	}
	return &Filter{root: root, empty: len(f) == 0}, nil
}

// MatchAll is a filter that matches everything.
func MatchAll() *Filter { return &Filter{empty: true} }

// Empty reports whether the filter matches every document.
func (f *Filter) Empty() bool { return f.empty }

// Match reports whether doc satisfies the filter.
func (f *Filter) Match(doc map[string]any) bool { return f.root.match(doc) }

const maxDepth = 32

// MaxFilterTerms bounds a filter's size: every document scanned is tested
// against each term, so a filter of a million terms over a user's history
// would hold the PM for minutes. e-mission's queries use a handful.
const MaxFilterTerms = 10_000

// filterTerms counts v's object keys and array elements, stopping past limit;
// the values of $in and $nin, which a set answers at one lookup per value, do
// not count.
func filterTerms(v any, limit int) int {
	n := 0
	var walk func(v any)
	walk = func(v any) {
		if n > limit {
			return
		}
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				n++
				if k != "$in" && k != "$nin" {
					walk(e)
				}
			}
		case []any:
			for _, e := range x {
				n++
				walk(e)
			}
		}
	}
	walk(v)
	return n
}

func compileDoc(f map[string]any, depth int) (andNode, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("filter is nested deeper than %d levels", maxDepth)
	}
	keys := sortedKeys(f) // deterministic errors
	var out andNode
	for _, k := range keys {
		v := f[k]
		switch k {
		case "$and", "$or", "$nor":
			list, ok := v.([]any)
			if !ok || len(list) == 0 {
				return nil, fmt.Errorf("%s needs a non-empty array of filters", k)
			}
			var kids []node
			for i, e := range list {
				m, ok := e.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("%s[%d] must be a filter object", k, i)
				}
				c, err := compileDoc(m, depth+1)
				if err != nil {
					return nil, err
				}
				kids = append(kids, c)
			}
			switch k {
			case "$and":
				out = append(out, andNode(kids))
			case "$or":
				out = append(out, orNode(kids))
			default:
				out = append(out, norNode(kids))
			}
		case "$comment":
		default:
			if strings.HasPrefix(k, "$") {
				return nil, fmt.Errorf("unknown top-level operator %s", k)
			}
			parts, err := splitPath(k)
			if err != nil {
				return nil, err
			}
			conds, err := compileField(k, v, depth)
			if err != nil {
				return nil, err
			}
			out = append(out, &fieldNode{path: k, parts: parts, conds: conds})
		}
	}
	return out, nil
}

// isOperatorDoc reports whether v is {"$op": ...} (all keys operators).
func isOperatorDoc(path string, v any) (map[string]any, bool, error) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		return nil, false, nil
	}
	ops := 0
	for k := range m {
		if strings.HasPrefix(k, "$") {
			ops++
		}
	}
	if ops == 0 {
		return nil, false, nil
	}
	if _, isOID := m["$oid"]; isOID && len(m) == 1 {
		return nil, false, nil
	}
	if ops != len(m) {
		return nil, false, fmt.Errorf("%s: cannot mix operators and fields in one condition", path)
	}
	return m, true, nil
}

func compileField(path string, v any, depth int) ([]cond, error) {
	m, isOps, err := isOperatorDoc(path, v)
	if err != nil {
		return nil, err
	}
	if !isOps {
		nv, err := Normalize(v, false)
		if err != nil {
			return nil, err
		}
		return []cond{eqCond{nv}}, nil
	}
	var conds []cond
	for _, op := range sortedKeys(m) {
		arg := m[op]
		c, err := compileOp(path, op, arg, m, depth)
		if err != nil {
			return nil, err
		}
		if c != nil {
			conds = append(conds, c)
		}
	}
	return conds, nil
}

func compileOp(path, op string, arg any, all map[string]any, depth int) (cond, error) {
	if op != "$geoWithin" && op != "$not" {
		var err error
		if arg, err = Normalize(arg, false); err != nil {
			return nil, err
		}
	}
	switch op {
	case "$eq":
		return eqCond{arg}, nil
	case "$ne":
		return notCond{eqCond{arg}}, nil
	case "$gt", "$gte", "$lt", "$lte":
		if _, isMap := arg.(map[string]any); isMap {
			return nil, fmt.Errorf("%s: %s needs a value, not an object", path, op)
		}
		return cmpCond{op: op, v: arg}, nil
	case "$in", "$nin":
		list, ok := arg.([]any)
		if !ok {
			return nil, fmt.Errorf("%s: %s needs an array", path, op)
		}
		if len(list) > MaxInValues {
			return nil, fmt.Errorf("%s: %s holds %d values, at most %d", path, op, len(list), MaxInValues)
		}
		for _, e := range list {
			if m, ok := e.(map[string]any); ok {
				for k := range m {
					if strings.HasPrefix(k, "$") {
						return nil, fmt.Errorf("%s: %s cannot hold operator %s", path, op, k)
					}
				}
			}
		}
		if op == "$in" {
			return newInCond(list), nil
		}
		return notCond{newInCond(list)}, nil
	case "$exists":
		b, ok := truthy(arg)
		if !ok {
			return nil, fmt.Errorf("%s: $exists needs true or false", path)
		}
		return existsCond(b), nil
	case "$not":
		inner, isOps, err := isOperatorDoc(path, arg)
		if err != nil {
			return nil, err
		}
		if !isOps {
			return nil, fmt.Errorf("%s: $not needs an operator object such as {\"$gt\": 1}", path)
		}
		if depth > maxDepth {
			return nil, fmt.Errorf("filter is nested deeper than %d levels", maxDepth)
		}
		conds, err := compileField(path, inner, depth+1)
		if err != nil {
			return nil, err
		}
		return notCond{allCond(conds)}, nil
	case "$geoWithin":
		return compileGeoWithin(path, arg)
	case "$comment":
		return nil, nil
	}
	return nil, fmt.Errorf("%s: unknown operator %s", path, op)
}

func truthy(v any) (bool, bool) {
	if b, ok := v.(bool); ok {
		return b, true
	}
	if f, ok := number(v); ok {
		return f != 0, true
	}
	return false, false
}

type eqCond struct{ v any }

func (c eqCond) test(vals []any, found bool) bool {
	if c.v == nil && !found {
		return true
	}
	for _, x := range vals {
		if Equal(x, c.v) {
			return true
		}
	}
	return false
}

type notCond struct{ c cond }

func (c notCond) test(vals []any, found bool) bool { return !c.c.test(vals, found) }

type allCond []cond

func (c allCond) test(vals []any, found bool) bool {
	for _, x := range c {
		if !x.test(vals, found) {
			return false
		}
	}
	return true
}

type cmpCond struct {
	op string
	v  any
}

func (c cmpCond) test(vals []any, _ bool) bool {
	for _, x := range vals {
		if typeRank(x) != typeRank(c.v) {
			continue
		}
		r := Compare(x, c.v)
		switch c.op {
		case "$gt":
			if r > 0 {
				return true
			}
		case "$gte":
			if r >= 0 {
				return true
			}
		case "$lt":
			if r < 0 {
				return true
			}
		case "$lte":
			if r <= 0 {
				return true
			}
		}
	}
	return false
}

// MaxInValues bounds a $in or $nin list.
const MaxInValues = 100_000

// inCond is $in: its scalar values in a set by canonical key, so a list of
// thousands (the pipeline deletes by id) costs a lookup per value, not a
// scan; other values (objects, arrays) are compared one by one.
type inCond struct {
	list   []any
	set    map[string]struct{}
	others []any
	hasNil bool
}

func newInCond(list []any) inCond {
	c := inCond{list: list, set: make(map[string]struct{}, len(list))}
	for _, v := range list {
		if setKeyed(v) {
			c.hasNil = c.hasNil || v == nil
			c.set[Key(v)] = struct{}{}
		} else {
			c.others = append(c.others, v)
		}
	}
	return c
}

// setKeyed: v's Key is equal exactly for Equal values (null, strings,
// booleans, numbers that parse).
func setKeyed(v any) bool {
	switch v.(type) {
	case nil, string, bool:
		return true
	}
	_, ok := number(v)
	return ok
}

func (c inCond) test(vals []any, found bool) bool {
	if c.hasNil && !found {
		return true
	}
	for _, x := range vals {
		if setKeyed(x) {
			if _, ok := c.set[Key(x)]; ok {
				return true
			}
			continue
		}
		for _, o := range c.others {
			if Equal(x, o) {
				return true
			}
		}
	}
	return false
}

type existsCond bool

func (c existsCond) test(_ []any, found bool) bool { return found == bool(c) }

// ---- planning: what the store's indexes can use ----

// conjuncts returns the field nodes that every match must satisfy.
func (f *Filter) conjuncts() []*fieldNode {
	var out []*fieldNode
	var walk func(n andNode)
	walk = func(n andNode) {
		for _, c := range n {
			switch x := c.(type) {
			case *fieldNode:
				out = append(out, x)
			case andNode:
				walk(x)
			}
		}
	}
	walk(f.root)
	return out
}

// EqualStrings returns the strings path must equal (one for equality, many
// for $in) when the filter pins path to strings; ok is false otherwise.
func (f *Filter) EqualStrings(path string) (vals []string, ok bool) {
	var set []string
	have := false
	for _, fn := range f.conjuncts() {
		if fn.path != path {
			continue
		}
		for _, c := range fn.conds {
			var cand []string
			switch x := c.(type) {
			case eqCond:
				s, isStr := x.v.(string)
				if !isStr {
					continue
				}
				cand = []string{s}
			case inCond:
				allStr := true
				for _, e := range x.list {
					s, isStr := e.(string)
					if !isStr {
						allStr = false
						break
					}
					cand = append(cand, s)
				}
				if !allStr {
					continue
				}
			case oneOfCond:
				cand = []string{}
				for s := range x {
					cand = append(cand, s)
				}
				sort.Strings(cand)
			default:
				continue
			}
			if !have {
				set, have = cand, true
			} else {
				set = intersect(set, cand)
			}
		}
	}
	if !have {
		return nil, false
	}
	sort.Strings(set)
	return dedupe(set), true
}

func intersect(a, b []string) []string {
	in := map[string]bool{}
	for _, s := range b {
		in[s] = true
	}
	var out []string
	for _, s := range a {
		if in[s] {
			out = append(out, s)
		}
	}
	return out
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// Range is a numeric interval; absent bounds are infinite.
type Range struct {
	Lo, Hi         float64
	LoIncl, HiIncl bool
}

// Contains reports whether x is inside r.
func (r Range) Contains(x float64) bool {
	if x < r.Lo || (x == r.Lo && !r.LoIncl) {
		return false
	}
	if x > r.Hi || (x == r.Hi && !r.HiIncl) {
		return false
	}
	return true
}

// NumberRange returns the numeric interval the filter confines path to, when
// it does (with numeric bounds on a top-level conjunct). A match then has a
// number at path inside the range.
func (f *Filter) NumberRange(path string) (Range, bool) {
	r := Range{Lo: math.Inf(-1), Hi: math.Inf(1), LoIncl: true, HiIncl: true}
	ok := false
	for _, fn := range f.conjuncts() {
		if fn.path != path {
			continue
		}
		for _, c := range fn.conds {
			switch x := c.(type) {
			case cmpCond:
				n, isNum := number(x.v)
				if !isNum {
					continue
				}
				ok = true
				switch x.op {
				case "$gt":
					if n > r.Lo || (n == r.Lo && r.LoIncl) {
						r.Lo, r.LoIncl = n, false
					}
				case "$gte":
					if n > r.Lo {
						r.Lo, r.LoIncl = n, true
					}
				case "$lt":
					if n < r.Hi || (n == r.Hi && r.HiIncl) {
						r.Hi, r.HiIncl = n, false
					}
				case "$lte":
					if n < r.Hi {
						r.Hi, r.HiIncl = n, true
					}
				}
			case eqCond:
				n, isNum := number(x.v)
				if !isNum {
					continue
				}
				ok = true
				if n > r.Lo {
					r.Lo, r.LoIncl = n, true
				}
				if n < r.Hi {
					r.Hi, r.HiIncl = n, true
				}
			}
		}
	}
	return r, ok
}

// Equalities returns the fields a filter pins by plain equality (top level
// and inside $and), as an upsert seeds its new document with them.
func (f *Filter) Equalities() map[string]any {
	out := map[string]any{}
	for _, fn := range f.conjuncts() {
		for _, c := range fn.conds {
			if e, ok := c.(eqCond); ok {
				out[fn.path] = e.v
			}
		}
	}
	return out
}

// Plan is a filter that the store's index tuples alone can decide: every
// condition is on metadata.key or _id (strings), on data.ts or
// metadata.write_ts (numeric bounds), or says invalid does not exist.
type Plan struct {
	Keys      []string // metadata.key is one of these, sorted (nil: any)
	IDs       []string // _id is one of these strings, sorted (nil: any)
	TS, WTS   *Range   // data.ts, metadata.write_ts is a number inside
	NoInvalid bool     // the document has no top-level invalid field
}

// IndexPlan returns the filter as a Plan, or ok false when some condition
// needs the document itself.
func (f *Filter) IndexPlan() (p Plan, ok bool) {
	if f.empty {
		return p, true
	}
	var walk func(n andNode) bool
	walk = func(n andNode) bool {
		for _, c := range n {
			switch x := c.(type) {
			case andNode:
				if !walk(x) {
					return false
				}
			case *fieldNode:
				if !planField(x) {
					return false
				}
			default:
				return false
			}
		}
		return true
	}
	if !walk(f.root) {
		return Plan{}, false
	}
	// Non-nil even when empty: an empty set matches nothing.
	if keys, has := f.EqualStrings("metadata.key"); has {
		p.Keys = append([]string{}, keys...)
	}
	if ids, has := f.EqualStrings("_id"); has {
		p.IDs = append([]string{}, ids...)
	}
	if r, has := f.NumberRange("data.ts"); has {
		p.TS = &r
	}
	if r, has := f.NumberRange("metadata.write_ts"); has {
		p.WTS = &r
	}
	for _, fn := range f.conjuncts() {
		if fn.path == "invalid" {
			p.NoInvalid = true
		}
	}
	return p, true
}

// planField reports whether every condition of n is one IndexPlan captures.
func planField(n *fieldNode) bool {
	for _, c := range n.conds {
		switch n.path {
		case "metadata.key", "_id":
			switch x := c.(type) {
			case eqCond:
				if _, isStr := x.v.(string); !isStr {
					return false
				}
			case inCond:
				for _, e := range x.list {
					if _, isStr := e.(string); !isStr {
						return false
					}
				}
			case oneOfCond:
			default:
				return false
			}
		case "data.ts", "metadata.write_ts":
			var v any
			switch x := c.(type) {
			case eqCond:
				v = x.v
			case cmpCond:
				v = x.v
			default:
				return false
			}
			if n, isNum := number(v); !isNum || math.IsNaN(n) {
				return false
			}
		case "invalid":
			if e, isExists := c.(existsCond); !isExists || bool(e) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// HasString reports whether sorted (as Plan.Keys and Plan.IDs are) holds s.
func HasString(sorted []string, s string) bool {
	i := sort.SearchStrings(sorted, s)
	return i < len(sorted) && sorted[i] == s
}

// ---- scopes: what a grant lets its bearer see ----

// oneOfCond holds when the path holds exactly one string, one of the set:
// stricter than $in, which an array holding one allowed string would pass.
type oneOfCond map[string]bool

func (c oneOfCond) test(vals []any, found bool) bool {
	if !found || len(vals) != 1 {
		return false
	}
	s, ok := vals[0].(string)
	return ok && c[s]
}

// Within returns f further restricted to documents whose value at path is a
// single string among vals (none: nothing matches). The store's indexes plan
// it as they plan an $in of strings.
func (f *Filter) Within(path string, vals []string) (*Filter, error) {
	parts, err := splitPath(path)
	if err != nil {
		return nil, err
	}
	set := oneOfCond{}
	for _, v := range vals {
		set[v] = true
	}
	root := andNode{&fieldNode{path: path, parts: parts, conds: []cond{set}}}
	if f != nil && !f.empty {
		root = append(root, f.root)
	}
	return &Filter{root: root}, nil
}
