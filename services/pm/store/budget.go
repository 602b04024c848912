package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/e-mission/upc/services/pm/api"
)

// The privacy budget is two things, both sealed like the documents (which
// services asked what, and when, is the user's business):
//
//   - the head (bucket state, key budget): balance, renewal period, the
//     number and hash of the last ledger entry, and the base that compaction
//     folded older entries into;
//   - the ledger (bucket ledger, one record per event keyed by its number),
//     each entry naming the hash of the one before it.
//
// An event appends one entry and rewrites the small head in one transaction.
// On unseal the chain from the base to the head is checked: an edited,
// removed, reordered or rolled-back entry, or a head older than the entries,
// makes the budget refuse every spend (ErrLedger). A whole volume copied back
// from an earlier day is consistent with itself; the owner detects that by
// the head (number and hash) the PM reports, which only grows.

// ErrLedger: the ledger fails its integrity check; no spend is answered.
var ErrLedger = errors.New("the privacy ledger fails its integrity check")

// Defaults of the budget's policy (Options).
const (
	// DefaultMinCost is the least ε any answered query is charged: nothing
	// is free, so no number of queries adds up to nothing.
	DefaultMinCost = 0.01
	// DefaultMaxParticipants caps the population a noise share may assume:
	// claiming more participants buys no less noise.
	DefaultMaxParticipants = 1000
	// DefaultLedgerKeep is how many recent entries the ledger keeps; older
	// ones fold into the base (totals stay exact), so it stays bounded.
	DefaultLedgerKeep = 4096
)

