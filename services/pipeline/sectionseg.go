package pipeline

import (
	"context"
	"math"
	"slices"
)

// Domain assumptions (e-mission's domain_assumptions.py).
func isWalkingType(t int) bool      { return t == Walking || t == OnFoot }
func isWalkingSpeed(s float64) bool { return !(s > 1.7) }
func isBikingSpeed(s float64) bool  { return !(s > 8.5) }

// mark is a motion used as a section boundary. Marks are shared and mutated
// by the flip-flop merges, as e-mission's dict-based motions are.
type mark struct {
	typ       int
	conf, ts  float64
	idx       int
	synthetic bool
	tripPct   float64
}

type change struct{ s, e *mark }

type sectionParams struct {
	conf, dist float64
	ios        bool
}

var (
	androidSection = sectionParams{conf: 60, dist: 100}
	iosSection     = sectionParams{conf: 49, dist: 50, ios: true}
)

type rawSection struct {
	start, end Pt
	mode       int
}

type tripCtx struct {
	pts     []Pt // filtered locations in the trip, by ts
	motions []*Motion
}

func (c *tripCtx) ptsIn(a, b float64) []Pt {
	lo := lowerBound(len(c.pts), func(i int) bool { return c.pts[i].TS >= a })
	hi := lowerBound(len(c.pts), func(i int) bool { return c.pts[i].TS > b })
	if hi < lo {
		hi = lo
	}
	return c.pts[lo:hi]
}

// speeds is add_dist_heading_speed's speed column: 0 first, then dist/Δt
// (0 when Δt is 0).
func speeds(pts []Pt) []float64 {
	out := make([]float64, len(pts))
	for i := 1; i < len(pts); i++ {
		out[i] = pointSpeed(pts[i-1].Location, pts[i].Location)
	}
	return out
}

func pointSpeed(a, b *Location) float64 {
	d := ptDist(a, b)
	dt := b.TS - a.TS
	if dt == 0 {
		return 0
	}
	return d / dt
}

// median is pandas' Series.median (NaN-skipping; NaN when empty).
func median(xs []float64) float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// motionChanges turns a trip's confident motions into (start, end) changes
// and smooths flip-flops.
func motionChanges(tc *tripCtx, p sectionParams) []*change {
	var ms []*mark
	for _, m := range tc.motions {
		if !(m.Confidence > p.conf) || slices.Contains(ignoredMotion, m.Type) {
			continue
		}
		t := m.Type
		if t == Running {
			t = Walking
		}
		ms = append(ms, &mark{typ: t, conf: m.Confidence, ts: m.TS, idx: len(ms)})
	}
	if len(ms) == 0 {
		return nil
	}
	var changes []*change
	cs := ms[0]
	var prev *mark
	for _, c := range ms {
		if c.ts == cs.ts {
			cs.idx = c.idx
		}
		if c.typ != cs.typ {
			end := c
			if (cs.typ != InVehicle && c.typ == InVehicle) || (isWalkingType(cs.typ) && c.typ == Bicycling) {
				cp := *prev
				cp.typ, cp.conf, cp.synthetic = c.typ, c.conf, true
				end = &cp
			}
			changes = append(changes, &change{cs, end})
			cs = end
		}
		prev = c
	}
	changes = append(changes, &change{cs, ms[len(ms)-1]})
	return (&flipFlop{tc: tc, changes: changes}).merge()
}

type flipFlop struct {
	tc      *tripCtx
	changes []*change
}

const (
	dirNone = iota
	dirForward
	dirBackward
	dirNew
)

type mergeResult struct {
	dir      int
	keepMode bool // e-mission's FinalMode.MERGED
}

func (f *flipFlop) medianSpeed(a, b float64) (float64, bool) {
	pts := f.tc.ptsIn(a, b)
	if len(pts) == 0 {
		return 0, false
	}
	return median(speeds(pts)), true
}

func (f *flipFlop) validForType(c *change) bool {
	switch c.s.typ {
	case Walking, OnFoot, Running:
		m, ok := f.medianSpeed(c.s.ts, c.e.ts)
		return !ok || isWalkingSpeed(m)
	case Bicycling:
		if c.e.ts-c.s.ts < 60 {
			return false
		}
		m, ok := f.medianSpeed(c.s.ts, c.e.ts)
		return !ok || isBikingSpeed(m)
	case InVehicle:
		return !(c.e.ts-c.s.ts < 5*60)
	}
	return true
}

