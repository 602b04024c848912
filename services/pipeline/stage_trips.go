package pipeline

import (
	"context"
	"fmt"
	"slices"
)

// Stage names, as e-mission's PipelineStages.
const (
	StageUsercache   = "USERCACHE"
	StageAccuracy    = "ACCURACY_FILTERING"
	StageTrips       = "TRIP_SEGMENTATION"
	StageSections    = "SECTION_SEGMENTATION"
	StageSmoothing   = "JUMP_SMOOTHING"
	StageCleanResamp = "CLEAN_RESAMPLING"
)

const endFuzz = 5.0 // s: e-mission's END_FUZZ_AVOID_LTE

// untracked-time distance thresholds (m) by method, as at e-mission HEAD.
var untrackedThreshold = map[string]float64{DistFilterName: 1200, TimeFilterName: 2500}

func newEntry(user, key string, ts float64, data any) Entry {
	ld, f := mustLocalTime(ts, DefaultTimeZone)
	return Entry{ID: NewID(), UserID: user, Data: data, Metadata: Metadata{Key: key, Platform: "server",
		Type: "analysis-result", WriteTS: ts, TimeZone: DefaultTimeZone, WriteLocalDT: &ld, WriteFmtTime: f}}
}

func (r *Run) segmentTrips(ctx context.Context) error {
	st := r.Store
	state, err := st.State(ctx, StageTrips)
	if err != nil {
		return err
	}
	end := r.now() - endFuzz
	locs, err := fetchLocations(ctx, st, KeyFilteredLocation, FieldWriteTS, state.LastProcessedTS, &end)
	if err != nil {
		return err
	}
	if len(locs) == 0 {
		return r.markDone(ctx, state, nil)
	}
	// HEAD drops (and invalidates) points whose ts goes backwards.
	var invalid []string
	kept := locs[:0:0]
	for i, p := range locs {
		if i > 0 && p.TS < locs[i-1].TS {
			invalid = append(invalid, p.ID)
			continue
		}
		kept = append(kept, p)
	}
	locs = kept
	in := segInput{}
	if in.motions, err = r.allMotions(ctx); err != nil {
		return err
	}
	if in.transitions, err = r.allTransitions(ctx); err != nil {
		return err
	}
	if in.windowTrans, err = fetchTransitions(ctx, st, FieldWriteTS, state.LastProcessedTS, &end); err != nil {
		return err
	}
	var filters []string
	for _, p := range locs {
		f := p.Filter
		if f == "" {
			f = "time"
		}
		if len(filters) == 0 || filters[len(filters)-1] != f {
			filters = append(filters, f)
		}
	}
	invalidate := func(id string) { invalid = append(invalid, id) }
	// Mixed filters (a user switching phones): segment each block on its own.
	var segs []segPoint
	var lastTS *float64
	method := ""
	for i := 0; i < len(locs); {
		j := i
		f := filterOf(locs[i])
		for j < len(locs) && filterOf(locs[j]) == f {
			j++
		}
		var s []segPoint
		var l *float64
		if f == "distance" {
			s, l = segmentDistFilter(locs[i:j], in, invalidate)
			if method == "" {
				method = DistFilterName
			}
		} else {
			s, l = segmentTimeFilter(locs[i:j], in)
			if method == "" {
				method = TimeFilterName
			}
		}
		segs = append(segs, s...)
		if l != nil && (lastTS == nil || *l > *lastTS) {
			lastTS = l
		}
		i = j
	}
	if err := r.invalidate(ctx, invalid); err != nil {
		return err
	}
	if len(segs) == 0 {
		return r.markDone(ctx, state, nil)
	}
	if err := r.createPlacesAndTrips(ctx, segs, method, in.transitions); err != nil {
		return fmt.Errorf("create places and trips: %w", err)
	}
	if lastTS != nil {
		v := *lastTS + endFuzz
		lastTS = &v
	}
	return r.markDone(ctx, state, lastTS)
}

func filterOf(p Pt) string {
	if p.Filter == "" {
		return "time"
	}
	return p.Filter
}

// invalidate marks filtered locations invalid, as e-mission does with
// out-of-order and spurious points: later queries no longer see them.
func (r *Run) invalidate(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	r.locs = nil // the cached stream still holds them
	es, err := r.Store.Find(ctx, Query{Keys: []string{KeyFilteredLocation}})
	if err != nil {
		return err
	}
	for _, e := range es {
		if slices.Contains(ids, e.ID) {
			e.Invalid = true
			if err := r.Store.Update(ctx, Timeseries, e); err != nil {
				return fmt.Errorf("invalidate %s: %w", e.ID, err)
			}
		}
	}
	return nil
}

func ptrF(v float64) *float64 { return &v }