var (
	bucketLedger = []byte("ledger")
	// bucketCharges keeps what each folded query id bought, so an id buys
	// one question for ever. The budget bounds it: at least MinCost a charge.
	bucketCharges = []byte("charges")
	questionRE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// budgetState is the head record.
type budgetState struct {
	Version     int       `json:"version"`
	Initial     float64   `json:"initial"`
	Balance     float64   `json:"balance"`
	PeriodStart time.Time `json:"period_start,omitzero"`
	Seq         uint64    `json:"seq"`  // the last entry's number (Base.Seq when none)
	Head        string    `json:"head"` // the last entry's hash (Base.Hash when none)
	Base        base      `json:"base"`

	// v1 volumes kept the whole ledger in the head; read once to migrate.
	Entries []api.LedgerEntry  `json:"entries,omitempty"`
	Charges map[string]*charge `json:"charges,omitempty"`
}

// base is what compaction folded away: where the kept chain starts and the
// totals of the folded entries.
type base struct {
	Seq     uint64             `json:"seq"`
	Hash    string             `json:"hash"`
	Balance float64            `json:"balance"`
	Entries uint64             `json:"entries"`
	Spent   float64            `json:"spent"` // charged minus refunded
	Grants  map[string]float64 `json:"grants,omitempty"`
}

const budgetVersion = 2

// charge is what a query id bought, rebuilt from the kept entries.
type charge struct {
	Amount       float64 `json:"amount"`
	Service      string  `json:"service,omitempty"`
	Question     string  `json:"question,omitempty"`
	Participants int     `json:"participants,omitempty"`
	Grant        string  `json:"grant,omitempty"`
	Seed         string  `json:"seed,omitempty"`
	Refunded     bool    `json:"refunded,omitempty"`
}

// ledgerMem is the budget as the running store holds it.
type ledgerMem struct {
	head    budgetState
	entries []api.LedgerEntry // Base.Seq+1 .. Seq
	charges map[string]*charge
	grants  map[string]float64 // ε spent per grant id, all time
	err     error              // ErrLedger, wrapped with what failed
	// migrated: read from a v1 head; loadLocked writes it as a chain.
	migrated bool
}

// costSlack absorbs floating-point error: ten spends of 0.1 from 1.0 must all
// succeed although 0.1 is not exact in binary. The balance never goes below
// zero: a spend within the slack of the balance leaves exactly zero.
const costSlack = 1e-9

var genesis = hex.EncodeToString(make([]byte, sha256.Size))

// entryHash chains e (whose Prev names the previous hash) to its content.
func entryHash(e api.LedgerEntry) string {
	b, _ := json.Marshal(e) // a struct of strings and numbers: never fails
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// loadBudget reads the head and the kept entries and checks the chain.
func (s *Store) loadBudget(tx *bolt.Tx) (*ledgerMem, error) {
	m := &ledgerMem{charges: map[string]*charge{}, grants: map[string]float64{}}
	raw := tx.Bucket(bucketState).Get(keyBudget)
	if raw == nil {
		m.head = budgetState{Version: budgetVersion, Initial: s.opts.InitialBudget, Balance: s.opts.InitialBudget, Head: genesis,
			Base: base{Hash: genesis, Balance: s.opts.InitialBudget}}
		if lb := tx.Bucket(bucketLedger); lb != nil && lb.Stats().KeyN > 0 {
			m.err = fmt.Errorf("%w: ledger entries exist but the budget record is gone", ErrLedger)
		}
		return m, nil
	}
	plain, err := s.open(raw, adFor("state", keyBudget))
	if err != nil {
		return nil, fmt.Errorf("budget fails authentication")
	}
	if plain, err = unpad(plain); err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	if err := json.Unmarshal(plain, &m.head); err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	if m.head.Version < budgetVersion {
		return s.migrateBudget(m.head)
	}
	for id, v := range m.head.Base.Grants {
		m.grants[id] = v
	}
	if cb := tx.Bucket(bucketCharges); cb != nil {
		err := cb.ForEach(func(k, v []byte) error {
			plain, err := s.open(v, adFor("charge", k))
			if err == nil {
				plain, err = unpad(plain)
			}
			var c charge
			if err == nil {
				err = json.Unmarshal(plain, &c)
			}
			if err != nil {
				return fmt.Errorf("%w: a folded charge fails authentication", ErrLedger)
			}
			m.charges[string(k)] = &c
			return nil
		})
		if err != nil {
			m.err = err
			return m, nil
		}
	}
	m.err = s.readChain(tx, m)
	return m, nil
}

// readChain reads entries Base.Seq+1..Seq into m and checks that they chain
// from the base to the head, that none lies beyond the head, and that the
// last balance is the head's.
func (s *Store) readChain(tx *bolt.Tx, m *ledgerMem) error {
	h := m.head
	lb := tx.Bucket(bucketLedger)
	prev, bal := h.Base.Hash, h.Base.Balance
	for seq := h.Base.Seq + 1; seq <= h.Seq; seq++ {
		var raw []byte
		if lb != nil {
			raw = lb.Get(seqKey(seq))
		}
		if raw == nil {
			return fmt.Errorf("%w: entry %d is missing", ErrLedger, seq)
		}
		plain, err := s.open(raw, adFor("ledger", seqKey(seq)))
		if err == nil {
			plain, err = unpad(plain)
		}
		var e api.LedgerEntry
		if err == nil {
			err = json.Unmarshal(plain, &e)
		}
		if err != nil {
			return fmt.Errorf("%w: entry %d fails authentication", ErrLedger, seq)
		}
		if e.Seq != seq || e.Prev != prev {
			return fmt.Errorf("%w: entry %d does not follow entry %d", ErrLedger, seq, seq-1)
		}
		prev, bal = entryHash(e), e.Balance
		m.add(e)
	}
	if prev != h.Head {
		return fmt.Errorf("%w: the chain ends at %.12s…, the budget names %.12s…", ErrLedger, prev, h.Head)
	}
	if bal != h.Balance {
		return fmt.Errorf("%w: the last entry leaves %v, the budget says %v", ErrLedger, bal, h.Balance)
	}
	if lb != nil {
		if k, _ := lb.Cursor().Last(); k != nil && binary.BigEndian.Uint64(k) > h.Seq {
			return fmt.Errorf("%w: entries beyond %d exist (the budget record was rolled back)", ErrLedger, h.Seq)
		}
		if k, _ := lb.Cursor().First(); k != nil && binary.BigEndian.Uint64(k) <= h.Base.Seq {
			return fmt.Errorf("%w: entries before the base remain", ErrLedger)
		}
	}
	return nil
}

// add folds one entry into the in-memory views.
func (m *ledgerMem) add(e api.LedgerEntry) {
	m.entries = append(m.entries, e)
	switch e.Kind {
	case "spend":
		if e.QueryID != "" {
			m.charges[e.QueryID] = &charge{Amount: e.Amount, Service: e.Service, Question: e.Question,
				Participants: e.Participants, Grant: e.Grant, Seed: e.Seed}
		}
		if e.Grant != "" {
			m.grants[e.Grant] += e.Amount
		}
	case "refund":
		if c, ok := m.charges[e.QueryID]; ok {
			c.Refunded = true
			if c.Grant != "" {
				m.grants[c.Grant] -= c.Amount
			}
		}
	}
}

// migrateBudget turns a v1 head (the whole ledger inside it) into a head and
// a chain; loadLocked writes the result (migrated set) once its read ends.
func (s *Store) migrateBudget(old budgetState) (*ledgerMem, error) {
	m := &ledgerMem{charges: map[string]*charge{}, grants: map[string]float64{}, migrated: true,
		head: budgetState{Version: budgetVersion, Initial: old.Initial, Balance: old.Initial, PeriodStart: old.PeriodStart, Head: genesis,
			Base: base{Hash: genesis, Balance: old.Initial}}}
	chain := func(e api.LedgerEntry) {
		e.Seq, e.Prev = m.head.Seq+1, m.head.Head
		m.head.Seq, m.head.Head, m.head.Balance = e.Seq, entryHash(e), e.Balance
		m.add(e)
	}
	for _, e := range old.Entries {
		chain(e)
	}
	if m.head.Balance != old.Balance {
		chain(api.LedgerEntry{Time: s.now(), Kind: "migrate", Balance: old.Balance, Reason: "balance of the v1 budget record"})
	}
	return m, nil
}

// saveMigrated writes a migrated ledger whole (once per v1 volume).
func (s *Store) saveMigrated(m *ledgerMem) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		lb, err := tx.CreateBucketIfNotExists(bucketLedger)
		if err != nil {
			return err
		}
		for _, e := range m.entries {
			if err := s.putEntry(lb, e); err != nil {
				return err
			}
		}
		return s.putHead(tx, m.head)
	})
}

