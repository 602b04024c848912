package store

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/e-mission/upc/services/pm/api"
)

func reopen(t *testing.T, s *Store, dir string, o Options) *Store {
	t.Helper()
	s.Close()
	return openTest(t, dir, o)
}

// The invariants of the budget over random sequences of spends, retries,
// replays with another question or cost, spends without an id, renewals,
// compaction and restarts:
//   - the balance is never below zero;
//   - the ε charged (the ledger's spent total) is never less than the ε of
//     the distinct answers given;
//   - no query id is ever charged for two questions;
//   - a restart gives back the same balance, and the chain verifies.
func TestBudgetInvariants(t *testing.T) {
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 7))
		dir := t.TempDir()
		o := Options{InitialBudget: 1, LedgerKeep: 3, NoSync: true}
		s := openTest(t, dir, o)
		questions := map[string]string{} // query id → the question it was answered for
		costs := map[string]float64{}    // query id → what it was charged
		answered := 0.0                  // ε of the distinct answers given
		charged := map[string]string{}   // query id → question, from the ledger
		for step := range 300 {
			id := string(rune('a' + rng.IntN(12)))
			question := id + string(rune('0'+rng.IntN(3)))
			cost := []float64{0.001, 0.01, 0.05, 0.2, 0.3}[rng.IntN(5)]
			c := q(cost, id, question)
			switch rng.IntN(10) {
			case 0:
				c = Charge{Cost: cost, Service: "count"} // the original's spend, no id
			case 1:
				s = reopen(t, s, dir, o)
				continue
			}
			res, err := s.Spend(c)
			switch {
			case cost < DefaultMinCost:
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("seed %d step %d: a spend of %v below the least ε: %+v %v", seed, step, cost, res, err)
				}
				continue
			case errors.Is(err, ErrConflict):
				if prev, ok := questions[id]; !ok || (prev == question && costs[id] == cost) {
					t.Fatalf("seed %d step %d: conflict for %s (%s, %v) with no other question charged", seed, step, id, question, cost)
				}
				continue
			case err != nil:
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			if res.Remaining < 0 {
				t.Fatalf("seed %d step %d: balance %v", seed, step, res.Remaining)
			}
			if res.Success && !res.Replayed {
				answered += cost
				if c.QueryID != "" {
					if prev, ok := questions[id]; ok {
						t.Fatalf("seed %d step %d: id %s charged again (first for %s, now %s)", seed, step, id, prev, question)
					}
					questions[id], costs[id] = question, cost
				}
			}
			if res.Replayed && questions[id] != question {
				t.Fatalf("seed %d step %d: id %s replayed for %s, charged for %s", seed, step, id, question, questions[id])
			}
		}
		l, err := s.Ledger()
		if err != nil {
			t.Fatal(err)
		}
		if l.Spent+1e-9 < answered {
			t.Errorf("seed %d: charged %v for answers worth %v", seed, l.Spent, answered)
		}
		for _, e := range l.Entries {
			if e.Kind == "spend" && e.QueryID != "" {
				if prev, ok := charged[e.QueryID]; ok && prev != e.Question {
					t.Errorf("seed %d: id %s charged for two questions", seed, e.QueryID)
				}
				charged[e.QueryID] = e.Question
			}
		}
		if len(l.Entries) > 2*o.LedgerKeep {
			t.Errorf("seed %d: %d entries kept, want at most %d", seed, len(l.Entries), 2*o.LedgerKeep)
		}
		before := l.Remaining
		s = reopen(t, s, dir, o)
		l2, err := s.Ledger()
		if err != nil || l2.Remaining != before || *l2.Head != *l.Head || l2.Spent != l.Spent {
			t.Errorf("seed %d: after a restart %+v, %v; before remaining %v head %+v spent %v", seed, l2, err, before, l.Head, l.Spent)
		}
	}
}

