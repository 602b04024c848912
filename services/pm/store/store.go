// Package store is the PM's encrypted document store: an embedded bbolt file
// whose every value, except one plaintext header, is sealed with
// XChaCha20-Poly1305 under a random data key; the data key is wrapped by a key
// derived from the user's secret with Argon2id. Nothing on disk names a
// collection, a stream (metadata.key), a timestamp or any document content.
//
// Each record has a random 128-bit id and two sealed values: the document
// (padded to 256-byte granules) and a small index tuple (collection, _id,
// metadata.key, data.ts, metadata.write_ts, insertion order). Unsealing
// decrypts only the tuples and builds in-memory B-tree indexes, so queries on
// metadata.key, data.ts, metadata.write_ts and _id decrypt only the documents
// they may return. README.md ("The permission manager: storage design") gives
// the threat model.
package store

import (
	"bytes"
	"crypto/cipher"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
	"unique"

	"github.com/google/btree"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/e-mission/upc/services/pm/query"
)

// Errors callers map to HTTP statuses.
var (
	ErrSealed          = errors.New("the PM is sealed: POST the user's key to /cloud/key first")
	ErrWrongKey        = errors.New("wrong key for this PM's data")
	ErrAlreadyUnsealed = errors.New("the PM is already unsealed; a key was given before")
	ErrDuplicateID     = errors.New("duplicate _id")
	ErrInvalid         = errors.New("invalid request")
	ErrConflict        = errors.New("conflict")
)

var (
	bucketHeader = []byte("header")
	bucketDocs   = []byte("docs")
	bucketIndex  = []byte("index")
	bucketState  = []byte("state")
	keyHeader    = []byte("v1")
	keyBudget    = []byte("budget")
)

// FileName is the store's file inside the data directory.
const FileName = "pm.db"

// Options configure a store.
type Options struct {
	KDF           KDFParams // zero: DefaultKDF (used only when the volume is new)
	InitialBudget float64   // a new volume's privacy budget
	// RenewEvery, when > 0, resets the balance to the initial budget at the
	// end of every period of this length (counted from the first use).
	RenewEvery time.Duration
	// NoSync skips fsync on commit: faster, but a machine crash may lose the
	// last writes. Only for benchmarks and throwaway clouds.
	NoSync bool
	// MinCost is the least ε a spend may charge (0: DefaultMinCost).
	MinCost float64
	// MaxParticipants is the owner's policy: the most participants a noise
	// share may assume, whatever a caller claims (0: DefaultMaxParticipants).
	MaxParticipants int
	// LedgerKeep is how many recent ledger entries are kept before older
	// ones fold into totals (0: DefaultLedgerKeep).
	LedgerKeep int
	Now        func() time.Time // for tests; nil means time.Now
}

type header struct {
	Format     string    `json:"format"`
	Cipher     string    `json:"cipher"`
	KDF        string    `json:"kdf"`
	Params     KDFParams `json:"kdf_params"`
	Salt       []byte    `json:"salt"`
	WrappedKey []byte    `json:"wrapped_key"`
}

const formatV1 = "upc-pm/1"

// Store is one user's encrypted store. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	opts Options

	mu      sync.RWMutex // guards everything below and the data buckets
	aead    cipher.AEAD  // nil while sealed
	hdr     *header
	colls   map[collName]*collection
	nextSeq uint64

	bmu    sync.Mutex // the budget
	budget *ledgerMem
}

type collName struct{ db, coll string }

