package diary

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/e-mission/upc/services/pipeline"
	gt "github.com/e-mission/upc/services/pipeline/groundtruth"
)

// RunFile loads a day file (a JSON array of timeseries entries) into an
// in-memory store, runs the whole pipeline as e-mission's tests do (seeded
// generator, one run) and returns the diary of date (YYYY-MM-DD).
func RunFile(ctx context.Context, r io.Reader, date string) ([]gt.Trip, error) {
	d, err := time.Parse("2006-01-02", date)
	if err != nil {
		return nil, fmt.Errorf("run day: date %q is not YYYY-MM-DD: %w", date, err)
	}
	es, err := pipeline.ReadEntries(r)
	if err != nil {
		return nil, err
	}
	const user = "00000000000000000000000000000000"
	for i := range es {
		es[i].UserID = user
	}
	st := pipeline.NewMemStore()
	if err := st.Insert(ctx, pipeline.Timeseries, es); err != nil {
		return nil, err
	}
	run := &pipeline.Run{Store: st, UserID: user, Seed: pipeline.DefaultSeed}
	if err := run.Execute(ctx); err != nil {
		return nil, err
	}
	return Trips(ctx, st, d.Year(), int(d.Month()), d.Day())
}