// Compaction keeps the ledger bounded, its totals exact, and every query id
// bound to its question for ever.
func TestLedgerCompaction(t *testing.T) {
	dir := t.TempDir()
	o := Options{InitialBudget: 100, LedgerKeep: 4}
	s := openTest(t, dir, o)
	for i := range 30 {
		id := string(rune('A' + i))
		if r, err := s.Spend(q(0.5, id, id)); err != nil || !r.Success {
			t.Fatalf("spend %d: %+v %v", i, r, err)
		}
	}
	l, _ := s.Ledger()
	if len(l.Entries) > 8 || l.Compacted == nil || l.Compacted.Entries+uint64(len(l.Entries)) != 30 {
		t.Fatalf("kept %d entries, compacted %+v", len(l.Entries), l.Compacted)
	}
	if math.Abs(l.Spent-15) > 1e-9 || math.Abs(l.Remaining-85) > 1e-9 {
		t.Fatalf("spent %v remaining %v, want 15 and 85", l.Spent, l.Remaining)
	}
	s = reopen(t, s, dir, o)
	// The first id was folded away long ago: still one question only.
	if r, err := s.Spend(q(0.5, "A", "A")); err != nil || !r.Replayed || math.Abs(r.Remaining-85) > 1e-9 {
		t.Fatalf("a folded id's retry: %+v %v", r, err)
	}
	if _, err := s.Spend(q(0.5, "A", "another")); !errors.Is(err, ErrConflict) {
		t.Fatalf("a folded id paid for another question: %v", err)
	}
	var records int
	s.db.View(func(tx *bolt.Tx) error { records = tx.Bucket(bucketLedger).Stats().KeyN; return nil })
	if records > 8 {
		t.Errorf("%d ledger records on disk, want at most 8", records)
	}
}

func TestSpendRules(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{InitialBudget: 1, MaxParticipants: 500})
	for _, c := range []Charge{
		{Cost: math.NaN()}, {Cost: math.Inf(1)}, {Cost: -1}, {Cost: 0}, {Cost: 1e-10},
		{Cost: 0.1, QueryID: "x"},                      // no question
		{Cost: 0.1, QueryID: "x", Question: "not-hex"}, // not a digest
		{Cost: 0.1, Question: strings.Repeat("a", 64)}, // a question without an id
		{Cost: 0.1, QueryID: "x", Participants: -1, Question: strings.Repeat("a", 64)},
	} {
		if _, err := s.Spend(c); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", c, err)
		}
	}
	// Participants: min(claimed, the owner's policy, the grant's cap).
	r, err := s.Spend(Charge{Cost: 0.1, QueryID: "p", Question: strings.Repeat("b", 64), Participants: 1e9})
	if err != nil || r.Participants != 500 {
		t.Fatalf("a billion claimed: %+v %v, want 500", r, err)
	}
	r2, _ := s.Spend(Charge{Cost: 0.1, QueryID: "p", Question: strings.Repeat("b", 64), Participants: 1e9})
	if !r2.Replayed || r2.NoiseSeed != r.NoiseSeed || len(r.NoiseSeed) != 64 {
		t.Fatalf("a replay must carry the first charge's noise seed: %+v then %+v", r, r2)
	}
	r, _ = s.Spend(Charge{Cost: 0.1, QueryID: "g", Question: strings.Repeat("c", 64), Participants: 300, Grant: "G", GrantCap: 0.25, GrantParts: 100})
	if !r.Success || r.Participants != 100 {
		t.Fatalf("grant's participants cap: %+v", r)
	}
	// The grant's ε cap: 0.1 spent, 0.1 more fits, a third does not.
	if r, _ := s.Spend(Charge{Cost: 0.1, Grant: "G", GrantCap: 0.25}); !r.Success {
		t.Fatal("within the grant's cap: denied")
	}
	if r, _ := s.Spend(Charge{Cost: 0.1, Grant: "G", GrantCap: 0.25}); r.Success {
		t.Fatal("beyond the grant's cap: charged")
	}
	if spent, _ := s.GrantSpent("G"); math.Abs(spent-0.2) > 1e-12 {
		t.Fatalf("grant spent %v, want 0.2", spent)
	}
	// At zero balance nothing is charged.
	s.Spend(Charge{Cost: 0.7})
	if r, _ := s.Spend(Charge{Cost: 0.01}); r.Success || r.Remaining != 0 {
		t.Fatalf("at zero: %+v", r)
	}
}

