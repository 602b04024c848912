package store

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pm/query"
)

// The scan of a plain document must give the index tuple that decoding it
// gives, on every entry of the real days and on crafted edge cases.
func TestScanDocMatchesDecodedTuple(t *testing.T) {
	var docs [][]byte
	dir := realdata.DirT(t)
	for _, day := range []string{"shankari_2015-aug-27", "iphone_3_2016-02-22"} {
		raw, err := realdata.ReadFile(filepath.Join(dir, day))
		if err != nil {
			t.Fatal(err)
		}
		elems, ok := SplitArray(raw)
		if !ok || len(elems) < 100 {
			t.Fatalf("%s: split %d elements, ok %v", day, len(elems), ok)
		}
		// As a client sends them: without the export's {"$oid": ...} ids.
		for _, e := range elems {
			m, err := decodeDoc(e)
			if err != nil {
				t.Fatal(err)
			}
			delete(m, "_id")
			m["user_id"] = "u"
			b, _ := json.Marshal(m)
			docs = append(docs, b)
		}
	}
	docs = append(docs,
		[]byte(`{"_id":"a","metadata":{"key":"k","write_ts":5},"data":{"ts":1.5e9},"invalid":true}`),
		[]byte(` { "metadata" : { "key" : 3 , "write_ts" : "x" } , "data" : [1, {"ts": 2}] } `),
		[]byte(`{"metadata":{"key":"a","key":"b","write_ts":1,"write_ts":null},"data":{"ts":1,"ts":"no"}}`),
		[]byte(`{"data":{"ts":1e400},"metadata":[{"key":"k"}]}`),
		[]byte(`{"_id":"x","s":"\"quoted\" \\ and \u00e9","n":[[[]]],"o":{}}`),
		[]byte(`{}`),
		[]byte(`{"data":{"x":1},"metadata":{"write_ts":null}}`),
		[]byte(`{"data":null,"metadata":"m"}`),
		[]byte(`{"data":{"ts":null},"metadata":{"write_ts":[1]}}`),
		[]byte(`{"data":{"ts":{"a":1}},"metadata":{"write_ts":true}}`),
	)
	plain := 0
	for i, d := range docs {
		info, ok := scanDoc(d)
		if !ok {
			continue
		}
		plain++
		m, err := decodeDoc(d)
		if err != nil {
			t.Fatalf("doc %d: %v", i, err)
		}
		want := tupleFor("db", "c", m)
		if _, has := m["_id"]; !has {
			want.id = query.Key("")
		}
		got := info.tuple("db", "c")
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("doc %d %.80s: scanned %+v, decoded %+v", i, d, got, want)
		}
	}
	if plain < len(docs)-2 {
		t.Errorf("only %d of %d documents were plain", plain, len(docs))
	}
}

func TestParseDocTakesTheGeneralPathWhenItMust(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		raw  bool   // kept as bytes
		fail string // error wanted
	}{
		{doc: `{"a":1}`, raw: true},
		{doc: `{"_id":{"$oid":"5f1b2c3d4e5f6a7b8c9d0e1f"}}`}, // extended JSON: normalized
		{doc: `{"_id":7}`},                                   // a number id: decoded
		{doc: `{"k\u0065y":1}`},                              // an escaped name
		{doc: `{"a":{"$set":1}}`, fail: "not allowed"},       // an operator inside
		{doc: `{"a.b":1}`, fail: "not allowed"},              // a dotted name
		{doc: `{"":1}`, fail: "not allowed"},                 // an empty name
		{doc: `[1,2]`, fail: ErrNotDocument.Error()},         // not an object
		{doc: `null`, fail: ErrNotDocument.Error()},          // null
		{doc: `{"_id":"x","_id":"y"}`},                       // duplicate top-level names
		{doc: "{\n  \"a\" : [ 1, 2 ]\n}", raw: true},         // spaced: compacted
	} {
		d, err := ParseDoc([]byte(tc.doc))
		if tc.fail != "" {
			if err == nil || !strings.Contains(err.Error(), tc.fail) {
				t.Errorf("%s: error %v, want %q", tc.doc, err, tc.fail)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.doc, err)
			continue
		}
		if (d.raw != nil) != tc.raw {
			t.Errorf("%s: kept as bytes %v, want %v", tc.doc, d.raw != nil, tc.raw)
		}
		if d.raw != nil && strings.ContainsAny(string(d.raw), " \n") {
			t.Errorf("%s: stored %q, not compact", tc.doc, d.raw)
		}
	}
	if got := string(withID([]byte(`{}`), "i")); got != `{"_id":"i"}` {
		t.Errorf("withID on {}: %s", got)
	}
	if got := string(withID([]byte(`{"a":1}`), "i")); got != `{"_id":"i","a":1}` {
		t.Errorf("withID: %s", got)
	}
}