// Open opens (creating if needed) the store file in dir. The store starts
// sealed.
func Open(dir string, opts Options) (*Store, error) {
	if opts.KDF == (KDFParams{}) {
		opts.KDF = DefaultKDF
	}
	if err := opts.KDF.validate(); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if math.IsNaN(opts.InitialBudget) || math.IsInf(opts.InitialBudget, 0) || opts.InitialBudget < 0 {
		return nil, fmt.Errorf("open store: initial budget must be a finite number ≥ 0, not %v", opts.InitialBudget)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if math.IsNaN(opts.MinCost) || math.IsInf(opts.MinCost, 0) || opts.MinCost < 0 || opts.MaxParticipants < 0 || opts.LedgerKeep < 0 {
		return nil, fmt.Errorf("open store: min cost, max participants and ledger keep must be finite and ≥ 0")
	}
	if opts.MinCost == 0 {
		opts.MinCost = DefaultMinCost
	}
	if opts.MaxParticipants == 0 {
		opts.MaxParticipants = DefaultMaxParticipants
	}
	if opts.LedgerKeep == 0 {
		opts.LedgerKeep = DefaultLedgerKeep
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{
		Timeout:        2 * time.Second,
		NoSync:         opts.NoSync,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Address space, not memory (the file still grows as written):
		// without it every few inserts remap the growing file.
		InitialMmapSize: 1 << 30,
	})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s := &Store{db: db, opts: opts}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketHeader, bucketDocs, bucketIndex, bucketState} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if raw := tx.Bucket(bucketHeader).Get(keyHeader); raw != nil {
			var h header
			if err := json.Unmarshal(raw, &h); err != nil || h.Format != formatV1 {
				return fmt.Errorf("unreadable header (format %q)", h.Format)
			}
			s.hdr = &h
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	return s, nil
}

// Close closes the file and forgets the key.
func (s *Store) Close() error {
	s.mu.Lock()
	s.aead = nil
	s.colls = nil
	s.mu.Unlock()
	return s.db.Close()
}

// Sealed reports whether no key has been given yet.
func (s *Store) Sealed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.aead == nil
}

// Initialized reports whether a key was ever set on this volume.
func (s *Store) Initialized() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.hdr != nil
}

// Unseal is UnsealKind for a passphrase.
func (s *Store) Unseal(secret []byte) error { return s.UnsealKind(secret, Passphrase) }

// UnsealKind derives the key-encryption key from secret: with Argon2id for a
// passphrase, with HKDF-SHA256 for a RandomKey (a new volume records which,
// and an existing volume's record decides). On a new volume it makes a random
// data key and stores it wrapped; on an existing one it unwraps the data key
// (a wrong secret fails authentication: ErrWrongKey, nothing changes), then
// rebuilds the indexes from the sealed tuples.
func (s *Store) UnsealKind(secret []byte, kind KeyKind) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: the key is empty", ErrInvalid)
	}
	if err := kind.check(secret); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead != nil {
		return ErrAlreadyUnsealed
	}
	var dataKey []byte
	if s.hdr == nil {
		h := &header{Format: formatV1, Cipher: "xchacha20-poly1305", KDF: kdfArgon2id, Params: s.opts.KDF, Salt: randomBytes(16)}
		if kind == RandomKey {
			h.KDF, h.Params = kdfHKDF, KDFParams{}
		}
		kek, err := h.kek(secret)
		if err != nil {
			return err
		}
		wrap, _ := chacha20poly1305.NewX(kek)
		dataKey = randomBytes(chacha20poly1305.KeySize)
		nonce := randomBytes(chacha20poly1305.NonceSizeX)
		h.WrappedKey = wrap.Seal(nonce, nonce, dataKey, []byte(formatV1+" data key"))
		raw, err := json.Marshal(h)
		if err != nil {
			return err
		}
		if err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketHeader)
			if b.Get(keyHeader) != nil {
				return errors.New("header appeared concurrently")
			}
			return b.Put(keyHeader, raw)
		}); err != nil {
			return fmt.Errorf("write header: %w", err)
		}
		s.hdr = h
	} else {
		h := s.hdr
		kek, err := h.kek(secret)
		if err != nil {
			return fmt.Errorf("header: %w", err)
		}
		wrap, _ := chacha20poly1305.NewX(kek)
		n := chacha20poly1305.NonceSizeX
		if len(h.WrappedKey) < n {
			return errors.New("header: wrapped key too short")
		}
		dataKey, err = wrap.Open(nil, h.WrappedKey[:n], h.WrappedKey[n:], []byte(formatV1+" data key"))
		if err != nil {
			return ErrWrongKey
		}
	}
	aead, err := chacha20poly1305.NewX(dataKey)
	if err != nil {
		return err
	}
	s.aead = aead
	if err := s.loadLocked(); err != nil {
		s.aead, s.colls = nil, nil
		return fmt.Errorf("load indexes: %w", err)
	}
	return nil
}

