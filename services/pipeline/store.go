package pipeline

import (
	"context"
	"errors"
)

// Collections of a user's data, as in e-mission.
const (
	Timeseries = "timeseries"
	Usercache  = "usercache"
)

// Time fields a query can range over.
const (
	FieldTS      = "data.ts"
	FieldWriteTS = "metadata.write_ts"
)

// Query selects entries of the given keys with Field in [Start, End]
// (inclusive; a nil bound is open), excluding invalid ones, sorted by Field.
type Query struct {
	Collection string // Timeseries when empty
	Keys       []string
	Field      string // FieldTS when empty
	Start, End *float64
}

// Range is a Query helper for a closed range.
func Range(field string, start, end float64) (string, *float64, *float64) { return field, &start, &end }

// State is one pipeline stage's progress for a user.
type State struct {
	Stage           string   `json:"pipeline_stage"`
	LastProcessedTS *float64 `json:"last_processed_ts"`
	LastTSRun       float64  `json:"last_ts_run"`
}

// Store is what the pipeline needs from a user's data: e-mission's
// timeseries and pipeline-state collections, for a single user.
type Store interface {
	Find(ctx context.Context, q Query) ([]Entry, error)
	Insert(ctx context.Context, collection string, entries []Entry) error
	// Update replaces the entry with e.ID (ErrNotFound if there is none).
	Update(ctx context.Context, collection string, e Entry) error
	Delete(ctx context.Context, collection string, ids []string) error
	State(ctx context.Context, stage string) (State, error) // zero State when never run
	SetState(ctx context.Context, s State) error
}

// ErrNotFound is returned by Update for an unknown id.
var ErrNotFound = errors.New("not found")