// tamper opens the closed store's file and lets f change it.
func tamper(t *testing.T, dir string, f func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(f); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// An edited, removed or reordered entry, or a budget record rolled back to
// an earlier copy, is found on unseal, and then no spend is answered.
func TestLedgerTamperingIsDetected(t *testing.T) {
	o := Options{InitialBudget: 1}
	setup := func(t *testing.T) (string, []byte) {
		dir := t.TempDir()
		s := openTest(t, dir, o)
		s.Spend(q(0.1, "a", "a"))
		var oldHead []byte
		s.db.View(func(tx *bolt.Tx) error {
			oldHead = append([]byte{}, tx.Bucket(bucketState).Get(keyBudget)...)
			return nil
		})
		s.Spend(q(0.2, "b", "b"))
		s.Spend(q(0.3, "c", "c"))
		s.Close()
		return dir, oldHead
	}
	cases := map[string]func(oldHead []byte) func(tx *bolt.Tx) error{
		"entry removed": func([]byte) func(tx *bolt.Tx) error {
			return func(tx *bolt.Tx) error { return tx.Bucket(bucketLedger).Delete(seqKey(2)) }
		},
		"entries swapped": func([]byte) func(tx *bolt.Tx) error {
			return func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketLedger)
				e1, e2 := append([]byte{}, b.Get(seqKey(1))...), append([]byte{}, b.Get(seqKey(2))...)
				b.Put(seqKey(1), e2)
				return b.Put(seqKey(2), e1)
			}
		},
		"entry edited": func([]byte) func(tx *bolt.Tx) error {
			return func(tx *bolt.Tx) error {
				v := append([]byte{}, tx.Bucket(bucketLedger).Get(seqKey(3))...)
				v[len(v)-1] ^= 1
				return tx.Bucket(bucketLedger).Put(seqKey(3), v)
			}
		},
		"budget record rolled back": func(old []byte) func(tx *bolt.Tx) error {
			return func(tx *bolt.Tx) error { return tx.Bucket(bucketState).Put(keyBudget, old) }
		},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			dir, old := setup(t)
			tamper(t, dir, f(old))
			s := openTest(t, dir, o)
			if _, err := s.Spend(q(0.01, "d", "d")); !errors.Is(err, ErrLedger) {
				t.Fatalf("spend after tampering: %v, want ErrLedger", err)
			}
			if _, err := s.Ledger(); !errors.Is(err, ErrLedger) {
				t.Fatalf("ledger after tampering: %v", err)
			}
			if _, err := s.LedgerHead(); !errors.Is(err, ErrLedger) {
				t.Fatalf("head after tampering: %v", err)
			}
		})
	}
	// A whole volume copied back is consistent with itself; what gives it
	// away is its head, older than the one its owner saw.
	t.Run("whole volume rolled back", func(t *testing.T) {
		dir := t.TempDir()
		s := openTest(t, dir, o)
		s.Spend(q(0.1, "a", "a"))
		s.Close()
		copyFile(t, filepath.Join(dir, FileName), filepath.Join(dir, "old"))
		s = openTest(t, dir, o)
		s.Spend(q(0.2, "b", "b"))
		seen, _ := s.LedgerHead()
		s.Close()
		copyFile(t, filepath.Join(dir, "old"), filepath.Join(dir, FileName))
		s = openTest(t, dir, o)
		now, err := s.LedgerHead()
		if err != nil || now.Seq >= seen.Seq {
			t.Fatalf("rolled-back head %+v (%v), owner saw %+v", now, err, seen)
		}
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A volume written before the ledger became a chain keeps its history.
func TestBudgetMigratesFromV1(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{InitialBudget: 1})
	v1 := budgetState{Initial: 1, Balance: 0.7, Entries: []api.LedgerEntry{
		{Time: "2026-01-01T00:00:00Z", Kind: "spend", Service: "count", QueryID: "old", Amount: 0.3, Balance: 0.7},
	}, Charges: map[string]*charge{"old": {Amount: 0.3, Service: "count"}}}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketLedger); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return err
		}
		raw, err := json.Marshal(v1) // the first version kept the ledger inside
		if err != nil {
			return err
		}
		return tx.Bucket(bucketState).Put(keyBudget, s.seal(pad(raw, padBlock), adFor("state", keyBudget)))
	}); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir, Options{InitialBudget: 1})
	l, err := s.Ledger()
	if err != nil || l.Remaining != 0.7 || len(l.Entries) != 1 || l.Entries[0].QueryID != "old" || l.Head.Seq != 1 {
		t.Fatalf("migrated ledger %+v, %v", l, err)
	}
	// The old charge had no question: its id cannot buy another.
	if _, err := s.Spend(q(0.3, "old", "x")); !errors.Is(err, ErrConflict) {
		t.Fatalf("an old id bought a question: %v", err)
	}
	s = reopen(t, s, dir, Options{InitialBudget: 1})
	if _, err := s.LedgerHead(); err != nil {
		t.Fatalf("migrated chain fails: %v", err)
	}
}
