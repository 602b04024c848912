package store

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/e-mission/upc/services/pm/api"
)

// budgetState is the privacy budget, sealed on disk like the documents: the
// ledger tells which services queried when, which is the user's business.
type budgetState struct {
	Initial float64            `json:"initial"`
	Balance float64            `json:"balance"`
	Entries []api.LedgerEntry  `json:"entries"`
	Charges map[string]*charge `json:"charges"` // by query id
	// PeriodStart is when the current renewal period began (the first
	// budget use when renewal is on).
	PeriodStart time.Time `json:"period_start,omitzero"`
}

type charge struct {
	Amount   float64 `json:"amount"`
	Service  string  `json:"service,omitempty"`
	Refunded bool    `json:"refunded,omitempty"`
}

// costSlack absorbs floating-point error: ten spends of 0.1 from 1.0 must all
// succeed although 0.1 is not exact in binary. The balance never goes below
// zero: a spend within the slack of the balance leaves exactly zero.
const costSlack = 1e-9

func (s *Store) loadBudget(tx *bolt.Tx) (*budgetState, error) {
	raw := tx.Bucket(bucketState).Get(keyBudget)
	if raw == nil {
		return &budgetState{Initial: s.opts.InitialBudget, Balance: s.opts.InitialBudget, Charges: map[string]*charge{}}, nil
	}
	plain, err := s.open(raw, adFor("state", keyBudget))
	if err != nil {
		return nil, fmt.Errorf("budget fails authentication")
	}
	if plain, err = unpad(plain); err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	var b budgetState
	if err := json.Unmarshal(plain, &b); err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	if b.Charges == nil {
		b.Charges = map[string]*charge{}
	}
	return &b, nil
}

// saveBudget persists next; the caller swaps it in only on success, so a
// failed write leaves the budget as it was.
func (s *Store) saveBudget(next *budgetState) error {
	raw, err := json.Marshal(next)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketState).Put(keyBudget, s.seal(pad(raw, padBlock), adFor("state", keyBudget)))
	})
}

func (b *budgetState) clone() *budgetState {
	n := &budgetState{Initial: b.Initial, Balance: b.Balance, PeriodStart: b.PeriodStart, Charges: make(map[string]*charge, len(b.Charges)+1)}
	n.Entries = append(make([]api.LedgerEntry, 0, len(b.Entries)+1), b.Entries...)
	for k, v := range b.Charges {
		c := *v
		n.Charges[k] = &c
	}
	return n
}

// renew applies the renewal policy (Options.RenewEvery): when a period has
// passed, the balance goes back to the initial budget, once per elapsed
// period boundary, with a "renew" ledger entry. It reports whether next changed.
func (s *Store) renew(next *budgetState, now time.Time) bool {
	every := s.opts.RenewEvery
	if every <= 0 {
		return false
	}
	if next.PeriodStart.IsZero() {
		next.PeriodStart = now.UTC()
		return true
	}
	if now.Before(next.PeriodStart.Add(every)) {
		return false
	}
	periods := now.Sub(next.PeriodStart) / every
	next.PeriodStart = next.PeriodStart.Add(periods * every)
	next.Balance = next.Initial
	next.Entries = append(next.Entries, api.LedgerEntry{Time: now.UTC().Format(time.RFC3339Nano), Kind: "renew",
		Amount: next.Initial, Balance: next.Balance, Reason: "renewal period " + every.String() + " elapsed"})
	return true
}

// renewed returns the budget with the renewal policy applied, persisted when
// it changed.
func (s *Store) renewed() (*budgetState, error) {
	next := s.budget.clone()
	if !s.renew(next, s.opts.Now()) {
		return s.budget, nil
	}
	if err := s.saveBudget(next); err != nil {
		return nil, fmt.Errorf("save budget: %w", err)
	}
	s.budget = next
	return next, nil
}

func (s *Store) budgetReady() error {
	s.mu.RLock()
	sealed := s.aead == nil
	s.mu.RUnlock()
	if sealed {
		return ErrSealed
	}
	return nil
}

