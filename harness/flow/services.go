package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/harness/runner"
	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/metrics"
	pipeapi "github.com/e-mission/upc/services/pipeline/api"
	"github.com/e-mission/upc/services/pipeline/pmstore"
)

// Query parameters of the metrics and count steps: a cost well inside the
// PM's default budget (1.0) so every step of a scenario can be charged.
const (
	// metricsOffsetFactor sets each mode's offset to this many times its
	// sensitivity Δf, whatever the metric: each mode then costs
	// −ln(α)·days·Δf/offset = 0.69/20 ≈ 0.035 for one day.
	metricsOffsetFactor = 20.0
	metricsAlpha        = 0.5
	countOffset         = 100.0 // cost −ln(α)/offset ≈ 0.03
	countAlpha          = 0.05
	// countBox is the half-width, in degrees, of the box around the first
	// trip's start that the count step asks about (about 500 m).
	countBox = 0.005
)

// withService launches service for the user through the router, bound to
// their PM by a grant, calls call with its instance, and deletes the
// instance and revokes the grant whatever happened (client.WithService). The outcome records both
// times.
func (s *session) withService(ctx context.Context, service string, call func(inst api.Instance) (runner.Outcome, error)) (runner.Outcome, error) {
	if s.pm == nil {
		return runner.Outcome{}, errNoPM
	}
	var (
		o                runner.Outcome
		ran              bool
		launched, called time.Duration
	)
	t0 := time.Now()
	err := s.c.WithService(ctx, service, *s.pm, func(inst api.Instance) error {
		launched, ran = time.Since(t0), true
		t1 := time.Now()
		var err error
		o, err = call(inst)
		called = time.Since(t1)
		return err
	})
	if !ran {
		return runner.Outcome{}, err
	}
	if o.Values == nil {
		o.Values = map[string]float64{}
	}
	o.Values["launch_ms"] = float64(launched.Microseconds()) / 1000
	o.Values["call_ms"] = float64(called.Microseconds()) / 1000
	return o, err
}

// pipeline has the pipeline service run on the user's PM, then reads the
// trips it wrote for the ground truth's day back from the PM, as the owner,
// and compares them with the ground truth (CheckTrips). Trips that differ do
// not fail the step: the scenario's trips_match_ground_truth judges them.
func (s *session) pipeline(ctx context.Context) (runner.Outcome, error) {
	o, err := s.withService(ctx, client.PipelineService, func(inst api.Instance) (runner.Outcome, error) {
		res, err := s.c.RunPipeline(ctx, inst, pipeapi.Request{PMAddress: s.pm.Address})
		if err != nil {
			return runner.Outcome{}, fmt.Errorf("run pipeline: %w", err)
		}
		return runner.Outcome{Values: map[string]float64{
			"cleaned_trips":       float64(res.Written["analysis/cleaned_trip"]),
			"sections":            float64(res.Written["analysis/cleaned_section"]),
			"recreated_locations": float64(res.Written["analysis/recreated_location"]),
		}}, nil
	})
	if err != nil {
		return o, err
	}
	s.sections = int(o.Values["sections"])
	t0 := time.Now()
	tc, err := CheckTrips(ctx, pmstore.New(s.c.PM(s.pm.Address), s.u.ID), s.u.GroundTruthPath)
	o.Values["check_ms"] = float64(time.Since(t0).Microseconds()) / 1000
	if err != nil {
		return o, fmt.Errorf("compare the trips with the ground truth: %w", err)
	}
	o.Trips = tc
	o.Values[runner.TripsValue] = float64(tc.Got)
	o.Note = fmt.Sprintf("%s: %d trips, ground truth %d: %s (wrote %d cleaned trips, %d sections)",
		tc.Date, tc.Got, tc.Want, tc.Verdict(), int(o.Values["cleaned_trips"]), int(o.Values["sections"]))
	return o, nil
}