func (r *Run) lastPlace(ctx context.Context, key string) (*Entry, *Place, error) {
	es, err := r.Store.Find(ctx, Query{Keys: []string{key}})
	if err != nil {
		return nil, nil, err
	}
	for i := len(es) - 1; i >= 0; i-- {
		p, err := Decode[Place](es[i])
		if err != nil {
			return nil, nil, err
		}
		if p.ExitTS == nil {
			es[i].Data = p
			return &es[i], p, nil
		}
	}
	return nil, nil, nil
}

func (r *Run) createPlacesAndTrips(ctx context.Context, segs []segPoint, method string, trans []*Transition) error {
	st := r.Store
	lastEntry, last, err := r.lastPlace(ctx, KeyRawPlace)
	if err != nil {
		return err
	}
	var inserts []Entry
	isNew := false
	if last == nil {
		last = &Place{Source: method}
		e := newEntry(r.UserID, KeyRawPlace, r.now(), last)
		lastEntry = &e
		isNew = true
	}
	flush := func() {
		if isNew {
			inserts = append(inserts, *lastEntry)
		} else {
			_ = st.Update(ctx, Timeseries, *lastEntry)
		}
	}
	link := func(tripKey string, start, end *Location) *Entry {
		trip := &Trip{Source: method}
		te := newEntry(r.UserID, tripKey, r.now(), trip)
		np := &Place{Source: method}
		ne := newEntry(r.UserID, KeyRawPlace, r.now(), np)
		// stitch start
		last.ExitTS, last.ExitLocalDT, last.ExitFmtTime = ptrF(start.TS), ldPtr(start.LocalDT), start.FmtTime
		last.StartingTrip = te.ID
		if last.EnterTS != nil {
			last.Duration = ptrF(*last.ExitTS - *last.EnterTS)
		} else {
			loc := start.Loc
			last.Location = &loc
		}
		trip.StartTS, trip.StartLocalDT, trip.StartFmtTime = start.TS, start.LocalDT, start.FmtTime
		trip.StartPlace, trip.StartLoc = lastEntry.ID, start.Loc
		// stitch end
		trip.EndTS, trip.EndLocalDT, trip.EndFmtTime = end.TS, end.LocalDT, end.FmtTime
		trip.EndPlace, trip.EndLoc = ne.ID, end.Loc
		trip.Duration = trip.EndTS - trip.StartTS
		trip.Distance = Haversine(trip.EndLoc.Coordinates[0], trip.EndLoc.Coordinates[1], trip.StartLoc.Coordinates[0], trip.StartLoc.Coordinates[1])
		np.EnterTS, np.EnterLocalDT, np.EnterFmtTime = ptrF(end.TS), ldPtr(end.LocalDT), end.FmtTime
		np.EndingTrip = te.ID
		loc := end.Loc
		np.Location = &loc
		inserts = append(inserts, te)
		flush()
		return &ne
	}
	for _, sp := range segs {
		start, end := sp.start.Location, sp.end.Location
		if untracked, err := r.foundUntracked(ctx, last, start, method, trans); err != nil {
			return err
		} else if untracked != nil {
			ne := link(KeyRawUntracked, untracked, start)
			lastEntry, last, isNew = ne, ne.Data.(*Place), true
		}
		ne := link(KeyRawTrip, start, end)
		lastEntry, last, isNew = ne, ne.Data.(*Place), true
	}
	flush()
	return st.Insert(ctx, Timeseries, inserts)
}

func ldPtr(l LocalDate) *LocalDate { return &l }

// foundUntracked returns the start of an untracked period between the last
// place and a new trip's start (tracking restarted, or the phone "teleported"
// slower than walking pace), or nil.
func (r *Run) foundUntracked(ctx context.Context, last *Place, start *Location, method string, trans []*Transition) (*Location, error) {
	if last.EnterTS == nil {
		return nil, nil
	}
	untracked := restartIn(trans, *last.EnterTS, start.TS)
	if !untracked {
		d := Haversine(last.Location.Coordinates[0], last.Location.Coordinates[1], start.Loc.Coordinates[0], start.Loc.Coordinates[1])
		if d < untrackedThreshold[method] {
			return nil, nil
		}
		untracked = d/(start.TS-*last.EnterTS) <= 3000.0/(60*60)
	}
	if !untracked {
		return nil, nil
	}
	es, err := r.Store.Find(ctx, Query{Keys: []string{KeyFilteredLocation}, Field: FieldTS, Start: last.EnterTS, End: last.EnterTS})
	if err != nil {
		return nil, err
	}
	if len(es) == 0 {
		return nil, fmt.Errorf("no filtered location at place enter ts %v", *last.EnterTS)
	}
	l, err := Decode[Location](es[0])
	if err != nil {
		return nil, err
	}
	c := *l
	c.TS += endFuzz
	return &c, nil
}