func (s *Store) putEntry(lb *bolt.Bucket, e api.LedgerEntry) error {
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return lb.Put(seqKey(e.Seq), s.seal(pad(raw, padBlock), adFor("ledger", seqKey(e.Seq))))
}

func (s *Store) putHead(tx *bolt.Tx, h budgetState) error {
	h.Entries, h.Charges = nil, nil
	raw, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketState).Put(keyBudget, s.seal(pad(raw, padBlock), adFor("state", keyBudget)))
}

// appendEntries chains es after the head, folds what the ledger no longer
// keeps into the base, and writes it all in one transaction. Only on success
// does the in-memory budget change.
func (s *Store) appendEntries(es ...api.LedgerEntry) error {
	m := s.budget
	head := m.head
	head.Base.Grants = cloneGrants(head.Base.Grants)
	for i := range es {
		es[i].Seq, es[i].Prev = head.Seq+1, head.Head
		head.Seq, head.Head, head.Balance = es[i].Seq, entryHash(es[i]), es[i].Balance
	}
	all := append(append([]api.LedgerEntry{}, m.entries...), es...)
	keep := s.opts.LedgerKeep
	var fold []api.LedgerEntry
	if len(all) > 2*keep {
		fold, all = all[:len(all)-keep], all[len(all)-keep:]
		for _, e := range fold {
			head.Base.Seq, head.Base.Hash, head.Base.Balance = e.Seq, entryHash(e), e.Balance
			head.Base.Entries++
			switch e.Kind {
			case "spend":
				head.Base.Spent += e.Amount
				if e.Grant != "" {
					if head.Base.Grants == nil {
						head.Base.Grants = map[string]float64{}
					}
					head.Base.Grants[e.Grant] += e.Amount
				}
			case "refund":
				head.Base.Spent -= e.Amount
				if e.Grant != "" && head.Base.Grants != nil {
					head.Base.Grants[e.Grant] -= e.Amount
				}
			}
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		lb, err := tx.CreateBucketIfNotExists(bucketLedger)
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := s.putEntry(lb, e); err != nil {
				return err
			}
		}
		var cb *bolt.Bucket
		for _, e := range fold {
			if err := lb.Delete(seqKey(e.Seq)); err != nil {
				return err
			}
			if e.QueryID == "" || (e.Kind != "spend" && e.Kind != "refund") {
				continue
			}
			if cb == nil {
				if cb, err = tx.CreateBucketIfNotExists(bucketCharges); err != nil {
					return err
				}
			}
			if c, ok := m.charges[e.QueryID]; ok {
				if err := s.putCharge(cb, e.QueryID, c); err != nil {
					return err
				}
			}
		}
		return s.putHead(tx, head)
	})
	if err != nil {
		return fmt.Errorf("save budget: %w", err)
	}
	m.head = head
	m.entries = m.entries[:0:0]
	m.entries = append(m.entries, all[:len(all)-len(es)]...)
	for _, e := range es {
		m.add(e)
	}
	return nil
}

