package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/e-mission/upc/services/pm/query"
)

// The compact index (pending records, merges, dead records, reused
// positions, reload at unseal) and the ordered walk answer every query as a
// plain scan with the filter engine would, across more than one merge.
func TestIndexAgreesWithScan(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{NoSync: true})
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	doc := func(i int) map[string]any {
		d := map[string]any{"_id": fmt.Sprintf("%05d", i), "metadata": map[string]any{"key": fmt.Sprintf("k%d", rng.IntN(4)),
			"write_ts": json.Number(fmt.Sprint(rng.IntN(500)))}, "data": map[string]any{"ts": json.Number(fmt.Sprint(rng.IntN(300)))}}
		switch rng.IntN(20) {
		case 0:
			delete(d["data"].(map[string]any), "ts")
		case 1:
			d["data"].(map[string]any)["ts"] = "later"
		case 2:
			d["invalid"] = true
		case 3:
			d["data"].(map[string]any)["ts"] = nil
		}
		return d
	}
	n := 0
	batch := func(k int) {
		docs := make([]map[string]any, k)
		for i := range docs {
			docs[i] = doc(n)
			n++
		}
		if _, err := s.Insert("db", "c", docs); err != nil {
			t.Fatal(err)
		}
	}
	compile := func(js string) *query.Filter {
		var m map[string]any
		if err := json.Unmarshal([]byte(js), &m); err != nil {
			t.Fatal(err)
		}
		f, err := query.Compile(m)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	check := func(stage string) {
		t.Helper()
		// The reference: every document, read by a filter no index serves.
		all, st, err := s.Find(ctx, "db", "c", compile(`{"nowhere": {"$exists": false}}`), FindOptions{})
		if err != nil || !st.Scanned {
			t.Fatalf("%s: scan: %v (scanned %v)", stage, err, st.Scanned)
		}
		desc := func(p string) query.SortKey { return query.SortKey{Path: p, Desc: true} }
		asc := func(p string) query.SortKey { return query.SortKey{Path: p} }
		for _, tc := range []struct {
			filter      string
			sort        query.Sorter
			skip, limit int64
		}{
			{`{}`, query.Sorter{desc("data.ts")}, 0, 1},
			{`{}`, query.Sorter{asc("data.ts")}, 0, 3},
			{`{"metadata.key": "k1"}`, query.Sorter{desc("data.ts")}, 10, 100000},
			{`{"metadata.key": "k2", "data.ts": {"$gte": 250}}`, query.Sorter{asc("data.ts")}, 0, 100000},
			{`{"metadata.key": "k0", "user": {"$exists": false}}`, query.Sorter{desc("data.ts")}, 0, 2},
			{`{"metadata.key": "k1"}`, query.Sorter{desc("data.ts")}, 2, 5},
			{`{"metadata.key": {"$in": ["k0", "k3"]}, "invalid": {"$exists": false}}`, query.Sorter{desc("metadata.write_ts"), asc("_id")}, 0, 4},
			{`{"metadata.key": "k2", "data.ts": {"$gte": 100, "$lt": 200}}`, nil, 0, 0},
			{`{"metadata.write_ts": {"$gt": 250}}`, query.Sorter{asc("metadata.write_ts")}, 0, 7},
			{`{"data.ts": {"$lte": 20}}`, query.Sorter{asc("_id")}, 0, 0},
			{`{"_id": {"$in": ["00007", "02500", "05000"]}}`, nil, 0, 0},
			{`{"metadata.key": "k0"}`, nil, 0, 0},
			{`{"metadata.key": "k3", "metadata.write_ts": {"$gte": 10, "$lte": 40}}`, query.Sorter{desc("data.ts")}, 0, 2},
		} {
			f := compile(tc.filter)
			var want []map[string]any
			for _, d := range all {
				if f.Match(d) {
					want = append(want, d)
				}
			}
			tc.sort.Sort(want)
			want = window(want, tc.skip, tc.limit)
			o := FindOptions{Sort: tc.sort, Skip: tc.skip, Limit: tc.limit}
			got, _, err := s.Find(ctx, "db", "c", f, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 {
				want = nil
			}
			if len(got) == 0 {
				got = nil
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: %s sort %v skip %d limit %d: got %d documents, want %d\n%v\n%v", stage, tc.filter, tc.sort, tc.skip, tc.limit, len(got), len(want), got, want)
			}
			raws, ok, err := s.FindRaw("db", "c", f, o)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				if len(raws) != len(want) {
					t.Fatalf("%s: %s: FindRaw gave %d documents, want %d", stage, tc.filter, len(raws), len(want))
				}
				for i, r := range raws {
					if d, _ := decodeDoc(r); !reflect.DeepEqual(d, want[i]) {
						t.Fatalf("%s: %s: FindRaw document %d is %s, want %v", stage, tc.filter, i, r, want[i])
					}
				}
			}
			cnt, err := s.Count(ctx, "db", "c", f, 0, 0)
			if err != nil || tc.limit == 0 && tc.skip == 0 && cnt != int64(len(want)) {
				t.Fatalf("%s: %s: count %d (%v)", stage, tc.filter, cnt, err)
			}
		}
	}
	batch(3 * pendingMax / 2)
	check("inserted, some pending")
	batch(pendingMax)
	check("after a merge")
	// Updates replace records (new positions, same insertion number); deletes
	// leave dead records until the next merge, whose positions are reused.
	for range 300 {
		id := fmt.Sprintf("%05d", rng.IntN(n))
		u, _ := query.CompileUpdate(map[string]any{"$set": map[string]any{"data.ts": json.Number(fmt.Sprint(rng.IntN(300)))}}, false, false)
		if _, err := s.Update(ctx, "db", "c", compile(`{"_id": "`+id+`"}`), u, false, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Delete(ctx, "db", "c", compile(`{"metadata.key": "k2", "data.ts": {"$lt": 150}}`), true); err != nil {
		t.Fatal(err)
	}
	check("updated and deleted")
	batch(pendingMax + 100)
	check("positions reused")
	s.Close()
	s = openTest(t, dir, Options{NoSync: true})
	check("reloaded")
}

// Record ids start with their write transaction's number, counting on
// across a reopen, so a batch's records are appended together.
func TestRecordIDsFollowTransactions(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{NoSync: true})
	prefixes := func() map[uint64]int {
		c := s.coll("db", "c", false)
		out := map[uint64]int{}
		for _, p := range c.byID {
			out[binary.BigEndian.Uint64(c.at(p).id[:8])]++
		}
		return out
	}
	insert := func(ids ...string) {
		t.Helper()
		var docs []map[string]any
		for _, id := range ids {
			docs = append(docs, map[string]any{"_id": id})
		}
		if _, err := s.Insert("db", "c", docs); err != nil {
			t.Fatal(err)
		}
	}
	insert("a", "b", "c")
	insert("d", "e")
	if got := prefixes(); len(got) != 2 || got[2] != 3 || got[3] != 2 {
		t.Fatalf("id prefixes %v, want 3 of 2 and 2 of 3", got)
	}
	s.Close()
	s = openTest(t, dir, Options{NoSync: true})
	insert("f")
	if got := prefixes(); got[4] != 1 {
		t.Fatalf("after a reopen: id prefixes %v, want one of 4", got)
	}
}
