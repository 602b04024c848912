package store

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pm/query"
)

// FuzzParseDoc: the insert path's one-pass scan of a document (kept as its
// bytes) must agree with decoding it: a document the scan accepts decodes to
// an object the PM would store, with the same index fields; a document it
// sends to the general path is stored or refused there, never lost. Seeds
// are every document of a real day and the shapes the tests use.
func FuzzParseDoc(f *testing.F) {
	dir := realdata.DirT(f)
	b, err := realdata.ReadFile(filepath.Join(dir, "shankari_2015-aug-27"))
	if err != nil {
		f.Fatal(err)
	}
	var docs []json.RawMessage
	if err := json.Unmarshal(b, &docs); err != nil {
		f.Fatal(err)
	}
	for i, d := range docs {
		if i%10 == 0 {
			f.Add([]byte(d))
		}
	}
	for _, s := range []string{
		`{"_id":"x","metadata":{"key":"k","write_ts":1},"data":{"ts":2}}`,
		`{ "data" : { "ts" : 1e3 } , "invalid" : true }`,
		`{"metadata":{"key":"a\"b"}}`, `{"a":1,"a":2}`, `{"$x":1}`, `{"a.b":1}`, `{"_id":{"$oid":"55e0d3c3f2f1a52a8d3b5e1c"}}`,
		`{"data":{"ts":-0}}`, `{"data":{"ts":1e400}}`, `{"data":[{"x":{}}]}`, `[]`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) { // the PM's request decoder has checked this
			return
		}
		d, err := ParseDoc(raw)
		if err != nil {
			return
		}
		if _, err := d.ensureID(time.Now()); err != nil {
			return
		}
		stored, tup, err := d.record("db", "c")
		if err != nil {
			return
		}
		m, err := decodeDoc(stored)
		if err != nil || m == nil {
			t.Fatalf("%s is stored as %s, which does not decode: %v", raw, stored, err)
		}
		if d.raw != nil {
			if _, err := query.Normalize(query.Clone(m), true); err != nil {
				t.Fatalf("the scan kept %s, which the general path refuses: %v", raw, err)
			}
		}
		if want := tupleFor("db", "c", m); tup != want {
			t.Fatalf("%s: index fields %+v, decoding says %+v", raw, tup, want)
		}
	})
}
