// Package pmtest helps the PM's tests: it finds the real e-mission day files
// (testdata/real_examples, see internal/realdata) and loads them as the client library would
// send them (extended JSON's {"$oid": h} and {"$uuid": h} become strings).
package pmtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
)

// RealExamplesDir locates the real days (see internal/realdata).
func RealExamplesDir(t testing.TB) string {
	t.Helper()
	return realdata.DirT(t)
}

// DayFiles lists the day files (not the ground truths, not the README).
func DayFiles(t testing.TB) []string {
	t.Helper()
	dir := RealExamplesDir(t)
	days, err := realdata.Days(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range days {
		out = append(out, filepath.Join(dir, d))
	}
	if len(out) == 0 {
		t.Fatalf("no day files in %s", dir)
	}
	return out
}

// LoadDay reads a day file with numbers kept exact (json.Number) and
// extended-JSON ids flattened to strings.
func LoadDay(t testing.TB, path string) []map[string]any {
	t.Helper()
	docs, err := ReadDay(path)
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// ReadDay is LoadDay without a testing.TB.
func ReadDay(path string) ([]map[string]any, error) {
	b, err := realdata.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var docs []map[string]any
	if err := dec.Decode(&docs); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	for _, d := range docs {
		Flatten(d)
	}
	return docs, nil
}

// Flatten rewrites {"$oid": h} and {"$uuid": h} to h, in place.
func Flatten(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 1 {
			for _, k := range []string{"$oid", "$uuid"} {
				if s, ok := x[k].(string); ok {
					return s
				}
			}
		}
		for k, e := range x {
			x[k] = Flatten(e)
		}
	case []any:
		for i, e := range x {
			x[i] = Flatten(e)
		}
	}
	return v
}

// Canonical re-encodes v with sorted keys and numbers as they were, for
// comparing documents byte for byte.
func Canonical(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(x)
	return string(b)
}
