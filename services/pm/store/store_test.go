package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/e-mission/upc/services/pm/query"
)

var testKDF = KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

func openTest(t *testing.T, dir string, o Options) *Store {
	t.Helper()
	o.KDF = testKDF
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Unseal([]byte("k")); err != nil {
		t.Fatal(err)
	}
	return s
}

// q is a charge of cost for query id, paying for question (a 64-hex digest
// derived from its name).
func q(cost float64, id, question string) Charge {
	sum := sha256.Sum256([]byte(question))
	return Charge{Cost: cost, QueryID: id, Service: "count", Question: hex.EncodeToString(sum[:])}
}

func TestBudgetRenewal(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s := openTest(t, t.TempDir(), Options{InitialBudget: 1, RenewEvery: 24 * time.Hour, Now: clock})
	if r, _ := s.Spend(q(0.8, "a", "a")); !r.Success {
		t.Fatal("first spend denied")
	}
	if r, _ := s.Spend(q(0.8, "b", "b")); r.Success {
		t.Fatal("overspend allowed")
	}
	advance(23 * time.Hour)
	if r, _ := s.Spend(q(0.8, "b", "b")); r.Success {
		t.Fatal("renewed before the period ended")
	}
	advance(2 * time.Hour)
	r, err := s.Spend(q(0.8, "b", "b"))
	if err != nil || !r.Success || r.Remaining > 0.2+1e-12 {
		t.Fatalf("after renewal: %+v %v", r, err)
	}
	// A query id charged in the previous period is still not charged again.
	if r, _ := s.Spend(q(0.8, "a", "a")); !r.Replayed || r.Remaining > 0.2+1e-12 {
		t.Fatalf("an earlier period's query was charged again: %+v", r)
	}
	l, _ := s.Ledger()
	var kinds []string
	for _, e := range l.Entries {
		kinds = append(kinds, e.Kind)
	}
	if got := strings.Join(kinds, ","); got != "spend,denied,denied,renew,spend" {
		t.Errorf("ledger kinds %s", got)
	}
}

// Queries on the indexed fields decrypt only what the index returns.
func TestIndexedQueriesDoNotScan(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	var docs []map[string]any
	for i := 0; i < 2000; i++ {
		key := []string{"background/location", "background/motion_activity", "statemachine/transition", "config/x"}[i%4]
		docs = append(docs, map[string]any{"metadata": map[string]any{"key": key, "write_ts": float64(i) + 0.5}, "data": map[string]any{"ts": float64(i)}})
	}
	docs = append(docs, map[string]any{"metadata": map[string]any{"key": "background/location"}, "data": map[string]any{"ts": "text"}})
	if _, err := s.Insert("db", "ts", docs); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		filter   map[string]any
		matches  int
		maxCands int
		scan     bool
	}{
		{"key", map[string]any{"metadata.key": "background/location"}, 501, 501, false},
		{"key and ts range", map[string]any{"metadata.key": "background/location", "data.ts": map[string]any{"$gte": 100.0, "$lt": 200.0}}, 25, 25, false},
		{"keys $in and ts range", map[string]any{"metadata.key": map[string]any{"$in": []any{"config/x", "statemachine/transition"}}, "data.ts": map[string]any{"$gt": 100.0, "$lte": 200.0}}, 50, 50, false},
		{"ts range", map[string]any{"data.ts": map[string]any{"$gte": 1990.0}}, 10, 10, false},
		{"write_ts range in $and", map[string]any{"$and": []any{map[string]any{"metadata.write_ts": map[string]any{"$lt": 10.0}}}}, 10, 10, false},
		{"key and write_ts equality (upload upsert)", map[string]any{"metadata.key": "config/x", "metadata.write_ts": 3.5}, 1, 1, false},
		{"_id", map[string]any{"_id": docs[5]["_id"]}, 1, 1, false},
		{"$or is not indexed", map[string]any{"$or": []any{map[string]any{"data.ts": 1.0}, map[string]any{"data.ts": 2.0}}}, 2, 2001, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := query.Compile(tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			got, st, err := s.Find(context.Background(), "db", "ts", f, FindOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.matches || st.Candidates > tc.maxCands || st.Scanned != tc.scan {
				t.Errorf("%d matches from %d decrypted (scan %v); want %d from ≤ %d (scan %v)", len(got), st.Candidates, st.Scanned, tc.matches, tc.maxCands, tc.scan)
			}
		})
	}
	if _, _, err := s.Find(context.Background(), "db", "other", query.MatchAll(), FindOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestTupleRoundTripAndPadding(t *testing.T) {
	in := tuple{seq: 7, db: "d", coll: "c", id: "s\"x\"", key: "k/é", ts: 1.5, wts: -2, hasTs: true, hasWts: true}
	var out tuple
	if err := out.unmarshal(in.marshal()); err != nil || out != in {
		t.Fatalf("%+v %v", out, err)
	}
	for _, n := range []int{0, 1, 255, 256, 1000} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i%250) + 1
		}
		p := pad(b, 256)
		if len(p)%256 != 0 || len(p) <= n {
			t.Fatalf("pad(%d) gave %d bytes", n, len(p))
		}
		u, err := unpad(p)
		if err != nil || string(u) != string(b) {
			t.Fatalf("unpad(pad(%d)) failed: %v", n, err)
		}
	}
}

