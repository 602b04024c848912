package store

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

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
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead == nil {
		return nil, ErrSealed
	}
	now := s.opts.Now()
	c := s.coll(db, coll, false)
	ids := make([]any, len(docs))
	seen := map[string]bool{}
	for i, d := range docs {
		id, ok := d["_id"]
		if !ok {
			id = NewObjectID(now)
			d["_id"] = id
		}
		if _, isMap := id.(map[string]any); isMap {
			return nil, fmt.Errorf("%w: document %d: _id cannot be an object", ErrInvalid, i)
		}
		if _, isArr := id.([]any); isArr {
			return nil, fmt.Errorf("%w: document %d: _id cannot be an array", ErrInvalid, i)
		}
		k := query.Key(id)
		if seen[k] || (c != nil && c.byID[k] != nil) {
			return nil, fmt.Errorf("%w: document %d: _id %v already exists in %s.%s", ErrDuplicateID, i, id, db, coll)
		}
		seen[k] = true
		ids[i] = id
	}
	entries := make([]*entry, len(docs))
	seq := s.nextSeq
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i, d := range docs {
			e := &entry{rec: newRecID(), tuple: tupleFor(db, coll, d)}
			e.seq = seq + uint64(i)
			if err := s.putRecord(tx, e.rec, e.tuple, d); err != nil {
				return err
			}
			entries[i] = e
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("insert: %w", err)
	}
	s.nextSeq = seq + uint64(len(docs))
	c = s.coll(db, coll, true)
	for _, e := range entries {
		c.add(e)
	}
	return ids, nil
}

type match struct {
	e   *entry
	doc map[string]any
}

// matchLocked returns the matching documents in natural order, stopping after
// max matches when max > 0 (callers that sort pass 0).
func (s *Store) matchLocked(tx *bolt.Tx, db, coll string, f *query.Filter, max int64) ([]match, Stats, error) {
	var st Stats
	c := s.coll(db, coll, false)
	if c == nil {
		return nil, st, nil
	}
	cands, scanned := c.candidates(f)
	st.Scanned = scanned
	var out []match
	for _, e := range cands {
		doc, err := s.readDoc(tx, e.rec)
		if err != nil {
			return nil, st, err
		}
		st.Candidates++
		if f.Match(doc) {
			out = append(out, match{e, doc})
			if max > 0 && int64(len(out)) >= max {
				break
			}
		}
	}
	return out, st, nil
}

// Find returns the matching documents, sorted, skipped, limited, projected.
func (s *Store) Find(db, coll string, f *query.Filter, o FindOptions) ([]map[string]any, Stats, error) {
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
		ms, stats, err := s.matchLocked(tx, db, coll, f, max)
		st = stats
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
func (s *Store) Update(db, coll string, f *query.Filter, u *query.Update, many, upsert bool) (UpdateResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var res UpdateResult
	if s.aead == nil {
		return res, ErrSealed
	}
	type change struct {
		old *entry
		new *entry
		doc map[string]any
	}
	var changes []change
	err := s.db.Update(func(tx *bolt.Tx) error {
		max := int64(1)
		if many {
			max = 0
		}
		ms, _, err := s.matchLocked(tx, db, coll, f, max)
		if err != nil {
			return err
		}
		res.Matched = int64(len(ms))
		if len(ms) == 0 && upsert {
			doc := map[string]any{}
			eq := f.Equalities()
			if !u.IsReplacement() {
				for p, v := range eq {
					if err := query.SetPath(doc, p, v); err != nil {
						return fmt.Errorf("%w: upsert: %v", ErrInvalid, err)
					}
				}
			} else if id, ok := eq["_id"]; ok { // a replacing upsert keeps the filter's _id
				doc["_id"] = id
			}
			nd, err := u.Apply(doc, true)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrInvalid, err)
			}
			if id, ok := doc["_id"]; ok {
				nd["_id"] = id
			}
			if _, ok := nd["_id"]; !ok {
				nd["_id"] = NewObjectID(s.opts.Now())
			}
			if c := s.coll(db, coll, false); c != nil && c.byID[query.Key(nd["_id"])] != nil {
				return fmt.Errorf("%w: upsert: _id %v already exists", ErrDuplicateID, nd["_id"])
			}
			e := &entry{rec: newRecID(), tuple: tupleFor(db, coll, nd)}
			e.seq = s.nextSeq
			if err := s.putRecord(tx, e.rec, e.tuple, nd); err != nil {
				return err
			}
			changes = append(changes, change{new: e})
			res.UpsertedID = nd["_id"]
			return nil
		}
		for _, m := range ms {
			nd, err := u.Apply(m.doc, false)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrInvalid, err)
			}
			before, _ := encodeDoc(m.doc)
			after, err := encodeDoc(nd)
			if err != nil {
				return err
			}
			if string(before) == string(after) {
				continue
			}
			e := &entry{rec: m.e.rec, tuple: tupleFor(db, coll, nd)}
			e.seq = m.e.seq
			if err := s.putRecord(tx, e.rec, e.tuple, nd); err != nil {
				return err
			}
			changes = append(changes, change{old: m.e, new: e})
			res.Modified++
		}
		return nil
	})
	if err != nil {
		return UpdateResult{}, err
	}
	c := s.coll(db, coll, true)
	for _, ch := range changes {
		if ch.old != nil {
			c.remove(ch.old)
		} else {
			s.nextSeq++
		}
		c.add(ch.new)
	}
	return res, nil
}

// Delete removes the first match (every match with many).
func (s *Store) Delete(db, coll string, f *query.Filter, many bool) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead == nil {
		return 0, ErrSealed
	}
	var gone []*entry
	err := s.db.Update(func(tx *bolt.Tx) error {
		max := int64(1)
		if many {
			max = 0
		}
		ms, _, err := s.matchLocked(tx, db, coll, f, max)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if err := s.deleteRecord(tx, m.e.rec); err != nil {
				return err
			}
			gone = append(gone, m.e)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete: %w", err)
	}
	if c := s.coll(db, coll, false); c != nil {
		for _, e := range gone {
			c.remove(e)
		}
	}
	return int64(len(gone)), nil
}

// Count counts matches, windowed by skip and limit when they are > 0.
func (s *Store) Count(db, coll string, f *query.Filter, skip, limit int64) (int64, error) {
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
		ms, _, err := s.matchLocked(tx, db, coll, f, max)
		n = int64(len(window(ms, skip, limit)))
		return err
	})
	return n, err
}

// Collections lists the non-empty collections (for the owner's tools).
func (s *Store) Collections() (map[string][]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.aead == nil {
		return nil, ErrSealed
	}
	out := map[string][]string{}
	for n, c := range s.colls {
		if c.len() > 0 {
			out[n.db] = append(out[n.db], n.coll)
		}
	}
	return out, nil
}
