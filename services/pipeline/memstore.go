package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
)

// MemStore is an in-memory Store for one user, used by tests, benchmarks and
// `upc pipeline check`. Entries keep their typed data, so no JSON is spent.
type MemStore struct {
	mu     sync.Mutex
	colls  map[string][]*memEntry
	states map[string]State
	seq    int
}

type memEntry struct {
	e   Entry
	seq int
	f   timeFields
}

type timeFields struct{ ts, startTS, endTS, enterTS *float64 }

// timeFielder is implemented by typed data that carries range-queried fields.
type timeFielder interface{ timeFields() timeFields }

func (l *Location) timeFields() timeFields   { return timeFields{ts: &l.TS} }
func (m *Motion) timeFields() timeFields     { return timeFields{ts: &m.TS} }
func (t *Transition) timeFields() timeFields { return timeFields{ts: &t.TS} }

func fieldsOf(d any) timeFields {
	if tf, ok := d.(timeFielder); ok {
		return tf.timeFields()
	}
	var raw []byte
	switch v := d.(type) {
	case json.RawMessage:
		raw = v
	default:
		raw, _ = json.Marshal(v)
	}
	var x struct {
		TS      *float64 `json:"ts"`
		StartTS *float64 `json:"start_ts"`
		EnterTS *float64 `json:"enter_ts"`
		EndTS   *float64 `json:"end_ts"`
	}
	_ = json.Unmarshal(raw, &x)
	return timeFields{ts: x.TS, startTS: x.StartTS, endTS: x.EndTS, enterTS: x.EnterTS}
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore {
	return &MemStore{colls: map[string][]*memEntry{}, states: map[string]State{}}
}

func collName(c string) string {
	if c == "" {
		return Timeseries
	}
	return c
}

func (m *MemStore) value(me *memEntry, field string) (float64, bool) {
	var p *float64
	switch field {
	case FieldWriteTS:
		return me.e.Metadata.WriteTS, true
	case FieldTS:
		p = me.f.ts
	case "data.start_ts":
		p = me.f.startTS
	case "data.enter_ts":
		p = me.f.enterTS
	case "data.end_ts":
		p = me.f.endTS
	}
	if p == nil {
		return 0, false
	}
	return *p, true
}

// Find implements Store.
func (m *MemStore) Find(_ context.Context, q Query) ([]Entry, error) {
	field := q.Field
	if field == "" {
		field = FieldTS
	}
	switch field {
	case FieldWriteTS, FieldTS, "data.start_ts", "data.end_ts", "data.enter_ts":
	default:
		return nil, fmt.Errorf("find: unsupported time field %q", field)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	type hit struct {
		v  float64
		me *memEntry
	}
	var hits []hit
	for _, me := range m.colls[collName(q.Collection)] {
		if me.e.Invalid || (len(q.Keys) > 0 && !slices.Contains(q.Keys, me.e.Metadata.Key)) {
			continue
		}
		v, ok := m.value(me, field)
		if q.Start != nil || q.End != nil {
			if !ok || (q.Start != nil && v < *q.Start) || (q.End != nil && v > *q.End) {
				continue
			}
		}
		hits = append(hits, hit{v, me})
	}
	slices.SortStableFunc(hits, func(a, b hit) int {
		if a.v < b.v {
			return -1
		}
		if a.v > b.v {
			return 1
		}
		return a.me.seq - b.me.seq
	})
	out := make([]Entry, len(hits))
	for i, h := range hits {
		out[i] = h.me.e
	}
	return out, nil
}

// Insert implements Store.
func (m *MemStore) Insert(_ context.Context, coll string, entries []Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := collName(coll)
	for _, e := range entries {
		m.seq++
		m.colls[c] = append(m.colls[c], &memEntry{e: e, seq: m.seq, f: fieldsOf(e.Data)})
	}
	return nil
}

// Update implements Store.
func (m *MemStore) Update(_ context.Context, coll string, e Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, me := range m.colls[collName(coll)] {
		if me.e.ID == e.ID {
			me.e = e
			me.f = fieldsOf(e.Data)
			return nil
		}
	}
	return fmt.Errorf("update %s: %w", e.ID, ErrNotFound)
}

// Delete implements Store.
func (m *MemStore) Delete(_ context.Context, coll string, ids []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := collName(coll)
	m.colls[c] = slices.DeleteFunc(m.colls[c], func(me *memEntry) bool { return slices.Contains(ids, me.e.ID) })
	return nil
}

// State implements Store.
func (m *MemStore) State(_ context.Context, stage string) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.states[stage]
	if !ok {
		return State{Stage: stage}, nil
	}
	return s, nil
}

// SetState implements Store.
func (m *MemStore) SetState(_ context.Context, s State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[s.Stage] = s
	return nil
}

// Count returns how many entries of key the collection holds (for tests).
func (m *MemStore) Count(coll, key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, me := range m.colls[collName(coll)] {
		if me.e.Metadata.Key == key {
			n++
		}
	}
	return n
}