func (s *session) metrics(ctx context.Context, st scenario.Step) (runner.Outcome, error) {
	tr := s.u.Truth
	if tr.Year == 0 {
		return runner.Outcome{}, errors.New("metrics: the day's ground truth has no trip to date the query by")
	}
	// The day itself: [day, day+1), one day of sensitivity.
	day := time.Date(tr.Year, time.Month(tr.Month), tr.Day, 0, 0, 0, 0, time.UTC)
	next := day.AddDate(0, 0, 1)
	bound := func(t time.Time) metrics.DateBound {
		y, m, d := t.Year(), int(t.Month()), t.Day()
		return metrics.DateBound{Year: &y, Month: &m, Day: &d, Timezone: tr.Timezone}
	}
	// The modes cleaned sections are named by (e-mission's sensed modes): the
	// original's CAR, WALK, ... name none of them and always answer 0.
	modes := []string{"IN_VEHICLE", "BICYCLING", "ON_FOOT", "WALKING", "RUNNING", "STILL", "UNKNOWN", "AIR_OR_HSR"}
	req := metrics.LocalDateRequest{PMAddress: s.pm.Address, UUID: s.u.ID, StartTime: bound(day), EndTime: bound(next),
		Freq: st.Freq, Metric: st.Metric, Offset: map[string]float64{}, Alpha: map[string]float64{}}
	for _, m := range modes {
		req.Offset[m], req.Alpha[m] = metrics.DeltaF[st.Metric][m]*metricsOffsetFactor, metricsAlpha
	}
	return s.withService(ctx, client.MetricsService, func(inst api.Instance) (runner.Outcome, error) {
		res, err := s.c.Metrics(ctx, inst, req)
		if err != nil {
			return runner.Outcome{}, fmt.Errorf("metrics %s %s: %w", st.Metric, st.Freq, err)
		}
		o := runner.Outcome{Values: map[string]float64{"privacy_cost": res.PrivacyCost}}
		var parts []string
		total := 0.0
		for _, m := range modes {
			v, _ := res.Results[m].(float64)
			o.Values[m] = v
			total += v
			parts = append(parts, fmt.Sprintf("%s %g", m, v))
		}
		o.Note = fmt.Sprintf("%s %s of %s: %s; cost %.3f", st.Freq, st.Metric, day.Format("2006-01-02"), strings.Join(parts, ", "), res.PrivacyCost)
		// A day's sections counted by mode: some, and no more than the
		// pipeline wrote (a section of another mode or date is not asked).
		if st.Metric == metrics.Count && s.sections > 0 && (total < 1 || total > float64(s.sections)) {
			return o, fmt.Errorf("metrics count of %s: %g sections by mode, want 1 to the %d the pipeline wrote", day.Format("2006-01-02"), total, s.sections)
		}
		return o, nil
	})
}

// count asks twice within the day's trips: around the first trip's start,
// where the user was (answer 1), and around its mirror across the equator
// (same longitude, opposite latitude: open ocean or another continent for
// every real day here), where they were not (answer 0). Either answer wrong
// fails the step.
func (s *session) count(ctx context.Context) (runner.Outcome, error) {
	tr := s.u.Truth
	if tr.EndTs == 0 {
		return runner.Outcome{}, errors.New("count: the day's ground truth has no trip to ask about")
	}
	lon, lat := tr.FirstStart[0], tr.FirstStart[1]
	asks := []struct {
		name     string
		lon, lat float64
		want     int64
	}{
		{"here", lon, lat, 1},
		{"mirror", lon, -lat, 0},
	}
	return s.withService(ctx, client.CountService, func(inst api.Instance) (runner.Outcome, error) {
		o := runner.Outcome{Values: map[string]float64{}}
		var notes []string
		for _, a := range asks {
			region, _ := json.Marshal(map[string]any{"geometry": box(a.lon, a.lat, countBox)})
			req := count.Request{PMAddress: s.pm.Address, UUID: s.u.ID, Query: count.Query{
				Offset: countOffset, Alpha: countAlpha, StartTs: count.Timestamp(tr.StartTs), EndTs: count.Timestamp(tr.EndTs), SelRegion: region}}
			res, err := s.c.Count(ctx, inst, req)
			if err != nil {
				return o, fmt.Errorf("count %s: %w", a.name, err)
			}
			o.Values[a.name] = float64(*res.Results)
			o.Values["privacy_cost"] += res.PrivacyCost
			notes = append(notes, fmt.Sprintf("%s %d", a.name, *res.Results))
			if *res.Results != a.want {
				return o, fmt.Errorf("count %s (box around %.4f,%.4f during the day's trips): answered %d, want %d", a.name, a.lon, a.lat, *res.Results, a.want)
			}
		}
		o.Note = strings.Join(notes, ", ") + fmt.Sprintf("; cost %.3f", o.Values["privacy_cost"])
		return o, nil
	})
}

// box is a GeoJSON polygon: a square of half-width d degrees around lon, lat.
func box(lon, lat, d float64) map[string]any {
	return map[string]any{"type": "Polygon", "coordinates": [][][2]float64{{
		{lon - d, lat - d}, {lon + d, lat - d}, {lon + d, lat + d}, {lon - d, lat + d}, {lon - d, lat - d},
	}}}
}
