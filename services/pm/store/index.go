package store

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"sync"
	"unique"

	"github.com/google/btree"

	"github.com/e-mission/upc/services/pm/query"
)

// entry is a record in the in-memory indexes: its id and its index tuple.
type entry struct {
	rec recID
	tuple
}

func lessKeyTs(a, b *entry) bool {
	if a.key != b.key {
		return a.key < b.key
	}
	if a.hasTs != b.hasTs {
		return !a.hasTs
	}
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	return a.seq < b.seq
}

func lessKeyWts(a, b *entry) bool {
	if a.key != b.key {
		return a.key < b.key
	}
	if a.hasWts != b.hasWts {
		return !a.hasWts
	}
	if a.wts != b.wts {
		return a.wts < b.wts
	}
	return a.seq < b.seq
}

func lessTs(a, b *entry) bool {
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	return a.seq < b.seq
}

func lessWts(a, b *entry) bool {
	if a.wts != b.wts {
		return a.wts < b.wts
	}
	return a.seq < b.seq
}

type collection struct {
	byID     map[string]*entry
	byKeyTs  *btree.BTreeG[*entry]
	byKeyWts *btree.BTreeG[*entry]
	byTs     *btree.BTreeG[*entry] // entries with a numeric data.ts
	byWts    *btree.BTreeG[*entry] // entries with a numeric metadata.write_ts
}

func (s *Store) coll(db, name string, create bool) *collection {
	c := s.colls[collName{db, name}]
	if c == nil && create {
		c = &collection{
			byID:     map[string]*entry{},
			byKeyTs:  btree.NewG(32, lessKeyTs),
			byKeyWts: btree.NewG(32, lessKeyWts),
			byTs:     btree.NewG(32, lessTs),
			byWts:    btree.NewG(32, lessWts),
		}
		s.colls[collName{db, name}] = c
	}
	return c
}

func (c *collection) add(e *entry) {
	c.byID[e.id] = e
	c.byKeyTs.ReplaceOrInsert(e)
	c.byKeyWts.ReplaceOrInsert(e)
	if e.hasTs {
		c.byTs.ReplaceOrInsert(e)
	}
	if e.hasWts {
		c.byWts.ReplaceOrInsert(e)
	}
}

func (c *collection) remove(e *entry) {
	delete(c.byID, e.id)
	c.byKeyTs.Delete(e)
	c.byKeyWts.Delete(e)
	if e.hasTs {
		c.byTs.Delete(e)
	}
	if e.hasWts {
		c.byWts.Delete(e)
	}
}

func (c *collection) len() int { return len(c.byID) }

// bulkAdd builds the indexes of a collection from many entries at once: each
// structure is filled from input sorted in its own order, and the structures
// are built in parallel.
func (c *collection) bulkAdd(es []*entry) {
	type build struct {
		t    *btree.BTreeG[*entry]
		less func(a, b *entry) bool
		keep func(*entry) bool
	}
	all := func(*entry) bool { return true }
	builds := []build{
		{c.byKeyTs, lessKeyTs, all},
		{c.byKeyWts, lessKeyWts, all},
		{c.byTs, lessTs, func(e *entry) bool { return e.hasTs }},
		{c.byWts, lessWts, func(e *entry) bool { return e.hasWts }},
	}
	var wg sync.WaitGroup
	for _, b := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sorted := make([]*entry, 0, len(es))
			for _, e := range es {
				if b.keep(e) {
					sorted = append(sorted, e)
				}
			}
			slices.SortFunc(sorted, func(x, y *entry) int {
				switch {
				case b.less(x, y):
					return -1
				case b.less(y, x):
					return 1
				}
				return 0
			})
			for _, e := range sorted {
				b.t.ReplaceOrInsert(e)
			}
		}()
	}
	if len(c.byID) == 0 {
		c.byID = make(map[string]*entry, len(es))
	}
	for _, e := range es {
		c.byID[e.id] = e
	}
	wg.Wait()
}

// tupleFor extracts a document's index fields.
func tupleFor(db, coll string, doc map[string]any) tuple {
	t := tuple{db: db, coll: coll, id: query.Key(doc["_id"])}
	if md, ok := doc["metadata"].(map[string]any); ok {
		if k, ok := md["key"].(string); ok {
			t.key = k
		}
		if w, ok := query.Number(md["write_ts"]); ok && !math.IsNaN(w) {
			t.wts, t.hasWts = w, true
		}
	}
	if d, ok := doc["data"].(map[string]any); ok {
		if ts, ok := query.Number(d["ts"]); ok && !math.IsNaN(ts) {
			t.ts, t.hasTs = ts, true
		}
	}
	_, t.invalid = doc["invalid"]
	t.invalidKnown = true
	t.intern()
	return t
}

// tuple is the index tuple of a scanned plain document.
func (d docInfo) tuple(db, coll string) tuple {
	t := tuple{db: db, coll: coll, id: query.Key(d.id), key: d.key, ts: d.ts, hasTs: d.hasTs,
		wts: d.wts, hasWts: d.hasWts, invalid: d.invalid, invalidKnown: true}
	t.intern()
	return t
}

