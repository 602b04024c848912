package flow

import (
	"context"
	"fmt"
	"time"

	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pipeline"
	"github.com/e-mission/upc/services/pipeline/diary"
	gt "github.com/e-mission/upc/services/pipeline/groundtruth"
)

// maxFailed bounds the failed checks a TripCheck names.
const maxFailed = 5

// CheckTrips compares the trips in st, a user's pipeline results (their PM,
// through pipeline/pmstore), with the ground truth at path as `upc pipeline
// check` does: the trips of the ground truth's day, rendered as e-mission's
// diary, against the ground truth's, trip by trip, by e-mission's exact and
// approximate comparisons (services/pipeline/groundtruth).
func CheckTrips(ctx context.Context, st pipeline.Store, path string) (*report.TripCheck, error) {
	b, err := realdata.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ground truth: %w", err)
	}
	want, err := gt.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("ground truth %s: %w", path, err)
	}
	day, err := gt.Day(b)
	if err != nil {
		return nil, fmt.Errorf("ground truth %s: %w", path, err)
	}
	d, err := time.Parse("2006-01-02", day)
	if err != nil {
		return nil, fmt.Errorf("ground truth %s: day %q: %w", path, day, err)
	}
	got, err := diary.Trips(ctx, st, d.Year(), int(d.Month()), d.Day())
	if err != nil {
		return nil, fmt.Errorf("read the trips of %s: %w", day, err)
	}
	return CompareTrips(day, want, got), nil
}

// CompareTrips is how got compares with want, the ground truth of day.
func CompareTrips(day string, want, got []gt.Trip) *report.TripCheck {
	exact, approx := gt.CompareExact(want, got), gt.CompareApprox(want, got)
	c := &report.TripCheck{Date: day, Want: len(want), Got: len(got),
		Exact: exact.OK(), ExactFailures: exact.Failures(), Approx: approx.OK(), ApproxFailures: approx.Failures()}
	switch {
	case !c.Approx:
		c.Failed = approx.FailedChecks(maxFailed)
	case !c.Exact:
		c.Failed = exact.FailedChecks(maxFailed)
	}
	return c
}
