package query

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Update is a compiled update document: operators ($set, $unset, $inc,
// $setOnInsert) or, when it has no operator, a whole replacement document.
type Update struct {
	replacement map[string]any
	ops         []updateOp
}

type updateOp struct {
	op    string
	path  string
	parts []string
	v     any
}

// CompileUpdate checks an update document. With replace set, u must be a
// replacement (replace_one); otherwise it must use operators (update_one,
// update_many) unless allowReplace (the legacy update).
// MaxUpdateFields bounds the fields one update names (each is applied to
// every matched document and checked against the others).
const MaxUpdateFields = 1_000

func CompileUpdate(u map[string]any, replace, allowReplace bool) (*Update, error) {
	if len(u) == 0 {
		if replace || allowReplace {
			return &Update{replacement: map[string]any{}}, nil
		}
		return nil, fmt.Errorf("update document is empty; use operators such as $set")
	}
	ops := 0
	for k := range u {
		if strings.HasPrefix(k, "$") {
			ops++
		}
	}
	if ops > 0 && ops != len(u) {
		return nil, fmt.Errorf("update document mixes operators and fields")
	}
	if ops == 0 {
		if !replace && !allowReplace {
			return nil, fmt.Errorf("update document must use operators such as $set (replace_one replaces whole documents)")
		}
		doc, err := Normalize(u, true)
		if err != nil {
			return nil, err
		}
		return &Update{replacement: doc.(map[string]any)}, nil
	}
	if replace {
		return nil, fmt.Errorf("a replacement document cannot contain update operators")
	}
	fieldCount := 0
	for _, f := range u {
		if m, ok := f.(map[string]any); ok {
			fieldCount += len(m)
		}
	}
	if fieldCount > MaxUpdateFields {
		return nil, fmt.Errorf("update names %d fields; at most %d", fieldCount, MaxUpdateFields)
	}
	var out Update
	seen := map[string]string{}
	for _, op := range sortedKeys(u) {
		switch op {
		case "$set", "$unset", "$inc", "$setOnInsert":
		default:
			return nil, fmt.Errorf("unknown update operator %s (supported: $set, $unset, $inc, $setOnInsert)", op)
		}
		fields, ok := u[op].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s needs an object of fields", op)
		}
		for _, p := range sortedKeys(fields) {
			parts, err := splitPath(p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", op, err)
			}
			for _, s := range parts {
				if strings.HasPrefix(s, "$") {
					return nil, fmt.Errorf("%s: field path %q has an operator part", op, p)
				}
			}
			for q, qop := range seen {
				if q == p || strings.HasPrefix(q, p+".") || strings.HasPrefix(p, q+".") {
					return nil, fmt.Errorf("%s %q conflicts with %s %q", op, p, qop, q)
				}
			}
			seen[p] = op
			v := fields[p]
			if op == "$set" || op == "$setOnInsert" {
				if v, err = Normalize(v, true); err != nil {
					return nil, fmt.Errorf("%s %q: %w", op, p, err)
				}
			}
			if op == "$inc" {
				if _, ok := number(v); !ok {
					return nil, fmt.Errorf("$inc %q needs a number", p)
				}
			}
			out.ops = append(out.ops, updateOp{op: op, path: p, parts: parts, v: v})
		}
	}
	return &out, nil
}

// IsReplacement reports whether the update replaces whole documents.
func (u *Update) IsReplacement() bool { return u.replacement != nil }

// Apply returns the updated copy of doc; doc is not changed. inserting says
// the document is being created by an upsert ($setOnInsert applies).
func (u *Update) Apply(doc map[string]any, inserting bool) (map[string]any, error) {
	if u.replacement != nil {
		out := Clone(u.replacement).(map[string]any)
		if id, ok := doc["_id"]; ok {
			if rid, ok := out["_id"]; ok && !Equal(rid, id) {
				return nil, fmt.Errorf("the replacement changes _id, which is immutable")
			}
			out["_id"] = id
		}
		return out, nil
	}
	out := Clone(doc).(map[string]any)
	for _, o := range u.ops {
		if o.parts[0] == "_id" && o.op != "$setOnInsert" {
			if cur, ok := out["_id"]; ok && (o.op != "$set" || !Equal(cur, o.v)) {
				return nil, fmt.Errorf("%s on _id: _id is immutable", o.op)
			}
		}
		switch o.op {
		case "$set":
			if err := setPath(out, o.parts, Clone(o.v)); err != nil {
				return nil, fmt.Errorf("$set %q: %w", o.path, err)
			}
		case "$setOnInsert":
			if inserting {
				if err := setPath(out, o.parts, Clone(o.v)); err != nil {
					return nil, fmt.Errorf("$setOnInsert %q: %w", o.path, err)
				}
			}
		case "$unset":
			unsetPath(out, o.parts)
		case "$inc":
			cur, _ := Get(out, o.path)
			var sum any
			if cur == nil {
				sum = o.v
			} else {
				a, ok := number(cur)
				if !ok {
					return nil, fmt.Errorf("$inc %q: the field holds a non-number", o.path)
				}
				b, _ := number(o.v)
				sum = addNumbers(cur, o.v, a+b)
			}
			if err := setPath(out, o.parts, sum); err != nil {
				return nil, fmt.Errorf("$inc %q: %w", o.path, err)
			}
		}
	}
	return out, nil
}

// addNumbers keeps integers integral when both operands are.
func addNumbers(a, b any, f float64) any {
	ia, okA := integer(a)
	ib, okB := integer(b)
	if okA && okB {
		return json.Number(strconv.FormatInt(ia+ib, 10))
	}
	return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
}

func integer(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := strconv.ParseInt(string(n), 10, 64)
		return i, err == nil
	case int:
		return int64(n), true
	case int64:
		return n, true
	}
	return 0, false
}

func setPath(doc map[string]any, parts []string, v any) error {
	var cur any = doc
	for i, p := range parts {
		last := i == len(parts)-1
		switch x := cur.(type) {
		case map[string]any:
			if last {
				x[p] = v
				return nil
			}
			next, ok := x[p]
			if !ok || next == nil {
				next = map[string]any{}
				x[p] = next
			}
			cur = next
		case []any:
			idx, err := strconv.Atoi(p)
			if err != nil || idx < 0 {
				return fmt.Errorf("cannot use part %q to traverse an array", p)
			}
			if idx >= len(x) {
				return fmt.Errorf("array index %d is past the end (%d elements)", idx, len(x))
			}
			if last {
				x[idx] = v
				return nil
			}
			if x[idx] == nil {
				x[idx] = map[string]any{}
			}
			cur = x[idx]
		default:
			return fmt.Errorf("cannot create field %q inside a %s", p, typeName(x))
		}
	}
	return nil
}

func unsetPath(doc map[string]any, parts []string) {
	var cur any = doc
	for i, p := range parts {
		last := i == len(parts)-1
		switch x := cur.(type) {
		case map[string]any:
			if last {
				delete(x, p)
				return
			}
			cur = x[p]
		case []any:
			idx, err := strconv.Atoi(p)
			if err != nil || idx < 0 || idx >= len(x) {
				return
			}
			if last {
				x[idx] = nil // as MongoDB: $unset on an array element sets it null
				return
			}
			cur = x[idx]
		default:
			return
		}
	}
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "number"
}

// SetPath sets a dotted path in doc, creating objects on the way (an upsert
// seeds its document with the filter's equalities this way).
func SetPath(doc map[string]any, path string, v any) error {
	parts, err := splitPath(path)
	if err != nil {
		return err
	}
	return setPath(doc, parts, Clone(v))
}