func (s *Store) putCharge(cb *bolt.Bucket, qid string, c *charge) error {
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return cb.Put([]byte(qid), s.seal(pad(raw, 64), adFor("charge", []byte(qid))))
}

func cloneGrants(g map[string]float64) map[string]float64 {
	if g == nil {
		return nil
	}
	out := make(map[string]float64, len(g))
	for k, v := range g {
		out[k] = v
	}
	return out
}

func (s *Store) now() string { return s.opts.Now().UTC().Format(time.RFC3339Nano) }

// renew applies the renewal policy (Options.RenewEvery): when a period has
// passed, the balance goes back to the initial budget, once per elapsed
// period boundary, with a "renew" ledger entry.
func (s *Store) renew() error {
	every := s.opts.RenewEvery
	if every <= 0 {
		return nil
	}
	h := &s.budget.head
	now := s.opts.Now()
	if h.PeriodStart.IsZero() {
		h.PeriodStart = now.UTC()
		return nil // recorded with the event that follows
	}
	if now.Before(h.PeriodStart.Add(every)) {
		return nil
	}
	periods := now.Sub(h.PeriodStart) / every
	h.PeriodStart = h.PeriodStart.Add(periods * every)
	return s.appendEntries(api.LedgerEntry{Time: s.now(), Kind: "renew", Amount: h.Initial, Balance: h.Initial,
		Reason: "renewal period " + every.String() + " elapsed"})
}

// budgetReady locks the budget for an event: the store must be unsealed and
// its ledger sound. The caller unlocks s.bmu.
func (s *Store) budgetReady() error {
	s.mu.RLock()
	sealed := s.aead == nil
	s.mu.RUnlock()
	if sealed {
		return ErrSealed
	}
	s.bmu.Lock()
	if err := s.budget.err; err != nil {
		s.bmu.Unlock()
		return err
	}
	if err := s.renew(); err != nil {
		s.bmu.Unlock()
		return err
	}
	return nil
}

// Charge is what a spend asks of the budget.
type Charge struct {
	Cost    float64
	QueryID string
	Service string
	// Question is the hex SHA-256 of the exact question the charge pays for
	// (service, canonical query, bounds, ε, sensitivity, noise parameters);
	// required with a QueryID: an id buys one question.
	Question string
	// Participants is the population a noise share is claimed for (0: the
	// answer carries no share).
	Participants int
	// Grant is the id of the grant that pays (empty: the owner), with its ε
	// cap and its own participants cap (0: the PM's policy).
	Grant      string
	GrantCap   float64
	GrantParts int
}