// stringID returns the entry's _id when it is a string.
func (e *entry) stringID() (string, bool) {
	if len(e.id) < 2 || e.id[0] != 's' {
		return "", false
	}
	id, err := strconv.Unquote(e.id[1:])
	return id, err == nil
}

// planned returns the matches of f in natural order when the index tuples
// alone decide them (query.Filter.IndexPlan); ok is false otherwise.
func (c *collection) planned(f *query.Filter) (out []*entry, ok bool) {
	p, ok := f.IndexPlan()
	if !ok {
		return nil, false
	}
	cands, _ := c.candidates(f)
	out = cands[:0]
	for _, e := range cands {
		if p.NoInvalid && !e.invalidKnown {
			return nil, false // written before the tuple recorded it
		}
		if e.fits(&p) {
			out = append(out, e)
		}
	}
	return out, true
}

// fits reports whether the entry's tuple satisfies p.
func (e *entry) fits(p *query.Plan) bool {
	if p.Keys != nil && !query.HasString(p.Keys, e.key) {
		return false
	}
	if p.IDs != nil {
		id, isStr := e.stringID() // a string never equals another type
		if !isStr || !query.HasString(p.IDs, id) {
			return false
		}
	}
	if p.TS != nil && !(e.hasTs && p.TS.Contains(e.ts)) {
		return false
	}
	if p.WTS != nil && !(e.hasWts && p.WTS.Contains(e.wts)) {
		return false
	}
	return !(p.NoInvalid && e.invalid)
}

// intern shares the few distinct database, collection and stream names among
// all entries: a year holds half a million entries but a dozen names.
func (t *tuple) intern() {
	t.db = unique.Make(t.db).Value()
	t.coll = unique.Make(t.coll).Value()
	t.key = unique.Make(t.key).Value()
}

// candidates picks, from the indexes, the entries a filter can match: a
// superset of the matches, in natural order. scanned says whether the whole
// collection had to be read.
func (c *collection) candidates(f *query.Filter) (out []*entry, scanned bool) {
	if ids, ok := f.EqualStrings("_id"); ok {
		for _, id := range ids {
			if e := c.byID[query.Key(id)]; e != nil {
				out = append(out, e)
			}
		}
		return sortSeq(out), false
	}
	keys, okK := f.EqualStrings("metadata.key")
	tsR, okT := f.NumberRange("data.ts")
	wR, okW := f.NumberRange("metadata.write_ts")
	collect := func(t *btree.BTreeG[*entry], lo, hi *entry, keep func(*entry) bool) {
		t.AscendRange(lo, hi, func(e *entry) bool {
			if keep(e) {
				out = append(out, e)
			}
			return true
		})
	}
	inf := math.Inf(1)
	switch {
	case okK && okT:
		for _, k := range keys {
			collect(c.byKeyTs, &entry{tuple: tuple{key: k, hasTs: true, ts: tsR.Lo}},
				&entry{tuple: tuple{key: k, hasTs: true, ts: tsR.Hi, seq: math.MaxUint64}},
				func(e *entry) bool { return e.hasTs && tsR.Contains(e.ts) })
			// AscendRange excludes hi; an entry exactly at (Hi, MaxUint64) cannot exist.
		}
	case okK && okW:
		for _, k := range keys {
			collect(c.byKeyWts, &entry{tuple: tuple{key: k, hasWts: true, wts: wR.Lo}},
				&entry{tuple: tuple{key: k, hasWts: true, wts: wR.Hi, seq: math.MaxUint64}},
				func(e *entry) bool { return e.hasWts && wR.Contains(e.wts) })
		}
	case okK:
		for _, k := range keys {
			collect(c.byKeyTs, &entry{tuple: tuple{key: k}},
				&entry{tuple: tuple{key: k, hasTs: true, ts: inf, seq: math.MaxUint64}},
				func(e *entry) bool { return e.key == k })
		}
	case okT:
		collect(c.byTs, &entry{tuple: tuple{ts: tsR.Lo}}, &entry{tuple: tuple{ts: tsR.Hi, seq: math.MaxUint64}},
			func(e *entry) bool { return tsR.Contains(e.ts) })
	case okW:
		collect(c.byWts, &entry{tuple: tuple{wts: wR.Lo}}, &entry{tuple: tuple{wts: wR.Hi, seq: math.MaxUint64}},
			func(e *entry) bool { return wR.Contains(e.wts) })
	default:
		// Natural (insertion) order: every entry, sorted by its insertion number.
		out = make([]*entry, 0, len(c.byID))
		for _, e := range c.byID {
			out = append(out, e)
		}
		return sortSeq(out), true
	}
	return sortSeq(out), false
}

func sortSeq(es []*entry) []*entry {
	sort.Slice(es, func(i, j int) bool { return es[i].seq < es[j].seq })
	return es
}