func (f *flipFlop) isFlipFlop(c *change) bool {
	if c.s.tripPct > 25 {
		// A Python quirk: the motorized check compares the raw value with the
		// enum, which only synthetic markers (holding the enum) can pass.
		if !(c.s.synthetic && c.s.typ == InVehicle && c.e.ts-c.s.ts < 300) {
			return false
		}
	}
	d := c.e.idx - c.s.idx
	if d <= 1 {
		return true
	}
	if !isWalkingType(c.s.typ) && d <= 2 {
		return true
	}
	if !f.validForType(c) {
		return true
	}
	return len(f.tc.ptsIn(c.s.ts, c.e.ts)) == 0
}

func streaks(flags []bool) [][2]int {
	var out [][2]int
	start := 0
	i := 0
	for i = range flags {
		if !flags[i] {
			if i != start {
				out = append(out, [2]int{start, i - 1})
			}
			start = i + 1
		}
	}
	if (i == 0 || i == 1) && flags[i] {
		out = append(out, [2]int{i, i})
	} else if i != start-1 {
		out = append(out, [2]int{start, len(flags) - 2})
	}
	return out
}

func (f *flipFlop) mergeDirection(ss, se int) mergeResult {
	cs := f.changes
	if ss == 0 {
		return mergeResult{dir: dirBackward}
	}
	if se+1 == len(cs) {
		return mergeResult{dir: dirForward}
	}
	before, after := cs[ss-1], cs[se+1]
	if before.s.typ == InVehicle && isWalkingType(cs[ss].s.typ) && after.s.typ == InVehicle {
		return mergeResult{}
	}
	if before.s.typ == after.s.typ {
		return mergeResult{dir: dirForward}
	}
	locs := f.tc.ptsIn(cs[ss].s.ts, cs[se].e.ts)
	ptsBefore := f.tc.ptsIn(before.s.ts, before.e.ts)
	ptsAfter := f.tc.ptsIn(after.s.ts, after.e.ts)
	var speed float64
	switch {
	case len(locs) > 1:
		speed = median(speeds(locs))
	case len(ptsBefore) > 0 && len(ptsAfter) > 0:
		a, b := ptsBefore[len(ptsBefore)-1], ptsAfter[0]
		speed = Haversine(a.Loc.Coordinates[0], a.Loc.Coordinates[1], b.Loc.Coordinates[0], b.Loc.Coordinates[1]) / (b.TS - a.TS)
	}
	if isWalkingType(after.s.typ) && !isWalkingSpeed(speed) {
		return mergeResult{dir: dirForward}
	}
	if isWalkingType(before.s.typ) && !isWalkingSpeed(speed) {
		return mergeResult{dir: dirBackward}
	}
	if math.Abs(speed-median(speeds(ptsBefore))) < math.Abs(speed-median(speeds(ptsAfter))) {
		return mergeResult{dir: dirForward}
	}
	return mergeResult{dir: dirBackward}
}

func (f *flipFlop) shouldMerge(ss, se int) mergeResult {
	cs := f.changes
	if ss == 0 && se == len(cs)-1 {
		return mergeResult{}
	}
	if ss == se || ss+1 == se {
		if r := f.fastBiker(ss, se); r.dir != dirNone {
			return r
		}
		if !isWalkingType(cs[ss].s.typ) {
			if r := f.mergeDirection(ss, se); r.dir != dirNone {
				return r
			}
		}
		if len(f.tc.ptsIn(cs[ss].s.ts, cs[ss].e.ts)) <= 1 {
			if r := f.mergeDirection(ss, se); r.dir != dirNone {
				return r
			}
		}
		return mergeResult{}
	}
	if se-ss > 3 {
		return mergeResult{dir: dirNew}
	}
	for i := ss; i <= se; i++ {
		if !f.validForType(cs[i]) {
			return f.mergeDirection(ss, se)
		}
	}
	return mergeResult{}
}

func (f *flipFlop) fastBiker(ss, se int) mergeResult {
	cs := f.changes
	if se+1 == len(cs) {
		return mergeResult{}
	}
	s, e, a := cs[ss], cs[se], cs[se+1]
	bikeIdx := e.s.idx - s.s.idx
	vehIdx := a.e.idx - a.s.idx
	shortGap := e.s.ts-s.e.ts < 60
	ratio := (e.s.ts - s.s.ts) / (a.e.ts - a.s.ts + 1)
	if s.s.typ == Bicycling && a.s.typ == InVehicle && bikeIdx <= 1 && vehIdx <= 2 && shortGap && (bikeIdx == 0 || ratio > 0.75) {
		return mergeResult{dir: dirBackward, keepMode: true}
	}
	return mergeResult{}
}