func TestSplitArray(t *testing.T) {
	for in, want := range map[string][]string{
		`[]`:                                 {},
		` [ {"a":"]"} , [1,[2]], "x,", 3 ] `: {`{"a":"]"}`, `[1,[2]]`, `"x,"`, `3 `},
	} {
		got, ok := SplitArray([]byte(in))
		if !ok || len(got) != len(want) {
			t.Fatalf("%s: %q %v", in, got, ok)
		}
		for i := range got {
			if string(got[i]) != want[i] {
				t.Errorf("%s: element %d %q, want %q", in, i, got[i], want[i])
			}
		}
	}
	for _, in := range []string{`{}`, `"[]"`, `[1,]`, ``} {
		if _, ok := SplitArray([]byte(in)); ok {
			t.Errorf("%q split as an array", in)
		}
	}
}

// FindRaw must answer exactly what Find answers whenever it answers, over
// documents stored both ways, and decline what it cannot decide.
func TestFindRawEqualsFind(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	var plain []Doc
	var decoded []map[string]any
	for i := range 60 {
		doc := fmt.Sprintf(`{"_id":"%02d","metadata":{"key":"k%d","write_ts":%d},"data":{"ts":%d,"start_ts":%d}%s}`,
			59-i, i%3, i/2, i%7, i, map[bool]string{true: `,"invalid":true`}[i%10 == 0])
		if i%2 == 0 {
			d, err := ParseDoc([]byte(doc))
			if err != nil || d.raw == nil {
				t.Fatalf("%s: %v", doc, err)
			}
			plain = append(plain, d)
		} else {
			m, _ := decodeDoc([]byte(doc))
			decoded = append(decoded, m)
		}
	}
	if _, err := s.InsertDocs("db", "c", plain); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Insert("db", "c", decoded); err != nil {
		t.Fatal(err)
	}
	asc := func(p string) query.SortKey { return query.SortKey{Path: p} }
	for _, tc := range []struct {
		filter string
		sort   query.Sorter
		skip   int64
		limit  int64
		raw    bool
	}{
		{`{}`, nil, 0, 0, true},
		{`{"invalid": {"$exists": false}, "metadata.key": {"$in": ["k1", "k2"]}, "data.ts": {"$gte": 2, "$lte": 5}}`, query.Sorter{asc("data.ts")}, 0, 0, true},
		{`{"metadata.key": "k0", "metadata.write_ts": {"$gt": 3}}`, query.Sorter{{Path: "metadata.write_ts", Desc: true}}, 1, 4, true},
		{`{"metadata.key": "k0"}`, query.Sorter{{Path: "data.ts", Desc: true}, asc("metadata.write_ts")}, 0, 3, true},
		{`{"invalid": {"$exists": false}, "metadata.key": {"$in": ["k1", "k2"]}, "data.ts": {"$gte": 2, "$lte": 5}}`, query.Sorter{asc("data.ts"), asc("_id")}, 0, 0, true},
		{`{"metadata.key": "k0", "metadata.write_ts": {"$gt": 3}}`, query.Sorter{{Path: "metadata.write_ts", Desc: true}, asc("_id")}, 1, 4, true},
		{`{"data.ts": 3}`, query.Sorter{asc("_id")}, 0, 0, true},
		{`{"data.ts": {"$lt": 3}}`, query.Sorter{{Path: "data.ts", Desc: true}}, 0, 2, true},
		// The index keeps a hash of _id, not _id: a filter on it decodes.
		{`{"_id": {"$in": ["03", "10", "nope"]}}`, nil, 0, 0, false},
		{`{"invalid": {"$exists": false}}`, query.Sorter{asc("metadata.write_ts")}, 0, 0, true},
		{`{"data.start_ts": {"$gte": 10}}`, nil, 0, 0, false},                       // not an indexed field
		{`{"metadata.key": "k1"}`, query.Sorter{asc("data.start_ts")}, 0, 0, false}, // sort on a field the index lacks
		{`{"$or": [{"metadata.key": "k1"}, {"data.ts": 1}]}`, nil, 0, 0, false},
		{`{"invalid": {"$exists": true}}`, nil, 0, 0, false},
	} {
		var fm map[string]any
		if err := json.Unmarshal([]byte(tc.filter), &fm); err != nil {
			t.Fatal(err)
		}
		f, err := query.Compile(fm)
		if err != nil {
			t.Fatal(err)
		}
		o := FindOptions{Sort: tc.sort, Skip: tc.skip, Limit: tc.limit}
		want, _, err := s.Find(context.Background(), "db", "c", f, o)
		if err != nil {
			t.Fatal(err)
		}
		raws, ok, err := s.FindRaw("db", "c", f, o)
		if err != nil || ok != tc.raw {
			t.Fatalf("%s: FindRaw answered %v (%v), want %v", tc.filter, ok, err, tc.raw)
		}
		if !ok {
			continue
		}
		if len(raws) != len(want) {
			t.Fatalf("%s: %d raw documents, Find gave %d", tc.filter, len(raws), len(want))
		}
		for i, r := range raws {
			got, err := decodeDoc(r)
			if err != nil || !reflect.DeepEqual(got, want[i]) {
				t.Fatalf("%s: document %d is %s, Find gave %v", tc.filter, i, r, want[i])
			}
		}
		// Count and Delete decide the same filters from the tuples.
		n, err := s.Count(context.Background(), "db", "c", f, 0, 0)
		all, _, _ := s.Find(context.Background(), "db", "c", f, FindOptions{})
		if err != nil || n != int64(len(all)) {
			t.Errorf("%s: count %d, find %d", tc.filter, n, len(all))
		}
	}
}

// A tuple written before the invalid flag existed is decided by decoding.
func TestOldTuplesFallBackForInvalid(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	if _, err := s.Insert("db", "c", []map[string]any{{"_id": "a", "invalid": true}, {"_id": "b"}}); err != nil {
		t.Fatal(err)
	}
	c := s.coll("db", "c", false)
	for _, p := range c.byID {
		c.at(p).flags &^= flagInvalidKnown | flagInvalid
	}
	c.oldTuple = c.live
	f, _ := query.Compile(map[string]any{"invalid": map[string]any{"$exists": false}})
	if _, ok, _ := s.FindRaw("db", "c", f, FindOptions{}); ok {
		t.Fatal("FindRaw decided invalid from tuples that do not record it")
	}
	latest := FindOptions{Sort: query.Sorter{{Path: "data.ts", Desc: true}}, Limit: 1}
	if _, ok, _ := s.FindRaw("db", "c", f, latest); ok {
		t.Fatal("FindRaw decided invalid from tuples that do not record it, sorted")
	}
	n, err := s.Count(context.Background(), "db", "c", f, 0, 0)
	if err != nil || n != 1 {
		t.Fatalf("count %d %v, want 1", n, err)
	}
}
