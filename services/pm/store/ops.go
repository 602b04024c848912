package store

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/query"
)

var oidCounter atomic.Uint32

func init() { oidCounter.Store(binary.BigEndian.Uint32(randomBytes(4))) }

var oidProcess = randomBytes(5)

// NewObjectID returns a new ObjectId as 24 hex digits: 4 bytes of seconds, 5
// random bytes per process, a 3-byte counter, as MongoDB makes them.
func NewObjectID(now time.Time) string {
	var b [12]byte
	binary.BigEndian.PutUint32(b[:4], uint32(now.Unix()))
	copy(b[4:9], oidProcess)
	c := oidCounter.Add(1)
	b[9], b[10], b[11] = byte(c>>16), byte(c>>8), byte(c)
	return hex.EncodeToString(b[:])
}

// FindOptions shape a find.
type FindOptions struct {
	Sort       query.Sorter
	Skip       int64
	Limit      int64 // 0: no limit
	Projection *query.Projection
}

// Stats describe how a read was served (for tests and logs).
type Stats struct {
	Candidates int  // documents decrypted
	Scanned    bool // the whole collection was read
}

// Insert stores docs (already normalized) in db.coll, giving each without an
// _id a new ObjectId. All or nothing: a duplicate _id (in the batch or the
// collection) stores none.
func (s *Store) Insert(db, coll string, docs []map[string]any) ([]any, error) {
	ds := make([]Doc, len(docs))
	for i, d := range docs {
		ds[i] = MapDoc(d)
	}
	return s.InsertDocs(db, coll, ds)
}