func (f *flipFlop) merge() []*change {
	cs := f.changes
	total := cs[len(cs)-1].e.ts - cs[0].s.ts
	for _, c := range cs {
		c.s.tripPct = (c.e.ts - c.s.ts) * 100 / total
	}
	flags := make([]bool, len(cs))
	for i, c := range cs {
		flags[i] = f.isFlipFlop(c)
	}
	type action struct {
		ss, se   int
		keepMode bool
	}
	var fwd, bwd, nw []action
	for _, st := range streaks(flags) {
		r := f.shouldMerge(st[0], st[1])
		a := action{st[0], st[1], r.keepMode}
		switch r.dir {
		case dirForward:
			fwd = append(fwd, a)
		case dirBackward:
			bwd = append(bwd, a)
		case dirNew:
			nw = append(nw, a)
		}
	}
	mod := make([]*change, len(cs))
	for i, c := range cs {
		mod[i] = &change{c.s, c.e}
	}
	for _, a := range fwd {
		mod[a.ss-1].e = mod[a.se].e
		if a.keepMode {
			mod[a.ss-1].s.typ = mod[a.ss].s.typ
		}
		for i := a.ss; i <= a.se; i++ {
			mod[i] = mod[a.ss-1]
		}
	}
	for _, a := range bwd {
		if !a.keepMode {
			mod[a.ss].s.typ = mod[a.se+1].s.typ
		}
		mod[a.se+1].s = mod[a.ss].s
		for i := a.ss; i <= a.se; i++ {
			mod[i] = mod[a.se+1]
		}
	}
	for _, a := range nw {
		nc := &change{mod[a.ss].s, mod[a.se].e}
		nc.s.typ = Bicycling
		for i := a.ss; i <= a.se; i++ {
			mod[i] = nc
		}
	}
	var uniq []*change
	for _, c := range mod {
		if !slices.ContainsFunc(uniq, func(u *change) bool { return u == c || (*u.s == *c.s && *u.e == *c.e) }) {
			uniq = append(uniq, c)
		}
	}
	var out []*change
	cur := uniq[0].s
	var prevEnd *mark
	for _, c := range uniq {
		if c.s.typ != cur.typ {
			out = append(out, &change{cur, prevEnd})
			cur = c.s
		}
		prevEnd = c.e
	}
	return append(out, &change{cur, prevEnd})
}

// sectionsForTrip returns a trip's sections as (first point, last point, mode).
func sectionsForTrip(tc *tripCtx, p sectionParams, distFromPlace float64, transitions []*Transition, trip *Trip) []rawSection {
	changes := motionChanges(tc, p)
	if len(tc.pts) == 0 {
		return nil
	}
	fp, lp := tc.pts[0], tc.pts[len(tc.pts)-1]
	if !p.ios {
		var secs []rawSection
		for _, c := range changes {
			pts := tc.ptsIn(c.s.ts, c.e.ts)
			if len(pts) > 0 {
				secs = append(secs, rawSection{pts[0], pts[len(pts)-1], c.s.typ})
			}
		}
		if len(secs) == 0 {
			if len(changes) == 1 && changes[0].s.typ == changes[0].e.typ {
				secs = append(secs, rawSection{fp, lp, changes[0].s.typ})
			}
			if len(changes) == 0 && distFromPlace > p.dist {
				secs = append(secs, rawSection{fp, lp, UnknownMode})
			}
		}
		return secs
	}
	if len(changes) == 0 {
		tr := transitionsIn(transitions, trip.StartTS, trip.EndTS+5*60)
		if len(tr) == 0 {
			return nil
		}
		if distFromPlace > p.dist {
			return []rawSection{{fp, lp, UnknownMode}}
		}
		for _, t := range tr {
			if t.Transition == TransVisitEnded {
				return []rawSection{{fp, lp, UnknownMode}}
			}
		}
		return nil
	}
	first, last := *changes[0], *changes[len(changes)-1]
	first.s = &mark{typ: first.s.typ, conf: first.s.conf, ts: fp.TS}
	changes[0] = &first
	last = *changes[len(changes)-1]
	last.e = &mark{typ: last.e.typ, conf: last.e.conf, ts: lp.TS}
	changes[len(changes)-1] = &last
	var secs []rawSection
	var kept []*change
	for _, c := range changes {
		pts := tc.ptsIn(c.s.ts, c.e.ts)
		if len(pts) >= 2 {
			secs = append(secs, rawSection{pts[0], pts[len(pts)-1], c.s.typ})
			kept = append(kept, c)
		}
	}
	// squish stops between iOS sections whose ends are far apart
	for i := 0; i+1 < len(secs); i++ {
		a, b := secs[i], secs[i+1]
		if ptDist(a.end.Location, b.start.Location) <= 150 {
			continue
		}
		g1 := kept[i].e.ts - a.end.TS
		g2 := b.start.TS - kept[i+1].s.ts
		if math.Max(g1, g2)/math.Min(g1, g2) >= 1.5 {
			if g1 < g2 {
				secs[i+1].start = a.end
			} else {
				secs[i].end = b.start
			}
		}
	}
	return secs
}