// Spend deducts cost when the balance allows. With a queryID, a repeated
// spend is not charged again and gets the first answer (replayed); a repeat
// with a different cost is ErrConflict. Denials are recorded but not
// remembered, so a retry after a refund may succeed.
func (s *Store) Spend(cost float64, queryID, service string) (api.SpendResponse, error) {
	if math.IsNaN(cost) || math.IsInf(cost, 0) || cost < 0 {
		return api.SpendResponse{}, fmt.Errorf("%w: privacy_cost must be a finite number ≥ 0, not %v", ErrInvalid, cost)
	}
	if err := s.budgetReady(); err != nil {
		return api.SpendResponse{}, err
	}
	s.bmu.Lock()
	defer s.bmu.Unlock()
	b, err := s.renewed()
	if err != nil {
		return api.SpendResponse{}, err
	}
	if queryID != "" {
		if c, ok := b.Charges[queryID]; ok {
			if c.Amount != cost {
				return api.SpendResponse{}, fmt.Errorf("%w: query %q was charged %v before, not %v", ErrConflict, queryID, c.Amount, cost)
			}
			return api.SpendResponse{Success: true, Remaining: b.Balance, Replayed: true}, nil
		}
	}
	next := b.clone()
	e := api.LedgerEntry{Time: s.opts.Now().UTC().Format(time.RFC3339Nano), Service: service, QueryID: queryID, Amount: cost}
	ok := b.Balance-cost >= -costSlack
	if ok {
		next.Balance = math.Max(0, b.Balance-cost)
		e.Kind = "spend"
		if queryID != "" {
			next.Charges[queryID] = &charge{Amount: cost, Service: service}
		}
	} else {
		e.Kind = "denied"
	}
	e.Balance = next.Balance
	next.Entries = append(next.Entries, e)
	if err := s.saveBudget(next); err != nil {
		return api.SpendResponse{}, fmt.Errorf("save budget: %w", err)
	}
	s.budget = next
	return api.SpendResponse{Success: ok, Remaining: next.Balance}, nil
}

// Refund returns what queryID was charged, once (a service that failed after
// spending calls it). The balance never exceeds what was spent back.
func (s *Store) Refund(queryID, reason string) (api.RefundResponse, error) {
	if queryID == "" {
		return api.RefundResponse{}, fmt.Errorf("%w: query_id is required to refund", ErrInvalid)
	}
	if err := s.budgetReady(); err != nil {
		return api.RefundResponse{}, err
	}
	s.bmu.Lock()
	defer s.bmu.Unlock()
	b, err := s.renewed()
	if err != nil {
		return api.RefundResponse{}, err
	}
	c, ok := b.Charges[queryID]
	if !ok || c.Refunded {
		return api.RefundResponse{Refunded: false, Remaining: b.Balance}, nil
	}
	next := b.clone()
	next.Charges[queryID].Refunded = true
	// After a renewal the charge may belong to an earlier period: never refund
	// above the initial budget.
	next.Balance = math.Min(b.Balance+c.Amount, math.Max(b.Initial, b.Balance))
	next.Entries = append(next.Entries, api.LedgerEntry{
		Time: s.opts.Now().UTC().Format(time.RFC3339Nano), Kind: "refund", Service: c.Service,
		QueryID: queryID, Amount: next.Balance - b.Balance, Balance: next.Balance, Reason: reason,
	})
	if err := s.saveBudget(next); err != nil {
		return api.RefundResponse{}, fmt.Errorf("save budget: %w", err)
	}
	s.budget = next
	return api.RefundResponse{Refunded: true, Amount: next.Balance - b.Balance, Remaining: next.Balance}, nil
}

// Ledger returns the budget's balance and history.
func (s *Store) Ledger() (api.Ledger, error) {
	if err := s.budgetReady(); err != nil {
		return api.Ledger{}, err
	}
	s.bmu.Lock()
	defer s.bmu.Unlock()
	b, err := s.renewed()
	if err != nil {
		return api.Ledger{}, err
	}
	entries := append([]api.LedgerEntry{}, b.Entries...)
	spent := 0.0
	for _, e := range b.Entries {
		switch e.Kind {
		case "spend":
			spent += e.Amount
		case "refund":
			spent -= e.Amount
		}
	}
	return api.Ledger{Initial: b.Initial, Remaining: b.Balance, Spent: math.Max(0, spent), Entries: entries}, nil
}
