package store

import (
	"cmp"
	"hash/maphash"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"unique"

	bolt "go.etcd.io/bbolt"

	"github.com/e-mission/upc/services/pm/query"
)

// A collection's in-memory index is built for a year of data in a PM given
// 256 MiB: one fixed 56-byte record per document (no strings, no pointers the
// garbage collector must follow), a map from a 64-bit hash of _id to the
// record, and for each indexed order an array of record positions sorted in
// that order. Maps of strings and B-trees of pointers cost four times as much.

// rec is a document's entry in the in-memory index.
type rec struct {
	id     recID   // the record's key in the docs and index buckets
	seq    uint64  // insertion number: the natural order
	ts     float64 // data.ts, when flagTs
	wts    float64 // metadata.write_ts, when flagWts
	idHash uint64  // idHash(query.Key(_id))
	key    uint32  // metadata.key, as an index into collection.keys
	flags  uint8
}

const (
	flagTs           = 1 << iota // data.ts is a number (not NaN)
	flagWts                      // metadata.write_ts is a number (not NaN)
	flagInvalidKnown             // the tuple records whether invalid is present
	flagInvalid                  // the document has a top-level invalid field
	flagLive                     // not deleted nor replaced
	flagFree                     // a dead record's position, free for another
	flagTsNull                   // data.ts is missing or null
	flagWtsNull                  // metadata.write_ts is missing or null
)

func (r *rec) hasTs() bool  { return r.flags&flagTs != 0 }
func (r *rec) hasWts() bool { return r.flags&flagWts != 0 }
func (r *rec) live() bool   { return r.flags&flagLive != 0 }

var idSeed = maphash.MakeSeed()

// idHash hashes a query.Key of an _id. The index keeps the hash, not the
// string: lookups by _id yield candidates whose documents are then read and
// compared, so a collision costs a read, never a wrong answer.
func idHash(key string) uint64 { return maphash.String(idSeed, key) }

// The orders kept sorted. Ties break by insertion number, so each is a total
// order among live records.
const (
	ordKeyTs  = iota // (metadata.key, has data.ts, data.ts, seq), every record
	ordKeyWts        // (metadata.key, has write_ts, write_ts, seq), every record
	ordTs            // (data.ts, seq), records with a numeric data.ts
	ordWts           // (write_ts, seq), records with a numeric write_ts
	nOrders
)

// probe is a position in an order: a record's values or a search bound.
type probe struct {
	key uint32
	has bool
	v   float64
	seq uint64
}

func (r *rec) in(o int) probe {
	switch o {
	case ordKeyTs:
		return probe{r.key, r.hasTs(), r.ts, r.seq}
	case ordKeyWts:
		return probe{r.key, r.hasWts(), r.wts, r.seq}
	case ordTs:
		return probe{0, true, r.ts, r.seq}
	}
	return probe{0, true, r.wts, r.seq}
}

func (r *rec) inOrder(o int) bool {
	switch o {
	case ordTs:
		return r.hasTs()
	case ordWts:
		return r.hasWts()
	}
	return true
}