func (r *Run) segmentSections(ctx context.Context) error {
	st := r.Store
	state, err := st.State(ctx, StageSections)
	if err != nil {
		return err
	}
	trips, err := st.Find(ctx, Query{Keys: []string{KeyRawTrip}, Field: "data.end_ts", Start: state.LastProcessedTS})
	if err != nil {
		return err
	}
	if len(trips) == 0 {
		return r.markDone(ctx, state, nil)
	}
	pts, err := r.allLocations(ctx)
	if err != nil {
		return err
	}
	motions, err := r.allMotions(ctx)
	if err != nil {
		return err
	}
	transitions, err := r.allTransitions(ctx)
	if err != nil {
		return err
	}
	places, err := st.Find(ctx, Query{Keys: []string{KeyRawPlace}})
	if err != nil {
		return err
	}
	placeLoc := map[string]Point{}
	for _, e := range places {
		p, err := Decode[Place](e)
		if err != nil {
			return err
		}
		if p.Location != nil {
			placeLoc[e.ID] = *p.Location
		}
	}
	all := &tripCtx{pts: pts, motions: motions}
	var inserts []Entry
	var lastEnd float64
	for _, te := range trips {
		trip, err := Decode[Trip](te)
		if err != nil {
			return err
		}
		lastEnd = trip.EndTS
		tc := &tripCtx{pts: all.ptsIn(trip.StartTS, trip.EndTS), motions: motionsIn(motions, trip.StartTS, trip.EndTS)}
		if len(tc.pts) == 0 {
			continue
		}
		sp := placeLoc[trip.StartPlace]
		dist := Haversine(sp.Coordinates[0], sp.Coordinates[1], trip.EndLoc.Coordinates[0], trip.EndLoc.Coordinates[1])
		params := androidSection
		if trip.Source == DistFilterName {
			params = iosSection
		}
		secs := sectionsForTrip(tc, params, dist, transitions, trip)
		var prev *Entry
		for i, rs := range secs {
			start, end := rs.start, rs.end
			if i == 0 {
				start = tc.pts[0]
			}
			if i == len(secs)-1 {
				end = tc.pts[len(tc.pts)-1]
			}
			sec := &Section{TripID: te.ID, Source: "SmoothedHighConfidenceMotion", SensedMode: rs.mode}
			fillSectionEnds(sec, start.Location, end.Location)
			se := newEntry(r.UserID, KeyRawSection, r.now(), sec)
			if prev != nil {
				ps := prev.Data.(*Section)
				stop := &Stop{TripID: te.ID, Source: "SmoothedHighConfidenceMotion"}
				stp := newEntry(r.UserID, KeyRawStop, r.now(), stop)
				ps.EndStop = stp.ID
				stop.EnterTS, stop.EnterLocalDT, stop.EnterFmtTime = ps.EndTS, ps.EndLocalDT, ps.EndFmtTime
				stop.EndingSection = prev.ID
				stop.EnterLoc, stop.ExitLoc = ps.EndLoc, sec.StartLoc
				stop.Duration = sec.StartTS - ps.EndTS
				stop.Distance = Haversine(stop.EnterLoc.Coordinates[0], stop.EnterLoc.Coordinates[1], stop.ExitLoc.Coordinates[0], stop.ExitLoc.Coordinates[1])
				stop.ExitTS, stop.ExitLocalDT, stop.ExitFmtTime = sec.StartTS, sec.StartLocalDT, sec.StartFmtTime
				stop.StartingSection = se.ID
				sec.StartStop = stp.ID
				inserts = append(inserts, stp)
			}
			inserts = append(inserts, se)
			prev = &inserts[len(inserts)-1]
		}
	}
	if err := st.Insert(ctx, Timeseries, inserts); err != nil {
		return err
	}
	return r.markDone(ctx, state, ptrF(lastEnd+endFuzz))
}

func fillSectionEnds(sec *Section, start, end *Location) {
	sec.StartTS = start.TS
	sec.StartLocalDT, _ = mustLocalTime(start.TS, start.LocalDT.Timezone)
	sec.StartFmtTime = start.FmtTime
	sec.EndTS = end.TS
	sec.EndLocalDT, _ = mustLocalTime(end.TS, end.LocalDT.Timezone)
	sec.EndFmtTime = end.FmtTime
	sec.StartLoc, sec.EndLoc = start.Loc, end.Loc
	sec.Duration = end.TS - start.TS
}
