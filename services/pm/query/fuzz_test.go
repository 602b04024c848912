package query_test

// Fuzz targets for what clients send the PM: filters, updates and
// projections, each compiled and then used on real e-mission documents. Seeds
// are the shapes e-mission's queries take (and the tests'); `make fuzz` runs
// each for a bounded time, and crashers found land in testdata/fuzz as
// regression cases that `go test` replays.

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"

	"github.com/e-mission/upc/services/pm/pmtest"
	"github.com/e-mission/upc/services/pm/query"
)

var (
	sampleOnce sync.Once
	sample     []map[string]any
)

// sampleDocs is every 50th document of a real day (one of each stream kind
// among them), decoded as the PM decodes them.
func sampleDocs(t testing.TB) []map[string]any {
	sampleOnce.Do(func() {
		docs := pmtest.LoadDay(t, filepath.Join(pmtest.RealExamplesDir(t), "shankari_2015-aug-27"))
		seen := map[any]bool{}
		for i, d := range docs {
			md, _ := d["metadata"].(map[string]any)
			if i%50 == 0 || !seen[md["key"]] {
				sample = append(sample, d)
				seen[md["key"]] = true
			}
		}
	})
	return sample
}

// decodeObject decodes b as the PM decodes request bodies (exact numbers).
func decodeObject(b []byte) (map[string]any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if dec.Decode(&m) != nil || m == nil {
		return nil, false
	}
	return m, true
}

var filterSeeds = []string{
	`{}`,
	`{"metadata.key": "background/location"}`,
	`{"metadata.key": {"$in": ["background/location", "background/filtered_location"]}, "data.ts": {"$gte": 1440658800, "$lte": 1440745200}}`,
	`{"$or": [{"data.accuracy": {"$lt": 50}}, {"data.sensed_mode": {"$exists": false}}]}`,
	`{"data.loc": {"$geoWithin": {"$geometry": {"type": "Polygon", "coordinates": [[[-122.1, 37.3], [-122.0, 37.3], [-122.0, 37.4], [-122.1, 37.4], [-122.1, 37.3]]]}}}}`,
	`{"data.loc": {"$geoWithin": {"$centerSphere": [[-122.08, 37.39], 0.0001]}}}`,
	`{"data.ts": {"$not": {"$gt": 5}}, "_id": {"$oid": "55e0d3c3f2f1a52a8d3b5e1c"}}`,
	`{"$nor": [{"data.x": {"$ne": null}}], "data.arr": {"$all": [1, "a"]}, "data.y": {"$nin": [1, 2.5, "3"]}}`,
	`{"data.loc.coordinates.0": {"$gt": -123}, "$and": [{"metadata.write_ts": {"$type": "number"}}]}`,
}

// FuzzFilter: any filter a client sends compiles or is refused with an
// error; one that compiles matches every real document without panicking,
// and the same way twice.
func FuzzFilter(f *testing.F) {
	for _, s := range filterSeeds {
		f.Add([]byte(s))
	}
	docs := sampleDocs(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := decodeObject(b)
		if !ok {
			return
		}
		flt, err := query.Compile(m)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refused with an empty message")
			}
			return
		}
		for _, d := range docs {
			if flt.Match(d) != flt.Match(d) {
				t.Fatalf("filter %s matches %v inconsistently", b, d["_id"])
			}
		}
		flt.IndexPlan()
		flt.Equalities()
	})
}

// FuzzUpdate: any update compiles or is refused; one that compiles applies
// to real documents (or refuses them with an error), never changing the
// original, and what it makes is a document the PM would store.
func FuzzUpdate(f *testing.F) {
	for _, s := range []string{
		`{"$set": {"data.end_ts": 1440745200.5, "metadata.type": "message"}}`,
		`{"$inc": {"data.count": 1}, "$unset": {"data.tmp": ""}}`,
		`{"$setOnInsert": {"metadata": {"key": "analysis/cleaned_trip"}}, "$set": {"data.a.b.c": [1, {"x": null}]}}`,
		`{"metadata": {"key": "k"}, "data": {"ts": 1}}`,
		`{"$set": {"data.loc.coordinates.1": 37.4}}`,
		`{"$set": {"_id": "x"}}`,
	} {
		for _, replace := range []bool{false, true} {
			f.Add([]byte(s), replace)
		}
	}
	docs := sampleDocs(f)
	f.Fuzz(func(t *testing.T, b []byte, replace bool) {
		m, ok := decodeObject(b)
		if !ok {
			return
		}
		u, err := query.CompileUpdate(m, replace, !replace)
		if err != nil {
			return
		}
		for _, d := range docs[:min(len(docs), 20)] {
			before, _ := json.Marshal(d)
			out, err := u.Apply(d, false)
			if after, _ := json.Marshal(d); !bytes.Equal(before, after) {
				t.Fatalf("update %s changed the document it was applied to", b)
			}
			if err != nil {
				continue
			}
			if _, err := json.Marshal(out); err != nil {
				t.Fatalf("update %s made a document JSON cannot hold: %v", b, err)
			}
			if _, err := query.Normalize(query.Clone(out), true); err != nil {
				t.Fatalf("update %s made a document the PM would refuse to store: %v", b, err)
			}
		}
	})
}

// FuzzProjection: any projection compiles or is refused; one that compiles
// projects real documents into documents JSON can hold.
func FuzzProjection(f *testing.F) {
	for _, s := range []string{`null`, `{"data.ts": 1, "_id": 0}`, `{"data": 0}`, `["data.loc", "metadata.key"]`, `{"data.loc.coordinates": true}`, `{}`, `{"a": 1, "b": 0}`} {
		f.Add([]byte(s))
	}
	docs := sampleDocs(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var p any
		if dec.Decode(&p) != nil {
			return
		}
		proj, err := query.CompileProjection(p)
		if err != nil {
			return
		}
		for _, d := range docs {
			out := proj.Apply(d)
			if _, err := json.Marshal(out); err != nil {
				t.Fatalf("projection %s made %v: %v", b, out, err)
			}
		}
	})
}
