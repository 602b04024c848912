package store

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// KDFParams are Argon2id's cost parameters; they are stored in the plaintext
// header so a volume keeps the costs it was created with.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultKDF is OWASP's Argon2id recommendation (46 MiB, 1 pass, 1 lane): it
// makes each guess of the user's secret cost 46 MiB and ~0.05-0.2 s of a core,
// while a user's cloud unseals in well under a second even when hundreds
// start at once on one machine.
var DefaultKDF = KDFParams{Time: 1, MemoryKiB: 46 * 1024, Threads: 1}

func (p KDFParams) validate() error {
	var errs []error
	if p.Time < 1 || p.Time > 100 {
		errs = append(errs, fmt.Errorf("kdf time must be 1..100, not %d", p.Time))
	}
	if p.MemoryKiB < 8*1024 || p.MemoryKiB > 4*1024*1024 {
		errs = append(errs, fmt.Errorf("kdf memory must be 8 MiB..4 GiB, not %d KiB", p.MemoryKiB))
	}
	if p.Threads < 1 {
		errs = append(errs, fmt.Errorf("kdf threads must be at least 1"))
	}
	return errors.Join(errs...)
}

func deriveKEK(secret, salt []byte, p KDFParams) []byte {
	return argon2.IDKey(secret, salt, p.Time, p.MemoryKiB, p.Threads, chacha20poly1305.KeySize)
}

// KeyKind says what a user's secret is, which decides how a new volume
// derives its key-encryption key from it.
type KeyKind string

const (
	// Passphrase: anything a person may choose; stretched with Argon2id
	// so each guess costs time and memory.
	Passphrase KeyKind = "passphrase"
	// RandomKey: at least 256 bits from a CSPRNG, as 64 or more hex digits
	// (a client that makes its users' keys). Guessing it is hopeless
	// whatever the derivation, so HKDF-SHA256 derives the key-encryption key
	// and the unseal costs microseconds instead of Argon2id's ~0.2 CPU-s and
	// 46 MiB.
	RandomKey KeyKind = "random"
)

// MinRandomKeyHex is the shortest RandomKey: 256 bits.
const MinRandomKeyHex = 64

func (k KeyKind) check(secret []byte) error {
	switch k {
	case Passphrase:
		return nil
	case RandomKey:
		if _, err := hex.DecodeString(string(secret)); err != nil || len(secret) < MinRandomKeyHex {
			return fmt.Errorf("a %q key must be at least %d hex digits (256 bits from a CSPRNG)", RandomKey, MinRandomKeyHex)
		}
		return nil
	}
	return fmt.Errorf("key kind %q is not %q or %q", string(k), Passphrase, RandomKey)
}

const (
	kdfArgon2id = "argon2id"
	kdfHKDF     = "hkdf-sha256"
)

// kek derives the key-encryption key as the header says.
func (h *header) kek(secret []byte) ([]byte, error) {
	switch h.KDF {
	case kdfArgon2id:
		if err := h.Params.validate(); err != nil {
			return nil, err
		}
		return deriveKEK(secret, h.Salt, h.Params), nil
	case kdfHKDF:
		return hkdf.Key(sha256.New, secret, h.Salt, formatV1+" key-encryption key", chacha20poly1305.KeySize)
	}
	return nil, fmt.Errorf("unknown kdf %q", h.KDF)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux ≥ 3.17
	}
	return b
}

// padBlock is the granule sealed plaintexts are padded to, so a record's
// size on disk tells its length only to within padBlock bytes.
const padBlock = 256

// pad appends 0x80 then zeros up to a multiple of block (ISO/IEC 7816-4).
func pad(b []byte, block int) []byte {
	n := len(b) + 1
	total := (n + block - 1) / block * block
	out := make([]byte, total)
	copy(out, b)
	out[len(b)] = 0x80
	return out
}

func unpad(b []byte) ([]byte, error) {
	for i := len(b) - 1; i >= 0; i-- {
		switch b[i] {
		case 0:
			continue
		case 0x80:
			return b[:i], nil
		}
		break
	}
	return nil, errors.New("bad padding")
}