func (c Charge) validate(minCost float64) error {
	var errs []error
	switch {
	case math.IsNaN(c.Cost) || math.IsInf(c.Cost, 0) || c.Cost < 0:
		errs = append(errs, fmt.Errorf("privacy_cost must be a finite number > 0, not %v", c.Cost))
	case c.Cost < minCost:
		errs = append(errs, fmt.Errorf("privacy_cost %v is below this PM's least ε per answer, %v", c.Cost, minCost))
	}
	if c.QueryID != "" && !questionRE.MatchString(c.Question) {
		errs = append(errs, errors.New("question must be the 64-hex SHA-256 of the query when a query_id is given"))
	}
	if c.QueryID == "" && c.Question != "" {
		errs = append(errs, errors.New("question needs a query_id"))
	}
	if c.Participants < 0 || c.GrantParts < 0 {
		errs = append(errs, errors.New("participants must be ≥ 0"))
	}
	if len(c.QueryID) > 200 || len(c.Service) > 100 || len(c.Grant) > 100 {
		errs = append(errs, errors.New("query_id, service or grant id too long"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Spend charges c.Cost when the balance (and the paying grant's cap) allow.
// Each charge gets a random 256-bit noise seed, kept with it: a service keys
// its noise with it, so a replayed question gets the very same noise and
// retrying cannot average the noise away.
// A query id buys one question: a retry of the same question is answered
// with the first charge's outcome and not charged again (Replayed); the same
// id with another question or cost is ErrConflict; an id whose charge was
// refunded is charged anew. Denials are recorded, not remembered. The
// participants a noise share may assume are min(claimed, the owner's policy,
// the grant's cap), recorded with the charge.
func (s *Store) Spend(c Charge) (api.SpendResponse, error) {
	if err := c.validate(s.opts.MinCost); err != nil {
		return api.SpendResponse{}, err
	}
	if err := s.budgetReady(); err != nil {
		return api.SpendResponse{}, err
	}
	defer s.bmu.Unlock()
	m := s.budget
	if c.QueryID != "" {
		if old, ok := m.charges[c.QueryID]; ok && !old.Refunded {
			if old.Question != c.Question || old.Amount != c.Cost {
				return api.SpendResponse{}, fmt.Errorf("%w: query id %q paid for another question before", ErrConflict, c.QueryID)
			}
			return api.SpendResponse{Success: true, Remaining: m.head.Balance, Replayed: true, Participants: old.Participants, NoiseSeed: old.Seed}, nil
		}
	}
	parts := 0
	if c.Participants > 0 {
		parts = min(c.Participants, s.opts.MaxParticipants)
		if c.GrantParts > 0 {
			parts = min(parts, c.GrantParts)
		}
	}
	e := api.LedgerEntry{Time: s.now(), Service: c.Service, QueryID: c.QueryID, Question: c.Question, Amount: c.Cost,
		Participants: parts, Grant: c.Grant, Balance: m.head.Balance}
	switch {
	case m.head.Balance-c.Cost < -costSlack:
		e.Kind, e.Reason = "denied", "balance"
	case c.Grant != "" && m.grants[c.Grant]+c.Cost > c.GrantCap+costSlack:
		e.Kind, e.Reason = "denied", "the grant's ε cap"
	default:
		e.Kind, e.Balance = "spend", m.head.Balance-c.Cost
		if e.Balance < costSlack {
			e.Balance = 0
		}
		e.Seed = hex.EncodeToString(randomBytes(32))
	}
	if err := s.appendEntries(e); err != nil {
		return api.SpendResponse{}, err
	}
	ok := e.Kind == "spend"
	res := api.SpendResponse{Success: ok, Remaining: m.head.Balance}
	if ok {
		res.Participants, res.NoiseSeed = parts, e.Seed
	}
	return res, nil
}

// Paid reports whether queryID has bought question for cost (so that a
// Spend of the same would be a replay, charged nothing).
func (s *Store) Paid(queryID, question string, cost float64) (bool, error) {
	if err := s.budgetReady(); err != nil {
		return false, err
	}
	defer s.bmu.Unlock()
	old, ok := s.budget.charges[queryID]
	return queryID != "" && ok && !old.Refunded && old.Question == question && old.Amount == cost, nil
}

// GrantSpent is the ε the grant with this id has spent, all time.
func (s *Store) GrantSpent(id string) (float64, error) {
	if err := s.budgetReady(); err != nil {
		return 0, err
	}
	defer s.bmu.Unlock()
	return s.budget.grants[id], nil
}

// Ledger returns the budget's balance, its kept history, what compaction
// folded, and the chain's head for the owner to remember.
func (s *Store) Ledger() (api.Ledger, error) {
	if err := s.budgetReady(); err != nil {
		return api.Ledger{}, err
	}
	defer s.bmu.Unlock()
	m := s.budget
	spent := m.head.Base.Spent
	for _, e := range m.entries {
		switch e.Kind {
		case "spend":
			spent += e.Amount
		case "refund":
			spent -= e.Amount
		}
	}
	l := api.Ledger{Initial: m.head.Initial, Remaining: m.head.Balance, Spent: math.Max(0, spent),
		Entries: append([]api.LedgerEntry{}, m.entries...), Head: &api.LedgerHead{Seq: m.head.Seq, Hash: m.head.Head}}
	if m.head.Base.Seq > 0 {
		l.Compacted = &api.LedgerBase{Seq: m.head.Base.Seq, Entries: m.head.Base.Entries, Spent: m.head.Base.Spent}
	}
	return l, nil
}

// LedgerHead is the chain's head (nil while sealed) and, when the ledger
// fails its check, why.
func (s *Store) LedgerHead() (*api.LedgerHead, error) {
	s.mu.RLock()
	sealed := s.aead == nil
	s.mu.RUnlock()
	if sealed {
		return nil, nil
	}
	s.bmu.Lock()
	defer s.bmu.Unlock()
	if s.budget == nil {
		return nil, nil
	}
	return &api.LedgerHead{Seq: s.budget.head.Seq, Hash: s.budget.head.Head}, s.budget.err
}
