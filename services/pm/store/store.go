// Package store is the PM's encrypted document store: an embedded bbolt file
// whose every value, except one plaintext header, is sealed with
// XChaCha20-Poly1305 under a random data key; the data key is wrapped by a key
// derived from the user's secret with Argon2id. Nothing on disk names a
// collection, a stream (metadata.key), a timestamp or any document content.
//
// Each record has a random 128-bit id and two sealed values: the document
// (padded to 256-byte granules) and a small index tuple (collection, _id,
// metadata.key, data.ts, metadata.write_ts, insertion order). Unsealing
// decrypts only the tuples and builds compact in-memory indexes, so queries on
// metadata.key, data.ts, metadata.write_ts and _id decrypt only the documents
// they may return. docs/pm.md ("Storage design", "What someone with the disk
// learns") gives the threat model.
package store

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/chacha20poly1305"
)

// Errors callers map to HTTP statuses.
var (
	ErrSealed          = errors.New("the PM is sealed: POST the user's key to /cloud/key first")
	ErrWrongKey        = errors.New("wrong key for this PM's data")
	ErrAlreadyUnsealed = errors.New("the PM is already unsealed; a key was given before")
	ErrDuplicateID     = errors.New("duplicate _id")
	ErrInvalid         = errors.New("invalid request")
	ErrConflict        = errors.New("conflict")
	ErrCanceled        = errors.New("query stopped before it finished")
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
	db     *bolt.DB
	opts   Options
	closed atomic.Bool

	mu      sync.RWMutex // guards everything below and the data buckets
	aead    cipher.AEAD  // nil while sealed
	hdr     *header
	colls   map[collName]*collection
	nextSeq uint64
	txNum   uint64 // the last write transaction's number (0: counter exhausted)

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
	s.closed.Store(true)
	s.mu.Lock()
	s.aead = nil
	s.colls = nil
	s.mu.Unlock()
	return s.db.Close()
}

// Closed reports whether Close has been called: the file is no longer open.
func (s *Store) Closed() bool { return s.closed.Load() }

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
	if err := s.loadIndexesLocked(); err != nil {
		return err
	}
	err := s.db.View(func(tx *bolt.Tx) error {
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
	return nil
}

// loadIndexesLocked builds the in-memory indexes from the sealed tuples on
// disk (at unseal, and after a batch of writes failed midway).
func (s *Store) loadIndexesLocked() error {
	s.colls = map[collName]*collection{}
	s.nextSeq = 1
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIndex)
		c := b.Cursor()
		s.txNum = 1
		if k, _ := c.Last(); len(k) >= 8 {
			// The largest id's number: the next write counts on from it (on
			// a volume of random ids, a random number far below 2^64).
			s.txNum = max(binary.BigEndian.Uint64(k), 1)
		}
		// A year holds hundreds of thousands of tuples: they are opened
		// into one buffer and read in place (tupleView), with no string
		// made unless a collection or stream is new.
		var plainBuf, ad []byte
		var last struct {
			db, coll []byte
			c        *collection
		}
		n := chacha20poly1305.NonceSizeX
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) < n+s.aead.Overhead() {
				return fmt.Errorf("record %x: index tuple too short", k)
			}
			ad = append(append(ad[:0], "idx\x00"...), k...)
			plain, err := s.aead.Open(plainBuf[:0], v[:n], v[n:], ad)
			if err != nil {
				return fmt.Errorf("record %x: index tuple fails authentication", k)
			}
			plainBuf = plain
			if plain, err = unpad(plain); err != nil {
				return fmt.Errorf("record %x: %w", k, err)
			}
			var t tupleView
			if err := t.parse(plain); err != nil {
				return fmt.Errorf("record %x: %w", k, err)
			}
			if last.c == nil || !bytes.Equal(t.db, last.db) || !bytes.Equal(t.coll, last.coll) {
				last.db, last.coll = bytes.Clone(t.db), bytes.Clone(t.coll)
				last.c = s.coll(string(t.db), string(t.coll), true)
			}
			var id recID
			copy(id[:], k)
			last.c.loadView(id, &t)
			if t.seq >= s.nextSeq {
				s.nextSeq = t.seq + 1
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range s.colls {
		c.build()
	}
	return nil
}
