package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Run is one pipeline run for one user over a Store.
type Run struct {
	Store  Store
	UserID string
	// Now is the run's clock (Unix seconds); time.Now when nil.
	Now func() float64
	// Seed seeds the iOS fill-in generator (numpy's legacy MT19937);
	// e-mission's tests use 61297777.
	Seed   uint32
	Logger *slog.Logger
	// FilterAccuracy turns on the accuracy filter stage (off in e-mission).
	FilterAccuracy bool

	rng    *MT19937
	runTS  float64
	timing map[string]time.Duration

	// The raw streams several stages read whole, fetched once per run.
	locs        []Pt
	motions     []*Motion
	transitions []*Transition
}

func (r *Run) allLocations(ctx context.Context) ([]Pt, error) {
	if r.locs == nil {
		l, err := fetchLocations(ctx, r.Store, KeyFilteredLocation, FieldTS, nil, nil)
		if err != nil {
			return nil, err
		}
		r.locs = l
	}
	return r.locs, nil
}

func (r *Run) allMotions(ctx context.Context) ([]*Motion, error) {
	if r.motions == nil {
		m, err := fetchMotions(ctx, r.Store, FieldTS, nil, nil)
		if err != nil {
			return nil, err
		}
		r.motions = m
	}
	return r.motions, nil
}

func (r *Run) allTransitions(ctx context.Context) ([]*Transition, error) {
	if r.transitions == nil {
		t, err := fetchTransitions(ctx, r.Store, FieldTS, nil, nil)
		if err != nil {
			return nil, err
		}
		r.transitions = t
	}
	return r.transitions, nil
}

// DefaultSeed is the seed e-mission's tests give numpy before running.
const DefaultSeed = 61297777

func (r *Run) now() float64 {
	if r.runTS != 0 {
		return r.runTS
	}
	if r.Now != nil {
		return r.Now()
	}
	return float64(time.Now().UnixMicro()) / 1e6
}

func (r *Run) markDone(ctx context.Context, s State, last *float64) error {
	s.LastTSRun = r.now()
	if last != nil {
		s.LastProcessedTS = last
	}
	return r.Store.SetState(ctx, s)
}

// Stage is one pipeline step.
type Stage struct {
	Name string
	Fn   func(*Run, context.Context) error
}

// Stages lists the pipeline's steps in order.
var Stages = []Stage{
	{StageUsercache, (*Run).moveUsercache},
	{StageAccuracy, (*Run).filterAccuracy},
	{StageTrips, (*Run).segmentTrips},
	{StageSections, (*Run).segmentSections},
	{StageSmoothing, (*Run).smoothJumps},
	{StageCleanResamp, (*Run).cleanAndResample},
}

// Execute runs every stage in order; each resumes where its last run ended.
func (r *Run) Execute(ctx context.Context) error {
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	r.runTS = 0
	r.runTS = r.now()
	if r.rng == nil {
		seed := r.Seed
		if seed == 0 {
			seed = DefaultSeed
		}
		r.rng = NewMT19937(seed)
	}
	r.timing = map[string]time.Duration{}
	r.locs, r.motions, r.transitions = nil, nil, nil
	for _, s := range Stages {
		t0 := time.Now()
		if err := r.stage(ctx, s); err != nil {
			return fmt.Errorf("pipeline stage %s: %w", s.Name, err)
		}
		r.timing[s.Name] = time.Since(t0)
		r.Logger.Debug("stage done", "stage", s.Name, "took", r.timing[s.Name])
	}
	return nil
}

// stage runs one stage; data the algorithms did not expect must fail the
// run, not the process (the service runs many users' pipelines).
func (r *Run) stage(ctx context.Context, s Stage) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("unexpected data: %v", p)
		}
	}()
	return s.Fn(r, ctx)
}

// Timing returns how long each stage of the last Execute took.
func (r *Run) Timing() map[string]time.Duration { return r.timing }