func TestReplaceUpsertKeepsFilterID(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	f, _ := query.Compile(map[string]any{"_id": "pipeline-state-1"})
	u, _ := query.CompileUpdate(map[string]any{"stage": 3.0}, true, false)
	res, err := s.Update(context.Background(), "db", "state", f, u, false, true)
	if err != nil || res.UpsertedID != "pipeline-state-1" {
		t.Fatalf("replace upsert: %+v %v", res, err)
	}
	docs, _, err := s.Find(context.Background(), "db", "state", f, FindOptions{})
	if err != nil || len(docs) != 1 || !query.Equal(docs[0]["stage"], 3) {
		t.Fatalf("after replace upsert: %v %v", docs, err)
	}
}

// TestScanStopsWhenItsCallerGoes: a scan whose context is done stops with
// ErrCanceled (and lets go of the read lock); a live one answers.
func TestScanStopsWhenItsCallerGoes(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	docs := make([]map[string]any, 500)
	for i := range docs {
		docs[i] = map[string]any{"metadata": map[string]any{"key": "k"}, "data": map[string]any{"n": float64(i)}}
	}
	if _, err := s.Insert("db", "c", docs); err != nil {
		t.Fatal(err)
	}
	f, err := query.Compile(map[string]any{"data.n": map[string]any{"$gte": 250.0}}) // no index decides it: a scan
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got, _, err := s.Find(ctx, "db", "c", f, FindOptions{})
	if err != nil || len(got) != 250 {
		t.Fatalf("live find: %d documents, %v", len(got), err)
	}
	cancel()
	if _, _, err := s.Find(ctx, "db", "c", f, FindOptions{}); !errors.Is(err, ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Errorf("find after its caller went: %v, want ErrCanceled", err)
	}
	if _, err := s.Count(ctx, "db", "c", f, 0, 0); !errors.Is(err, ErrCanceled) {
		t.Errorf("count after its caller went: %v, want ErrCanceled", err)
	}
	if _, err := s.Delete(ctx, "db", "c", f, true); !errors.Is(err, ErrCanceled) {
		t.Errorf("delete after its caller went: %v, want ErrCanceled", err)
	}
	// Nothing was deleted, and a write goes through at once.
	if n, err := s.Count(context.Background(), "db", "c", f, 0, 0); err != nil || n != 250 {
		t.Errorf("count: %d, %v, want 250", n, err)
	}
	if _, err := s.Insert("db", "c", []map[string]any{{"data": map[string]any{"n": 1.0}}}); err != nil {
		t.Error(err)
	}
}

// TestDeleteByIDReadsTuplesOnly: a delete that pins _id to strings (the
// pipeline's clean-up of the usercache entries it moved) is decided from
// the index tuples: it succeeds with the doomed documents made unreadable,
// deletes exactly the named ones, and leaves a non-string _id to the
// documents.
func TestDeleteByIDReadsTuplesOnly(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	ctx := context.Background()
	var docs []map[string]any
	for i := 0; i < 50; i++ {
		docs = append(docs, map[string]any{"_id": fmt.Sprintf("id-%02d", i), "metadata": map[string]any{"key": "k", "write_ts": float64(i)}})
	}
	docs = append(docs, map[string]any{"_id": 7.0, "metadata": map[string]any{"key": "k"}})
	if _, err := s.Insert("db", "uc", docs); err != nil {
		t.Fatal(err)
	}
	// Garble the documents of the first ten: reading any of them fails.
	c := s.coll("db", "uc", false)
	err := s.db.Update(func(tx *bolt.Tx) error {
		for p := int32(0); p < 10; p++ {
			id := c.at(p).id
			if err := tx.Bucket(bucketDocs).Put(id[:], []byte("not a sealed document, not at all")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	del := func(filter map[string]any) (int64, error) {
		f, err := query.Compile(filter)
		if err != nil {
			t.Fatal(err)
		}
		return s.Delete(ctx, "db", "uc", f, true)
	}
	ids := []any{"missing"}
	for i := 0; i < 10; i++ {
		ids = append(ids, fmt.Sprintf("id-%02d", i))
	}
	if n, err := del(map[string]any{"_id": map[string]any{"$in": ids}}); err != nil || n != 10 {
		t.Fatalf("delete by _id: %d, %v; want 10", n, err)
	}
	// With another indexed condition: only the records that fit both.
	if n, err := del(map[string]any{"_id": map[string]any{"$in": []any{"id-10", "id-11"}}, "metadata.write_ts": map[string]any{"$gt": 10.5}}); err != nil || n != 1 {
		t.Fatalf("delete by _id and write_ts: %d, %v; want 1", n, err)
	}
	// A number _id is not in a plan of strings: the documents decide.
	if n, err := del(map[string]any{"_id": 7.0}); err != nil || n != 1 {
		t.Fatalf("delete by a number _id: %d, %v; want 1", n, err)
	}
	left, _, err := s.Find(ctx, "db", "uc", query.MatchAll(), FindOptions{})
	if err != nil || len(left) != 39 {
		t.Fatalf("%d left (%v); want 39", len(left), err)
	}
	for _, d := range left {
		if id := d["_id"]; id == "id-11" || id == "id-05" {
			t.Errorf("%v is still there", id)
		}
	}
}