// seal encrypts with XChaCha20-Poly1305 under a fresh random 192-bit nonce
// (random nonces are safe at this size for any number of records).
func (s *Store) seal(plain, ad []byte) []byte {
	nonce := randomBytes(chacha20poly1305.NonceSizeX)
	return s.aead.Seal(nonce, nonce, plain, ad)
}

func (s *Store) open(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < chacha20poly1305.NonceSizeX+s.aead.Overhead() {
		return nil, errors.New("sealed value too short")
	}
	n := chacha20poly1305.NonceSizeX
	return s.aead.Open(nil, sealed[:n], sealed[n:], ad)
}

func adFor(kind string, id []byte) []byte {
	ad := make([]byte, 0, len(kind)+1+len(id))
	ad = append(ad, kind...)
	ad = append(ad, 0)
	return append(ad, id...)
}

// tuple is a record's index entry: what the in-memory indexes need, sealed
// separately from the document so unsealing reads only these.
type tuple struct {
	seq      uint64
	db, coll string
	id       string // query.Key of _id
	key      string // metadata.key
	ts, wts  float64
	hasTs    bool
	hasWts   bool
	// invalidKnown says invalid is recorded (tuples written before it was
	// are read with it false, and queries on it decrypt the document).
	invalidKnown bool
	invalid      bool // the document has a top-level invalid field
	// tsNull and wtsNull say data.ts and metadata.write_ts are missing or
	// null: they sort below every number (tuples written before these
	// existed say neither, and walks read such documents).
	tsNull, wtsNull bool
}

func (t *tuple) marshal() []byte {
	b := make([]byte, 0, 64+len(t.db)+len(t.coll)+len(t.id)+len(t.key))
	b = append(b, 1) // format
	var flags byte
	if t.hasTs {
		flags |= 1
	}
	if t.hasWts {
		flags |= 2
	}
	if t.invalidKnown {
		flags |= 4
	}
	if t.invalid {
		flags |= 8
	}
	if t.tsNull {
		flags |= 16
	}
	if t.wtsNull {
		flags |= 32
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, t.seq)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(t.ts))
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(t.wts))
	for _, s := range []string{t.db, t.coll, t.id, t.key} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// tupleView is a tuple read in place: its strings are slices of the
// plaintext (valid until the buffer is reused).
type tupleView struct {
	tuple             // the numbers and flags; its strings stay empty
	db, coll, id, key []byte
}

func (t *tupleView) parse(b []byte) error {
	if len(b) < 26 || b[0] != 1 {
		return errors.New("bad index tuple")
	}
	t.tuple.setFixed(b)
	b = b[26:]
	for _, dst := range []*[]byte{&t.db, &t.coll, &t.id, &t.key} {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return errors.New("bad index tuple")
		}
		*dst = b[k : k+int(n)]
		b = b[k+int(n):]
	}
	return nil
}

// setFixed reads the flags and numbers of a marshaled tuple (26 bytes at least).
func (t *tuple) setFixed(b []byte) {
	flags := b[1]
	t.hasTs, t.hasWts = flags&1 != 0, flags&2 != 0
	t.invalidKnown, t.invalid = flags&4 != 0, flags&8 != 0
	t.tsNull, t.wtsNull = flags&16 != 0, flags&32 != 0
	t.seq = binary.BigEndian.Uint64(b[2:])
	t.ts = math.Float64frombits(binary.BigEndian.Uint64(b[10:]))
	t.wts = math.Float64frombits(binary.BigEndian.Uint64(b[18:]))
}

func (t *tuple) unmarshal(b []byte) error {
	if len(b) < 26 || b[0] != 1 {
		return errors.New("bad index tuple")
	}
	t.setFixed(b)
	b = b[26:]
	for _, dst := range []*string{&t.db, &t.coll, &t.id, &t.key} {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return errors.New("bad index tuple")
		}
		*dst = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	return nil
}