// loadLocked decrypts every index tuple and the budget.
func (s *Store) loadLocked() error {
	s.colls = map[collName]*collection{}
	s.nextSeq = 1
	// Entries are allocated in one slab: half a million small objects cost
	// the garbage collector far less as one.
	var slab []entry
	byColl := map[collName][]*entry{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIndex)
		slab = make([]entry, 0, b.Stats().KeyN)
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			plain, err := s.open(v, adFor("idx", k))
			if err != nil {
				return fmt.Errorf("record %x: index tuple fails authentication", k)
			}
			plain, err = unpad(plain)
			if err != nil {
				return fmt.Errorf("record %x: %w", k, err)
			}
			var t tuple
			if err := t.unmarshal(plain); err != nil {
				return fmt.Errorf("record %x: %w", k, err)
			}
			t.intern()
			slab = append(slab, entry{tuple: t})
			e := &slab[len(slab)-1]
			copy(e.rec[:], k)
			n := collName{t.db, t.coll}
			byColl[n] = append(byColl[n], e)
			if t.seq >= s.nextSeq {
				s.nextSeq = t.seq + 1
			}
		}
		budget, err := s.loadBudget(tx)
		if err != nil {
			return err
		}
		s.bmu.Lock()
		s.budget = budget
		s.bmu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	if s.budget.migrated {
		if err := s.saveMigrated(s.budget); err != nil {
			return fmt.Errorf("migrate the budget: %w", err)
		}
		s.budget.migrated = false
	}
	for n, es := range byColl {
		c := s.coll(n.db, n.coll, true)
		c.bulkAdd(es)
	}
	return nil
}

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

// ---- in-memory indexes ----

type recID [16]byte

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

// ---- documents ----

func encodeDoc(doc map[string]any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func decodeDoc(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

func (s *Store) readDoc(tx *bolt.Tx, rec recID) (map[string]any, error) {
	plain, err := s.readRaw(tx, rec)
	if err != nil {
		return nil, err
	}
	return decodeDoc(plain)
}

// readRaw returns a record's document as the JSON it was stored as.
func (s *Store) readRaw(tx *bolt.Tx, rec recID) ([]byte, error) {
	v := tx.Bucket(bucketDocs).Get(rec[:])
	if v == nil {
		return nil, fmt.Errorf("record %x: document missing", rec)
	}
	plain, err := s.open(v, adFor("doc", rec[:]))
	if err != nil {
		return nil, fmt.Errorf("record %x: document fails authentication", rec)
	}
	if plain, err = unpad(plain); err != nil {
		return nil, fmt.Errorf("record %x: %w", rec, err)
	}
	return plain, nil
}

// putRecord seals and writes a document's JSON and its index tuple.
func (s *Store) putRecord(tx *bolt.Tx, rec recID, t tuple, raw []byte) error {
	if err := tx.Bucket(bucketDocs).Put(rec[:], s.seal(pad(raw, padBlock), adFor("doc", rec[:]))); err != nil {
		return err
	}
	return tx.Bucket(bucketIndex).Put(rec[:], s.seal(pad(t.marshal(), 64), adFor("idx", rec[:])))
}

func (s *Store) deleteRecord(tx *bolt.Tx, rec recID) error {
	if err := tx.Bucket(bucketDocs).Delete(rec[:]); err != nil {
		return err
	}
	return tx.Bucket(bucketIndex).Delete(rec[:])
}

func newRecID() recID {
	var r recID
	copy(r[:], randomBytes(16))
	return r
}