func comparePr(a, b probe) int {
	if c := cmp.Compare(a.key, b.key); c != 0 {
		return c
	}
	if a.has != b.has {
		if !a.has {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(a.v, b.v); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// chunk is how many records one block holds: records never move once
// written (no copy of the whole set as it grows), and a pointer to one
// stays valid.
const chunkBits = 12

// pendingMax is how many new records wait, unsorted, before they are merged
// into the sorted arrays (each merge is linear in the collection's size).
const pendingMax = 2048

type collection struct {
	chunks [][]rec
	n      int     // records in chunks, live or not
	live   int     // live records
	free   []int32 // positions of dead records no array refers to any more
	dead   int     // dead records still in the sorted arrays or pending

	keys   []string
	keyIdx map[string]uint32

	// Live records a walk must read or cannot decide: without a number
	// nor null in data.ts (odd[0]) or metadata.write_ts (odd[1]), and
	// with tuples that predate the invalid flag. While these are zero, a
	// walk reads nothing but what it returns.
	odd      [2]int
	oldTuple int

	byID   map[uint64]int32
	idMore map[uint64][]int32 // further records whose _id hashes the same (rare)

	sorted  [nOrders][]int32
	pending []int32 // records added since the last merge, in no order
}

func (s *Store) coll(db, name string, create bool) *collection {
	c := s.colls[collName{db, name}]
	if c == nil && create {
		c = &collection{keyIdx: map[string]uint32{}, byID: map[uint64]int32{}, idMore: map[uint64][]int32{}}
		s.colls[collName{db, name}] = c
	}
	return c
}

func (c *collection) at(p int32) *rec { return &c.chunks[p>>chunkBits][p&(1<<chunkBits-1)] }

func (c *collection) keyOf(k string) uint32 {
	if i, ok := c.keyIdx[k]; ok {
		return i
	}
	i := uint32(len(c.keys))
	c.keys = append(c.keys, unique.Make(k).Value())
	c.keyIdx[c.keys[i]] = i
	return i
}

// newRec makes a live record from a tuple.
func (c *collection) newRec(id recID, t *tuple) rec {
	return c.newRecHashed(id, t, idHash(t.id), c.keyOf(t.key))
}

// loadView indexes a record read at unseal from a tuple read in place.
func (c *collection) loadView(id recID, t *tupleView) {
	key, ok := c.keyIdx[string(t.key)] // no string is made for a known stream
	if !ok {
		key = c.keyOf(string(t.key))
	}
	p := c.place(c.newRecHashed(id, &t.tuple, maphash.Bytes(idSeed, t.id), key))
	c.addID(c.at(p).idHash, p)
	c.count(c.at(p), 1)
}

func (c *collection) newRecHashed(id recID, t *tuple, h uint64, key uint32) rec {
	r := rec{id: id, seq: t.seq, idHash: h, key: key, flags: flagLive}
	if t.hasTs {
		r.ts, r.flags = t.ts, r.flags|flagTs
	}
	if t.hasWts {
		r.wts, r.flags = t.wts, r.flags|flagWts
	}
	if t.invalidKnown {
		r.flags |= flagInvalidKnown
	}
	if t.invalid {
		r.flags |= flagInvalid
	}
	if t.tsNull {
		r.flags |= flagTsNull
	}
	if t.wtsNull {
		r.flags |= flagWtsNull
	}
	return r
}

// place stores r and returns its position, reusing a freed one.
func (c *collection) place(r rec) int32 {
	if n := len(c.free); n > 0 {
		p := c.free[n-1]
		c.free = c.free[:n-1]
		*c.at(p) = r
		return p
	}
	if c.n>>chunkBits == len(c.chunks) {
		c.chunks = append(c.chunks, make([]rec, 1<<chunkBits))
	}
	p := int32(c.n)
	c.n++
	*c.at(p) = r
	return p
}

// add indexes a new record (its tuple t) and returns its position.
func (c *collection) add(id recID, t *tuple) int32 {
	p := c.place(c.newRec(id, t))
	c.addID(c.at(p).idHash, p)
	c.count(c.at(p), 1)
	c.pending = append(c.pending, p)
	if len(c.pending) >= pendingMax {
		c.merge()
	}
	return p
}

// remove takes a record out of the index. Its position stays in the sorted
// arrays, skipped, until the next merge drops it.
func (c *collection) remove(p int32) {
	r := c.at(p)
	if !r.live() {
		return
	}
	r.flags &^= flagLive
	c.removeID(r.idHash, p)
	c.count(r, -1)
	c.dead++
	if c.dead >= pendingMax {
		c.merge()
	}
}

func (c *collection) addID(h uint64, p int32) {
	if _, ok := c.byID[h]; ok {
		c.idMore[h] = append(c.idMore[h], p)
		return
	}
	c.byID[h] = p
}

func (c *collection) removeID(h uint64, p int32) {
	more := c.idMore[h]
	if c.byID[h] == p {
		if len(more) == 0 {
			delete(c.byID, h)
			return
		}
		c.byID[h], more = more[0], more[1:]
	} else {
		more = slices.DeleteFunc(more, func(q int32) bool { return q == p })
	}
	if len(more) == 0 {
		delete(c.idMore, h)
	} else {
		c.idMore[h] = more
	}
}

// idSlots returns the live records whose _id hashes as key does.
func (c *collection) idSlots(key string) []int32 {
	h := idHash(key)
	p, ok := c.byID[h]
	if !ok {
		return nil
	}
	return append([]int32{p}, c.idMore[h]...)
}

func (c *collection) len() int { return c.live }

func (c *collection) sortIn(o int, ps []int32) {
	slices.SortFunc(ps, func(a, b int32) int { return comparePr(c.at(a).in(o), c.at(b).in(o)) })
}

// merge sorts the pending records into the arrays and drops dead records
// from them, freeing their positions.
func (c *collection) merge() {
	if len(c.pending) == 0 && c.dead == 0 {
		return
	}
	var wg sync.WaitGroup
	for o := range nOrders {
		var add []int32
		for _, p := range c.pending {
			if r := c.at(p); r.live() && r.inOrder(o) {
				add = append(add, p)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.sortIn(o, add)
			c.sorted[o] = c.mergeInto(o, c.sorted[o], add)
		}()
	}
	wg.Wait()
	if c.dead > 0 {
		// Every dead record has left the arrays and the pending list: its
		// position may be reused.
		for p := int32(0); p < int32(c.n); p++ {
			if r := c.at(p); !r.live() && r.flags&flagFree == 0 {
				r.flags = flagFree // so it is freed once
				c.free = append(c.free, p)
			}
		}
		c.dead = 0
	}
	c.pending = c.pending[:0]
}

// mergeInto merges the sorted add into the sorted old, dropping dead
// records, in place from the back (old grows by len(add) at most).
func (c *collection) mergeInto(o int, old, add []int32) []int32 {
	if c.dead > 0 {
		old = slices.DeleteFunc(old, func(p int32) bool { return !c.at(p).live() })
	}
	n := len(old)
	old = slices.Grow(old, len(add))[:n+len(add)]
	i, j, k := n-1, len(add)-1, len(old)-1
	for j >= 0 {
		if i >= 0 && comparePr(c.at(old[i]).in(o), c.at(add[j]).in(o)) > 0 {
			old[k] = old[i]
			i--
		} else {
			old[k] = add[j]
			j--
		}
		k--
	}
	return old
}

// count adds d to the counts r falls in.
func (c *collection) count(r *rec, d int) {
	c.live += d
	if r.flags&(flagTs|flagTsNull) == 0 {
		c.odd[0] += d
	}
	if r.flags&(flagWts|flagWtsNull) == 0 {
		c.odd[1] += d
	}
	if r.flags&flagInvalidKnown == 0 {
		c.oldTuple += d
	}
}

// build sorts the arrays of a collection loaded at once, in parallel.
func (c *collection) build() {
	var wg sync.WaitGroup
	for o := range nOrders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ps := make([]int32, 0, c.n)
			for p := int32(0); p < int32(c.n); p++ {
				if c.at(p).inOrder(o) {
					ps = append(ps, p)
				}
			}
			c.sortIn(o, ps)
			c.sorted[o] = ps
		}()
	}
	wg.Wait()
}

// span calls fn, in order, for the live records of order o from lo to hi
// (both included), in the sorted array and then among the pending records
// (the caller sorts by seq when it needs the natural order).
func (c *collection) span(o int, lo, hi probe, fn func(p int32)) {
	a := c.sorted[o]
	i := sort.Search(len(a), func(i int) bool { return comparePr(c.at(a[i]).in(o), lo) >= 0 })
	for ; i < len(a); i++ {
		r := c.at(a[i])
		if comparePr(r.in(o), hi) > 0 {
			break
		}
		if r.live() {
			fn(a[i])
		}
	}
	for _, p := range c.pending {
		r := c.at(p)
		if r.live() && r.inOrder(o) {
			if v := r.in(o); comparePr(v, lo) >= 0 && comparePr(v, hi) <= 0 {
				fn(p)
			}
		}
	}
}

// tupleFor extracts a document's index fields.
func tupleFor(db, coll string, doc map[string]any) tuple {
	t := tuple{db: db, coll: coll, id: query.Key(doc["_id"])}
	var w, ts any
	md, mdOK := doc["metadata"].(map[string]any)
	if mdOK {
		if k, ok := md["key"].(string); ok {
			t.key = k
		}
		w = md["write_ts"]
		if n, ok := query.Number(w); ok && !math.IsNaN(n) {
			t.wts, t.hasWts = n, true
		}
	}
	d, dOK := doc["data"].(map[string]any)
	if dOK {
		ts = d["ts"]
		if n, ok := query.Number(ts); ok && !math.IsNaN(n) {
			t.ts, t.hasTs = n, true
		}
	}
	t.wtsNull = w == nil && nullPath(doc["metadata"], mdOK)
	t.tsNull = ts == nil && nullPath(doc["data"], dOK)
	_, t.invalid = doc["invalid"]
	t.invalidKnown = true
	return t
}

// nullPath reports whether a field under parent sorts as null when it is
// absent or null: parent is an object, or anything but an array (an array's
// elements may hold the field).
func nullPath(parent any, isObject bool) bool {
	if isObject {
		return true
	}
	_, isArray := parent.([]any)
	return !isArray
}

// tuple is the index tuple of a scanned plain document.
func (d docInfo) tuple(db, coll string) tuple {
	return tuple{db: db, coll: coll, id: query.Key(d.id), key: d.key, ts: d.ts, hasTs: d.hasTs,
		wts: d.wts, hasWts: d.hasWts, invalid: d.invalid, invalidKnown: true,
		tsNull: !d.hasTs && !d.tsOther, wtsNull: !d.hasWts && !d.wtsOther}
}

// planned returns the matches of f in natural order when the index records
// alone decide them (query.Filter.IndexPlan); ok is false otherwise. A plan
// that pins _id is not decided here: the records keep only its hash.
func (c *collection) planned(f *query.Filter) (out []int32, ok bool) {
	p, ok := f.IndexPlan()
	if !ok || p.IDs != nil {
		return nil, false
	}
	keys := c.planKeys(&p)
	cands, _ := c.candidates(f)
	out = cands[:0]
	for _, q := range cands {
		r := c.at(q)
		if p.NoInvalid && r.flags&flagInvalidKnown == 0 {
			return nil, false // written before the tuple recorded it
		}
		if r.fits(&p, keys) {
			out = append(out, q)
		}
	}
	return out, true
}

// planKeys is the plan's streams as key indexes (nil: any stream).
func (c *collection) planKeys(p *query.Plan) map[uint32]bool {
	if p.Keys == nil {
		return nil
	}
	keys := map[uint32]bool{}
	for _, k := range p.Keys {
		if i, ok := c.keyIdx[k]; ok {
			keys[i] = true
		}
	}
	return keys
}

// fits reports whether the record satisfies p (keys: planKeys(p)).
func (r *rec) fits(p *query.Plan, keys map[uint32]bool) bool {
	if p.Keys != nil && !keys[r.key] {
		return false
	}
	if p.TS != nil && !(r.hasTs() && p.TS.Contains(r.ts)) {
		return false
	}
	if p.WTS != nil && !(r.hasWts() && p.WTS.Contains(r.wts)) {
		return false
	}
	return !(p.NoInvalid && r.flags&flagInvalid != 0)
}

// candidates picks, from the indexes, the records a filter can match: a
// superset of the matches, in natural order. scanned says whether the whole
// collection had to be read.
func (c *collection) candidates(f *query.Filter) (out []int32, scanned bool) {
	if ids, ok := f.EqualStrings("_id"); ok {
		for _, id := range ids {
			out = append(out, c.idSlots(query.Key(id))...)
		}
		return c.sortSeq(out), false
	}
	keys, okK := f.EqualStrings("metadata.key")
	tsR, okT := f.NumberRange("data.ts")
	wR, okW := f.NumberRange("metadata.write_ts")
	inf := math.Inf(1)
	switch {
	case okK && (okT || okW):
		o, rg, val := ordKeyTs, tsR, func(r *rec) float64 { return r.ts }
		if !okT {
			o, rg, val = ordKeyWts, wR, func(r *rec) float64 { return r.wts }
		}
		for _, k := range keys {
			i, ok := c.keyIdx[k]
			if !ok {
				continue
			}
			c.span(o, probe{i, true, rg.Lo, 0}, probe{i, true, rg.Hi, math.MaxUint64}, func(p int32) {
				if rg.Contains(val(c.at(p))) {
					out = append(out, p)
				}
			})
		}
	case okK:
		for _, k := range keys {
			if i, ok := c.keyIdx[k]; ok {
				c.span(ordKeyTs, probe{i, false, math.Inf(-1), 0}, probe{i, true, inf, math.MaxUint64},
					func(p int32) { out = append(out, p) })
			}
		}
	case okT:
		c.span(ordTs, probe{0, true, tsR.Lo, 0}, probe{0, true, tsR.Hi, math.MaxUint64}, func(p int32) {
			if tsR.Contains(c.at(p).ts) {
				out = append(out, p)
			}
		})
	case okW:
		c.span(ordWts, probe{0, true, wR.Lo, 0}, probe{0, true, wR.Hi, math.MaxUint64}, func(p int32) {
			if wR.Contains(c.at(p).wts) {
				out = append(out, p)
			}
		})
	default:
		out = make([]int32, 0, c.live)
		for p := int32(0); p < int32(c.n); p++ {
			if c.at(p).live() {
				out = append(out, p)
			}
		}
		return c.sortSeq(out), true
	}
	return c.sortSeq(out), false
}

func (c *collection) sortSeq(ps []int32) []int32 {
	slices.SortFunc(ps, func(a, b int32) int { return cmp.Compare(c.at(a).seq, c.at(b).seq) })
	return ps
}

// plannedByID decides a plan that pins _id to strings (the pipeline's
// deletes of the entries it moved) from the index tuples: the records keep
// only _id's hash, so each candidate's tuple, not its document, is opened to
// compare the _id itself. A candidate whose _id is not a string leaves the
// filter to the documents (ok false).
func (s *Store) plannedByID(tx *bolt.Tx, c *collection, f *query.Filter) (out []int32, ok bool, err error) {
	p, ok := f.IndexPlan()
	if !ok || p.IDs == nil {
		return nil, false, nil
	}
	want := make(map[string]bool, len(p.IDs))
	for _, id := range p.IDs {
		want[query.Key(id)] = true
	}
	keys := c.planKeys(&p)
	cands, _ := c.candidates(f)
	for _, q := range cands {
		r := c.at(q)
		if p.NoInvalid && r.flags&flagInvalidKnown == 0 {
			return nil, false, nil // written before the tuple recorded it
		}
		if !r.fits(&p, keys) {
			continue
		}
		id, err := s.readTupleID(tx, r.id)
		if err != nil {
			return nil, false, err
		}
		if !strings.HasPrefix(id, "s") {
			return nil, false, nil
		}
		if want[id] {
			out = append(out, q)
		}
	}
	return out, true, nil
}