// InsertDocs is Insert for documents decoded or kept as bytes (ParseDoc).
func (s *Store) InsertDocs(db, coll string, docs []Doc) ([]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead == nil {
		return nil, ErrSealed
	}
	now := s.opts.Now()
	c := s.coll(db, coll, false)
	ids := make([]any, len(docs))
	seen := map[string]bool{}
	for i := range docs {
		id, err := docs[i].ensureID(now)
		if err != nil {
			return nil, fmt.Errorf("%w: document %d: %w", ErrInvalid, i, err)
		}
		k := query.Key(id)
		if seen[k] {
			return nil, fmt.Errorf("%w: document %d: _id %v already exists in %s.%s", ErrDuplicateID, i, id, db, coll)
		}
		seen[k] = true
		ids[i] = id
	}
	type added struct {
		id recID
		t  tuple
	}
	adds := make([]added, len(docs))
	seq := s.nextSeq
	s.beginWrite()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i := range docs {
			if dup, err := s.hasID(tx, c, query.Key(ids[i])); err != nil || dup {
				if err == nil {
					err = fmt.Errorf("%w: document %d: _id %v already exists in %s.%s", ErrDuplicateID, i, ids[i], db, coll)
				}
				return err
			}
		}
		for i, d := range docs {
			raw, t, err := d.record(db, coll)
			if err != nil {
				return err
			}
			t.seq = seq + uint64(i)
			adds[i] = added{s.newRecID(), t}
			if err := s.putRecord(tx, adds[i].id, t, raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("insert: %w", err)
	}
	s.nextSeq = seq + uint64(len(docs))
	c = s.coll(db, coll, true)
	for i := range adds {
		c.add(adds[i].id, &adds[i].t)
	}
	return ids, nil
}

// hasID reports whether c holds a document whose _id has the query.Key key:
// the index keeps hashes, so a hit is confirmed by reading the document.
func (s *Store) hasID(tx *bolt.Tx, c *collection, key string) (bool, error) {
	if c == nil {
		return false, nil
	}
	for _, p := range c.idSlots(key) {
		doc, err := s.readDoc(tx, c.at(p).id)
		if err != nil {
			return false, err
		}
		if query.Key(doc["_id"]) == key {
			return true, nil
		}
	}
	return false, nil
}

// cancelEvery is how many documents a scan reads between checks of its
// context (a check is cheap; a document read and decrypted is not).
const cancelEvery = 64

type match struct {
	p   int32 // the record's position in its collection
	doc map[string]any
}

// matchLocked returns the matching documents in natural order, stopping after
// max matches when max > 0 (callers that sort pass 0). Without needDocs, a
// filter the index tuples decide reads no document (match.doc is nil).
func (s *Store) matchLocked(ctx context.Context, tx *bolt.Tx, db, coll string, f *query.Filter, max int64, needDocs bool) ([]match, Stats, error) {
	var st Stats
	c := s.coll(db, coll, false)
	if c == nil {
		return nil, st, nil
	}
	if !needDocs {
		es, ok := c.planned(f)
		if !ok {
			var err error
			if es, ok, err = s.plannedByID(tx, c, f); err != nil {
				return nil, st, err
			}
		}
		if ok {
			if max > 0 && int64(len(es)) > max {
				es = es[:max]
			}
			out := make([]match, len(es))
			for i, p := range es {
				out[i] = match{p: p}
			}
			return out, st, nil
		}
	}
	cands, scanned := c.candidates(f)
	st.Scanned = scanned
	var out []match
	for i, p := range cands {
		// A caller that has gone (or run out of time) stops the scan, and
		// with it the read lock that writers wait on.
		if i%cancelEvery == 0 && ctx.Err() != nil {
			return nil, st, fmt.Errorf("%w: %w", ErrCanceled, context.Cause(ctx))
		}
		doc, err := s.readDoc(tx, c.at(p).id)
		if err != nil {
			return nil, st, err
		}
		st.Candidates++
		if f.Match(doc) {
			out = append(out, match{p, doc})
			if max > 0 && int64(len(out)) >= max {
				break
			}
		}
	}
	return out, st, nil
}

// Find returns the matching documents, sorted, skipped, limited, projected.
func (s *Store) Find(ctx context.Context, db, coll string, f *query.Filter, o FindOptions) ([]map[string]any, Stats, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.aead == nil {
		return nil, Stats{}, ErrSealed
	}
	var docs []map[string]any
	var st Stats
	err := s.db.View(func(tx *bolt.Tx) error {
		max := int64(0)
		if len(o.Sort) == 0 && o.Limit > 0 {
			max = o.Skip + o.Limit
		}
		var ms []match
		var walked bool
		var err error
		if c := s.coll(db, coll, false); c != nil {
			ms, walked, err = s.walkMatches(ctx, tx, c, f, o, false)
		}
		if !walked && err == nil {
			ms, st, err = s.matchLocked(ctx, tx, db, coll, f, max, true)
		}
		if err != nil {
			return err
		}
		docs = make([]map[string]any, len(ms))
		for i, m := range ms {
			docs[i] = m.doc
		}
		return nil
	})
	if err != nil {
		return nil, st, fmt.Errorf("find: %w", err)
	}
	o.Sort.Sort(docs)
	docs = window(docs, o.Skip, o.Limit)
	if o.Projection != nil {
		for i, d := range docs {
			docs[i] = o.Projection.Apply(d)
		}
	}
	return docs, st, nil
}

// FindRaw is Find answered with the documents' stored JSON, without decoding
// them: ok is false (and nothing is read) unless the index tuples decide the
// filter and the sort (on data.ts, metadata.write_ts or a string _id, present
// in every match) and there is no projection.
func (s *Store) FindRaw(db, coll string, f *query.Filter, o FindOptions) (docs [][]byte, ok bool, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.aead == nil {
		return nil, false, ErrSealed
	}
	if !o.Projection.Identity() {
		return nil, false, nil
	}
	c := s.coll(db, coll, false)
	if c == nil {
		return [][]byte{}, true, nil
	}
	var es []int32
	if ms, walked, _ := s.walkMatches(context.Background(), nil, c, f, o, true); walked {
		es = make([]int32, len(ms))
		for i, m := range ms {
			es[i] = m.p
		}
	} else if es, ok = c.planned(f); !ok {
		return nil, false, nil
	}
	// A sort on _id needs the _ids, which the index keeps only as hashes:
	// they are read from the stored documents (which are read anyway).
	var ids map[int32]string
	if slices.ContainsFunc(o.Sort, func(k query.SortKey) bool { return k.Path == "_id" }) && len(es) > 1 {
		ids = make(map[int32]string, len(es))
		err = s.db.View(func(tx *bolt.Tx) error {
			for _, p := range es {
				raw, err := s.readRaw(tx, c.at(p).id)
				if err != nil {
					return err
				}
				info, plain := scanDoc(raw)
				if !plain || !info.hasID {
					return nil
				}
				ids[p] = info.id
			}
			return nil
		})
		if err != nil {
			return nil, false, fmt.Errorf("find: %w", err)
		}
		if len(ids) < len(es) {
			return nil, false, nil // an _id that is not a string
		}
	}
	if !c.sortByTuple(es, o.Sort, ids) {
		return nil, false, nil
	}
	es = window(es, o.Skip, o.Limit)
	docs = make([][]byte, len(es))
	err = s.db.View(func(tx *bolt.Tx) error {
		for i, p := range es {
			raw, err := s.readRaw(tx, c.at(p).id)
			if err != nil {
				return err
			}
			docs[i] = raw
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("find: %w", err)
	}
	return docs, true, nil
}

// sortByTuple sorts ps (stably, as Sorter.Sort would) when every sort key is
// data.ts or metadata.write_ts, present as a number in every record, or _id
// given as a string for each in ids; it reports false otherwise, leaving ps
// as it was.
func (c *collection) sortByTuple(ps []int32, keys query.Sorter, ids map[int32]string) bool {
	if len(keys) == 0 || len(ps) < 2 {
		return true
	}
	for _, k := range keys {
		var flag uint8
		switch k.Path {
		case "data.ts":
			flag = flagTs
		case "metadata.write_ts":
			flag = flagWts
		case "_id":
			if len(ids) < len(ps) {
				return false
			}
			continue
		default:
			return false
		}
		for _, p := range ps {
			if c.at(p).flags&flag == 0 {
				return false
			}
		}
	}
	slices.SortStableFunc(ps, func(a, b int32) int {
		ra, rb := c.at(a), c.at(b)
		for _, k := range keys {
			var x int
			switch k.Path {
			case "data.ts":
				x = cmp.Compare(ra.ts, rb.ts)
			case "metadata.write_ts":
				x = cmp.Compare(ra.wts, rb.wts)
			default:
				x = strings.Compare(ids[a], ids[b])
			}
			if k.Desc {
				x = -x
			}
			if x != 0 {
				return x
			}
		}
		return 0
	})
	return true
}

func window[T any](xs []T, skip, limit int64) []T {
	if skip > 0 {
		if skip >= int64(len(xs)) {
			return xs[:0]
		}
		xs = xs[skip:]
	}
	if limit > 0 && limit < int64(len(xs)) {
		xs = xs[:limit]
	}
	return xs
}

// UpdateResult is what an update did.
type UpdateResult struct {
	Matched    int64
	Modified   int64
	UpsertedID any // nil unless an upsert inserted
}

// Update applies u to the first match (every match with many). With upsert
// and no match, it inserts the filter's equalities with u applied. The whole
// change is one transaction.
func (s *Store) Update(ctx context.Context, db, coll string, f *query.Filter, u *query.Update, many, upsert bool) (UpdateResult, error) {
	return s.UpdateChecked(ctx, db, coll, f, u, many, upsert, nil)
}

// UpdateChecked is Update with check (when not nil) called on every document
// the update would write, changed or upserted, before anything is written:
// an error from check aborts the whole update and is returned as it is.
func (s *Store) UpdateChecked(ctx context.Context, db, coll string, f *query.Filter, u *query.Update, many, upsert bool, check func(doc map[string]any) error) (UpdateResult, error) {
	res, err := s.UpdateBatch(ctx, db, coll, []UpdateOp{{Filter: f, Update: u, Many: many, Upsert: upsert, Check: check}})
	if err != nil {
		return UpdateResult{}, err
	}
	return res[0], nil
}

// UpdateOp is one update of a batch (see UpdateChecked).
type UpdateOp struct {
	Filter       *query.Filter
	Update       *query.Update
	Many, Upsert bool
	Check        func(doc map[string]any) error
}

// UpdateBatch applies ops in order, each seeing the ones before it, as one
// transaction with one fsync: all or nothing. A batch that fails midway
// leaves the file as it was, and the indexes are rebuilt from it.
func (s *Store) UpdateBatch(ctx context.Context, db, coll string, ops []UpdateOp) ([]UpdateResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead == nil {
		return nil, ErrSealed
	}
	out := make([]UpdateResult, len(ops))
	touched := false
	s.beginWrite()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i, op := range ops {
			res, err := s.updateLocked(ctx, tx, db, coll, op, &touched)
			if err != nil {
				if len(ops) > 1 {
					return fmt.Errorf("update %d: %w", i, err)
				}
				return err
			}
			out[i] = res
		}
		return nil
	})
	if err != nil {
		if touched {
			// The indexes follow each write of the transaction, which did not
			// commit: they are rebuilt from the file.
			if lerr := s.loadIndexesLocked(); lerr != nil {
				s.aead, s.colls = nil, nil
				return nil, fmt.Errorf("%w (and rebuilding the indexes failed, the PM is sealed again: %v)", err, lerr)
			}
		}
		return nil, err
	}
	return out, nil
}

// updateLocked applies one update inside tx and updates the indexes as it
// writes (setting *touched), so the next update of a batch sees it.
func (s *Store) updateLocked(ctx context.Context, tx *bolt.Tx, db, coll string, op UpdateOp, touched *bool) (UpdateResult, error) {
	var res UpdateResult
	f, u, check := op.Filter, op.Update, op.Check
	max := int64(1)
	if op.Many {
		max = 0
	}
	ms, _, err := s.matchLocked(ctx, tx, db, coll, f, max, true)
	if err != nil {
		return res, err
	}
	res.Matched = int64(len(ms))
	if len(ms) == 0 && op.Upsert {
		doc := map[string]any{}
		eq := f.Equalities()
		if !u.IsReplacement() {
			for p, v := range eq {
				if err := query.SetPath(doc, p, v); err != nil {
					return res, fmt.Errorf("%w: upsert: %v", ErrInvalid, err)
				}
			}
		} else if id, ok := eq["_id"]; ok { // a replacing upsert keeps the filter's _id
			doc["_id"] = id
		}
		nd, err := u.Apply(doc, true)
		if err != nil {
			return res, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if id, ok := doc["_id"]; ok {
			nd["_id"] = id
		}
		if _, ok := nd["_id"]; !ok {
			nd["_id"] = NewObjectID(s.opts.Now())
		}
		if check != nil {
			if err := check(nd); err != nil {
				return res, err
			}
		}
		if dup, err := s.hasID(tx, s.coll(db, coll, false), query.Key(nd["_id"])); err != nil || dup {
			if err == nil {
				err = fmt.Errorf("%w: upsert: _id %v already exists", ErrDuplicateID, nd["_id"])
			}
			return res, err
		}
		raw, err := encodeDoc(nd)
		if err != nil {
			return res, fmt.Errorf("encode document: %w", err)
		}
		id, t := s.newRecID(), tupleFor(db, coll, nd)
		t.seq = s.nextSeq
		if err := s.putRecord(tx, id, t, raw); err != nil {
			return res, err
		}
		*touched = true
		s.nextSeq++
		s.coll(db, coll, true).add(id, &t)
		res.UpsertedID = nd["_id"]
		return res, nil
	}
	c := s.coll(db, coll, false)
	for _, m := range ms {
		nd, err := u.Apply(m.doc, false)
		if err != nil {
			return res, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		before, _ := encodeDoc(m.doc)
		after, err := encodeDoc(nd)
		if err != nil {
			return res, err
		}
		if string(before) == string(after) {
			continue
		}
		if check != nil {
			if err := check(nd); err != nil {
				return res, err
			}
		}
		old := c.at(m.p)
		id, t := old.id, tupleFor(db, coll, nd)
		t.seq = old.seq
		if err := s.putRecord(tx, id, t, after); err != nil {
			return res, err
		}
		*touched = true
		c.remove(m.p)
		c.add(id, &t)
		res.Modified++
	}
	return res, nil
}

// Delete removes the first match (every match with many).
func (s *Store) Delete(ctx context.Context, db, coll string, f *query.Filter, many bool) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead == nil {
		return 0, ErrSealed
	}
	var gone []int32
	err := s.db.Update(func(tx *bolt.Tx) error {
		max := int64(1)
		if many {
			max = 0
		}
		ms, _, err := s.matchLocked(ctx, tx, db, coll, f, max, false)
		if err != nil {
			return err
		}
		c := s.coll(db, coll, false)
		for _, m := range ms {
			if err := s.deleteRecord(tx, c.at(m.p).id); err != nil {
				return err
			}
			gone = append(gone, m.p)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete: %w", err)
	}
	if c := s.coll(db, coll, false); c != nil {
		for _, p := range gone {
			c.remove(p)
		}
	}
	return int64(len(gone)), nil
}

// Count counts matches, windowed by skip and limit when they are > 0.
func (s *Store) Count(ctx context.Context, db, coll string, f *query.Filter, skip, limit int64) (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.aead == nil {
		return 0, ErrSealed
	}
	if f.Empty() {
		n := int64(0)
		if c := s.coll(db, coll, false); c != nil {
			n = int64(c.len())
		}
		return int64(len(window(make([]struct{}, n), skip, limit))), nil
	}
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		max := int64(0)
		if limit > 0 { // stop decrypting once the window is full
			max = skip + limit
		}
		ms, _, err := s.matchLocked(ctx, tx, db, coll, f, max, false)
		n = int64(len(window(ms, skip, limit)))
		return err
	})
	return n, err
}

// Collections lists the collections that hold documents, with how many,
// ordered by database and name (the owner's export reads them all).
func (s *Store) Collections() ([]api.Collection, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.aead == nil {
		return nil, ErrSealed
	}
	out := []api.Collection{}
	for n, c := range s.colls {
		if k := c.len(); k > 0 {
			out = append(out, api.Collection{Database: n.db, Collection: n.coll, Count: int64(k)})
		}
	}
	slices.SortFunc(out, func(a, b api.Collection) int {
		return cmp.Or(cmp.Compare(a.Database, b.Database), cmp.Compare(a.Collection, b.Collection))
	})
	return out, nil
}
