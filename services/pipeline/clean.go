package pipeline

import (
	"context"
	"fmt"
	"math"
	"slices"
)

const stopSquishDistance = 150.0 // m: max(section.startStopRadius, section.endStopRadius)

type cleanCtx struct {
	r         *Run
	pts       *tripCtx // all filtered locations, by ts
	places    map[string]*Entry
	sections  map[string][]*Entry // by raw trip id, by start_ts
	stops     map[string][]*Entry // by raw trip id, by enter_ts
	deleted   map[string][]string // smoothing: raw section id → deleted point ids
	rawByID   map[string]*Entry   // raw trips and untracked
	locByTS   map[float64]Pt
	extraRecs []Entry // recreated locations added by the squished-place fix
}

type cleanedSection struct {
	e       Entry
	s       *Section
	rawMode int
	rows    withSpeeds
	rawSec  *Section
}

type cleanedTrip struct {
	e        Entry
	t        *Trip
	untrack  bool
	sections []*cleanedSection
	stops    []Entry
}

func (c *cleanCtx) place(id string) (*Place, error) {
	e, ok := c.places[id]
	if !ok {
		return nil, fmt.Errorf("raw place %s not found", id)
	}
	return e.Data.(*Place), nil
}

// enterLoc is _get_raw_place_enter_loc_entry: the filtered location at the
// place's enter time or, for the first place of a chain, the place itself at
// its exit time (altitude 0, as pandas fills the missing column).
func (c *cleanCtx) enterLoc(p *Place) (cpt, error) {
	if p.EnterTS != nil {
		l, ok := c.locByTS[*p.EnterTS]
		if !ok {
			return cpt{}, fmt.Errorf("no filtered location at place enter %v", *p.EnterTS)
		}
		return cptOf(l), nil
	}
	tz := DefaultTimeZone
	if p.ExitLocalDT != nil {
		tz = p.ExitLocalDT.Timezone
	}
	return cpt{lat: p.Location.Coordinates[1], lng: p.Location.Coordinates[0], ts: *p.ExitTS, tz: tz}, nil
}

func setEnds(s *Section, first, last cpt) {
	s.StartTS = first.ts
	s.StartLocalDT, s.StartFmtTime = mustLocalTime(first.ts, first.tz)
	s.StartLoc = NewPoint(first.lng, first.lat)
	s.EndTS = last.ts
	s.EndLocalDT, s.EndFmtTime = mustLocalTime(last.ts, last.tz)
	s.EndLoc = NewPoint(last.lng, last.lat)
	s.Duration = s.EndTS - s.StartTS
}

func isPlaceBogus(locs []Pt, i int, deleted []string, p *Place) bool {
	l := locs[i]
	if !slices.Contains(deleted, l.ID) {
		return false
	}
	return Haversine(l.Loc.Coordinates[0], l.Loc.Coordinates[1], p.Location.Coordinates[0], p.Location.Coordinates[1]) < 100
}

func (c *cleanCtx) addStartPoint(rows []cpt, place *Place, mode int) ([]cpt, error) {
	enter, err := c.enterLoc(place)
	if err != nil {
		return nil, err
	}
	first := rows[0]
	addDist := cptDist(first, enter)
	w := addDistSpeed(rows)
	m := median(w.speed)
	var del float64
	if m > 0 {
		sum := 0.0
		for _, d := range w.dist {
			sum += d
		}
		del = addDist / m
		if addDist > 2*sum && mode != InVehicle {
			ok := isBikingSpeed
			if isWalkingType(mode) {
				ok = isWalkingSpeed
			}
			if !ok(m) && ok(0.9*m) {
				del = addDist / 1 // e-mission divides by the test's boolean result
			}
		}
	} else {
		var nz []float64
		for _, s := range w.speed {
			if s != 0 {
				nz = append(nz, s)
			}
		}
		if mm := median(nz); !math.IsNaN(mm) {
			del = addDist / mm
		}
	}
	if del == 0 {
		return rows, nil
	}
	newTS := first.ts - del
	if place.EnterTS != nil && newTS < *place.EnterTS {
		if place.Duration != nil && *place.Duration == 0 {
			newTS = *place.EnterTS
		} else {
			dur := 0.0
			if place.Duration != nil {
				dur = *place.Duration
			}
			newTS = math.Min(*place.EnterTS+dur/2, *place.EnterTS+3*60)
		}
	}
	np := enter
	np.ts, np.id = newTS, ""
	return append([]cpt{np}, rows...), nil
}

func unknownMarkNeeded(rows []cpt, rawStart float64) bool {
	if rows[0].ts == rawStart {
		return false
	}
	w := addDistSpeed(rows)
	if len(w.speed) < 2 {
		return false
	}
	return w.speed[1] > boxplotThreshold(w.speed[2:], 1.5)
}

func (c *cleanCtx) filteredSection(ct *cleanedTrip, se *Entry, rawTrip *Trip) (*cleanedSection, error) {
	raw := se.Data.(*Section)
	cs := &cleanedSection{rawSec: raw, rawMode: raw.SensedMode}
	sec := &Section{Source: raw.Source, TripID: ct.e.ID}
	cs.s = sec
	cs.e = newEntry(c.r.UserID, KeyCleanedSection, c.r.now(), sec)
	locs := c.pts.ptsIn(raw.StartTS, raw.EndTS)
	deleted := c.deleted[se.ID]
	var rows []cpt
	for _, l := range locs {
		if !slices.Contains(deleted, l.ID) {
			rows = append(rows, cptOf(l))
		}
	}
	if len(rows) == 0 {
		l, ok := c.locByTS[raw.StartTS]
		if !ok {
			return nil, fmt.Errorf("no filtered location at section start %v", raw.StartTS)
		}
		p := cptOf(l)
		setEnds(sec, p, p)
	} else {
		if raw.StartStop == "" {
			sp, err := c.place(rawTrip.StartPlace)
			if err != nil {
				return nil, err
			}
			if !isPlaceBogus(locs, 0, deleted, sp) {
				if rows, err = c.addStartPoint(rows, sp, raw.SensedMode); err != nil {
					return nil, err
				}
				if unknownMarkNeeded(rows, raw.StartTS) {
					cs.rawMode = UnknownMode
				}
			}
		}
		if raw.EndStop == "" {
			ep, err := c.place(rawTrip.EndPlace)
			if err != nil {
				return nil, err
			}
			if !isPlaceBogus(locs, len(locs)-1, deleted, ep) {
				enter, err := c.enterLoc(ep)
				if err != nil {
					return nil, err
				}
				if cptDist(rows[len(rows)-1], enter) != 0 {
					rows = append(rows, enter)
				}
			}
		}
		setEnds(sec, rows[0], rows[len(rows)-1])
		rows = resample30(rows)
	}
	w := addDistSpeed(rows)
	// dropna: a NaN coordinate poisons its row and the next one's distance
	keep := withSpeeds{}
	for i, p := range w.pts {
		if math.IsNaN(p.lat) || math.IsNaN(p.lng) || math.IsNaN(p.alt) || math.IsNaN(w.dist[i]) || math.IsNaN(w.speed[i]) || math.IsNaN(w.heading[i]) {
			continue
		}
		keep.pts = append(keep.pts, p)
		keep.dist = append(keep.dist, w.dist[i])
		keep.speed = append(keep.speed, w.speed[i])
		keep.heading = append(keep.heading, w.heading[i])
	}
	cs.rows = keep
	sec.Speeds = slices.Clone(keep.speed)
	sec.Distances = slices.Clone(keep.dist)
	if sec.Speeds == nil {
		sec.Speeds, sec.Distances = []float64{}, []float64{}
	}
	sec.Distance = 0
	for _, d := range keep.dist {
		sec.Distance += d
	}
	sec.SensedMode = cs.rawMode
	if m, ok := overriddenMode(cs.rawMode, sec, keep.speed); ok {
		sec.SensedMode = m
	}
	return cs, nil
}

func overriddenMode(rawMode int, s *Section, speeds []float64) (int, bool) {
	if s.Distance == 0 || s.Duration == 0 {
		return 0, false
	}
	const hundredKmph = 100 * 1000.0 / (60 * 60)
	// e-mission's ONE_FIFTY_KMPH is computed from 100 km/h
	const oneFiftyKmph = 100 * 1000.0 / (60 * 60)
	speed := s.Distance / s.Duration
	if speed > oneFiftyKmph || (speed > hundredKmph && quantile(speeds, 0.9) > oneFiftyKmph) {
		return AirOrHSR, true
	}
	if rawMode == OnFoot && s.Distance > 10*1000 && speed > 10*1000.0/3600 {
		return UnknownMode, true
	}
	if rawMode == Bicycling && s.Distance > 100*1000 && speed > 20*1000.0/3600 {
		return UnknownMode, true
	}
	return 0, false
}

func (c *cleanCtx) countPts(a, b float64) int { return len(c.pts.ptsIn(a, b)) }

func extend(s *Section, dist, dt float64) {
	s.Distance += dist
	s.Duration += dt
	s.Distances = append(s.Distances, dist)
	s.Speeds = append(s.Speeds, dist/dt)
}

// squishStop removes a stop whose ends are far apart by stretching one of
// its sections over it.
func (c *cleanCtx) squishStop(st *Stop, prev, next *Section) {
	dist := Haversine(st.EnterLoc.Coordinates[0], st.EnterLoc.Coordinates[1], st.ExitLoc.Coordinates[0], st.ExitLoc.Coordinates[1])
	dt := st.EnterTS - st.ExitTS
	backward := func() {
		st.ExitTS, st.ExitLocalDT, st.ExitFmtTime, st.ExitLoc = st.EnterTS, st.EnterLocalDT, st.EnterFmtTime, st.EnterLoc
		next.StartTS, next.StartLocalDT, next.StartFmtTime, next.StartLoc = st.EnterTS, st.EnterLocalDT, st.EnterFmtTime, st.EnterLoc
		extend(next, dist, dt)
	}
	forward := func() {
		st.EnterTS, st.EnterLocalDT, st.EnterFmtTime, st.EnterLoc = st.ExitTS, st.ExitLocalDT, st.ExitFmtTime, st.ExitLoc
		prev.EndTS, prev.EndLocalDT, prev.EndFmtTime, prev.EndLoc = st.ExitTS, st.ExitLocalDT, st.ExitFmtTime, st.ExitLoc
		extend(prev, dist, dt)
	}
	switch {
	case prev.SensedMode != InVehicle && next.SensedMode == InVehicle:
		backward()
	case prev.SensedMode == InVehicle && next.SensedMode != InVehicle:
		forward()
	default:
		pn := float64(c.countPts(prev.StartTS, prev.EndTS))
		nn := float64(c.countPts(next.StartTS, next.EndTS))
		if pn/(prev.Distance+1) > nn/(next.Distance+1) {
			backward()
		} else {
			forward()
		}
	}
	st.Distance, st.Duration = 0, 0
}

func (c *cleanCtx) filteredTrip(te *Entry) (*cleanedTrip, error) {
	raw := te.Data.(*Trip)
	secs := c.sections[te.ID]
	if len(secs) == 0 {
		return nil, nil
	}
	t := &Trip{EndTS: raw.EndTS, EndLocalDT: raw.EndLocalDT, EndFmtTime: raw.EndFmtTime, EndLoc: raw.EndLoc, Source: raw.Source, RawTrip: te.ID}
	ct := &cleanedTrip{t: t, e: newEntry(c.r.UserID, KeyCleanedTrip, c.r.now(), t)}
	secByRaw := map[string]*cleanedSection{}
	for _, se := range secs {
		cs, err := c.filteredSection(ct, se, raw)
		if err != nil {
			return nil, err
		}
		ct.sections = append(ct.sections, cs)
		secByRaw[se.ID] = cs
	}
	first, last := ct.sections[0].s, ct.sections[len(ct.sections)-1].s
	t.StartTS, t.StartLocalDT, t.StartFmtTime, t.StartLoc = first.StartTS, first.StartLocalDT, first.StartFmtTime, first.StartLoc
	t.EndTS, t.EndLocalDT, t.EndFmtTime, t.EndLoc = last.EndTS, last.EndLocalDT, last.EndFmtTime, last.EndLoc
	t.Duration = t.EndTS - t.StartTS
	stopByRaw := map[string]Entry{}
	for _, se := range c.stops[te.ID] {
		rs := se.Data.(*Stop)
		st := &Stop{TripID: ct.e.ID, Source: rs.Source}
		e := newEntry(c.r.UserID, KeyCleanedStop, c.r.now(), st)
		stopByRaw[se.ID] = e
		ct.stops = append(ct.stops, e)
	}
	for _, cs := range ct.sections {
		if cs.rawSec.StartStop != "" {
			cs.s.StartStop = stopByRaw[cs.rawSec.StartStop].ID
		}
		if cs.rawSec.EndStop != "" {
			cs.s.EndStop = stopByRaw[cs.rawSec.EndStop].ID
		}
	}
	for i, se := range c.stops[te.ID] {
		rs := se.Data.(*Stop)
		st := ct.stops[i].Data.(*Stop)
		prev, next := secByRaw[rs.EndingSection], secByRaw[rs.StartingSection]
		if prev == nil || next == nil {
			return nil, fmt.Errorf("stop %s: sections not found", se.ID)
		}
		st.EndingSection, st.StartingSection = prev.e.ID, next.e.ID
		st.EnterTS, st.EnterLocalDT, st.EnterFmtTime, st.EnterLoc = prev.s.EndTS, prev.s.EndLocalDT, prev.s.EndFmtTime, prev.s.EndLoc
		st.ExitTS, st.ExitLocalDT, st.ExitFmtTime, st.ExitLoc = next.s.StartTS, next.s.StartLocalDT, next.s.StartFmtTime, next.s.StartLoc
		st.Duration = st.ExitTS - st.EnterTS
		st.Distance = Haversine(st.ExitLoc.Coordinates[0], st.ExitLoc.Coordinates[1], st.EnterLoc.Coordinates[0], st.EnterLoc.Coordinates[1])
		if st.Distance > stopSquishDistance {
			c.squishStop(st, prev.s, next.s)
		}
	}
	dist := 0.0
	for _, cs := range ct.sections {
		dist += cs.s.Distance
	}
	for _, e := range ct.stops {
		dist += e.Data.(*Stop).Distance
	}
	t.Distance = dist
	if dist < 100 {
		return nil, nil
	}
	return ct, nil
}

func (c *cleanCtx) recreated(ct *cleanedTrip) []Entry {
	var out []Entry
	for _, cs := range ct.sections {
		for i, p := range cs.rows.pts {
			ld, f := mustLocalTime(p.ts, p.tz)
			mode, idx := cs.rawMode, i
			d, s := cs.rows.dist[i], cs.rows.speed[i]
			l := &Location{Latitude: p.lat, Longitude: p.lng, Loc: NewPoint(p.lng, p.lat), TS: p.ts, LocalDT: ld, FmtTime: f,
				Altitude: p.alt, Heading: cs.rows.heading[i], Distance: &d, Speed: &s, Mode: &mode, Section: cs.e.ID, Idx: &idx}
			out = append(out, newEntry(c.r.UserID, KeyRecreated, c.r.now(), l))
		}
	}
	return out
}

func newCleanedPlace(c *cleanCtx, rawID string, raw *Place) Entry {
	p := &Place{EnterTS: raw.EnterTS, EnterLocalDT: raw.EnterLocalDT, EnterFmtTime: raw.EnterFmtTime, Location: raw.Location,
		Source: raw.Source, RawPlaces: []string{rawID}}
	return newEntry(c.r.UserID, KeyCleanedPlace, c.r.now(), p)
}

func (r *Run) cleanAndResample(ctx context.Context) error {
	st := r.Store
	state, err := st.State(ctx, StageCleanResamp)
	if err != nil {
		return err
	}
	trips, err := st.Find(ctx, Query{Keys: []string{KeyRawTrip, KeyRawUntracked}, Field: "data.start_ts", Start: state.LastProcessedTS})
	if err != nil {
		return err
	}
	if len(trips) == 0 {
		return r.markDone(ctx, state, nil)
	}
	c := &cleanCtx{r: r, places: map[string]*Entry{}, sections: map[string][]*Entry{}, stops: map[string][]*Entry{},
		deleted: map[string][]string{}, rawByID: map[string]*Entry{}, locByTS: map[float64]Pt{}}
	pts, err := r.allLocations(ctx)
	if err != nil {
		return err
	}
	c.pts = &tripCtx{pts: pts}
	for _, p := range pts {
		if _, ok := c.locByTS[p.TS]; !ok {
			c.locByTS[p.TS] = p
		}
	}
	for _, k := range []string{KeyRawPlace, KeyRawSection, KeyRawStop, KeySmoothing} {
		field := "data.start_ts"
		if k == KeyRawStop {
			field = "data.enter_ts"
		}
		es, err := st.Find(ctx, Query{Keys: []string{k}, Field: field})
		if k == KeyRawPlace || k == KeySmoothing {
			es, err = st.Find(ctx, Query{Keys: []string{k}})
		}
		if err != nil {
			return err
		}
		for i := range es {
			e := &es[i]
			switch k {
			case KeyRawPlace:
				p, err := Decode[Place](*e)
				if err != nil {
					return err
				}
				e.Data = p
				c.places[e.ID] = e
			case KeyRawSection:
				s, err := Decode[Section](*e)
				if err != nil {
					return err
				}
				e.Data = s
				c.sections[s.TripID] = append(c.sections[s.TripID], e)
			case KeyRawStop:
				s, err := Decode[Stop](*e)
				if err != nil {
					return err
				}
				e.Data = s
				c.stops[s.TripID] = append(c.stops[s.TripID], e)
			case KeySmoothing:
				s, err := Decode[Smoothing](*e)
				if err != nil {
					return err
				}
				c.deleted[s.Section] = s.DeletedPoints
			}
		}
	}
	tripMap := map[string]*cleanedTrip{}
	for i := range trips {
		te := &trips[i]
		t, err := Decode[Trip](*te)
		if err != nil {
			return err
		}
		te.Data = t
		c.rawByID[te.ID] = te
		if te.Metadata.Key == KeyRawUntracked {
			u := *t
			u.StartPlace, u.EndPlace = "", ""
			tripMap[te.ID] = &cleanedTrip{t: &u, untrack: true, e: newEntry(r.UserID, KeyCleanedUntracked, r.now(), &u)}
			continue
		}
		ct, err := c.filteredTrip(te)
		if err != nil {
			return fmt.Errorf("clean trip %s: %w", te.ID, err)
		}
		if ct != nil {
			tripMap[te.ID] = ct
		}
	}
	inserts, updates, lastEnter, err := c.link(ctx, trips, tripMap)
	if err != nil {
		return err
	}
	for _, u := range updates {
		if err := st.Update(ctx, Timeseries, u); err != nil {
			return err
		}
	}
	if err := st.Insert(ctx, Timeseries, inserts); err != nil {
		return err
	}
	return r.markDone(ctx, state, lastEnter)
}

// link is create_and_link_timeline: cleaned places between the kept trips,
// squished trips merged into the place before them.
func (c *cleanCtx) link(ctx context.Context, trips []Entry, tripMap map[string]*cleanedTrip) (inserts, updates []Entry, lastEnter *float64, err error) {
	lastEntry, _, err := c.r.lastPlace(ctx, KeyCleanedPlace)
	if err != nil {
		return nil, nil, nil, err
	}
	var cur *Entry
	if lastEntry != nil {
		cur = lastEntry
		updates = append(updates, *lastEntry)
	} else {
		first := trips[0].Data.(*Trip)
		rp, err := c.place(first.StartPlace)
		if err != nil {
			return nil, nil, nil, err
		}
		e := newCleanedPlace(c, first.StartPlace, rp)
		cur = &e
		inserts = append(inserts, e)
	}
	curIdx := len(inserts) - 1
	for i := range trips {
		te := &trips[i]
		raw := te.Data.(*Trip)
		ct, ok := tripMap[te.ID]
		if ok && !c.squishedUntracked(i, trips, tripMap) {
			rsp, err := c.place(raw.StartPlace)
			if err != nil {
				return nil, nil, nil, err
			}
			cp := cur.Data.(*Place)
			ct.t.StartPlace = cur.ID
			if cp.Location != nil && rsp.Location != nil && cp.Location.Coordinates != rsp.Location.Coordinates {
				if err := c.fixSquishedMismatch(ct, cp); err != nil {
					return nil, nil, nil, err
				}
			}
			cp.StartingTrip = ct.e.ID
			cp.ExitTS, cp.ExitFmtTime, cp.ExitLocalDT = ptrF(ct.t.StartTS), ct.t.StartFmtTime, ldPtr(ct.t.StartLocalDT)
			if cp.EnterTS != nil {
				cp.Duration = ptrF(*cp.ExitTS - *cp.EnterTS)
			}
			cp.RawPlaces = append(cp.RawPlaces, raw.StartPlace)
			rep, err := c.place(raw.EndPlace)
			if err != nil {
				return nil, nil, nil, err
			}
			ne := newCleanedPlace(c, raw.EndPlace, rep)
			ct.t.EndPlace = ne.ID
			ne.Data.(*Place).EndingTrip = ct.e.ID
			inserts = append(inserts, ne)
			cur = &inserts[len(inserts)-1]
			curIdx = len(inserts) - 1
			inserts = append(inserts, ct.e)
			for _, cs := range ct.sections {
				inserts = append(inserts, cs.e)
			}
			inserts = append(inserts, ct.stops...)
			inserts = append(inserts, c.recreated(ct)...)
		} else {
			cp := cur.Data.(*Place)
			cp.RawPlaces = append(cp.RawPlaces, raw.StartPlace)
		}
		if ep, ok := c.places[raw.EndPlace]; ok && ep.Data.(*Place).EnterTS != nil {
			lastEnter = ep.Data.(*Place).EnterTS
		}
	}
	_ = curIdx
	inserts = append(inserts, c.extraRecs...)
	return inserts, updates, lastEnter, nil
}

func (c *cleanCtx) squishedUntracked(i int, trips []Entry, tripMap map[string]*cleanedTrip) bool {
	if trips[i].Metadata.Key != KeyRawUntracked {
		return false
	}
	cu := tripMap[trips[i].ID]
	for j := i + 1; j < len(trips); j++ {
		if next, ok := tripMap[trips[j].ID]; ok {
			d := Haversine(cu.t.StartLoc.Coordinates[0], cu.t.StartLoc.Coordinates[1], next.t.StartLoc.Coordinates[0], next.t.StartLoc.Coordinates[1])
			return !(d > 100)
		}
	}
	return true
}

// fixSquishedMismatch starts a trip 30 s earlier at its cleaned start place
// when squished trips left that place a little away from the raw one.
func (c *cleanCtx) fixSquishedMismatch(ct *cleanedTrip, cp *Place) error {
	t := ct.t
	delta := Haversine(t.StartLoc.Coordinates[0], t.StartLoc.Coordinates[1], cp.Location.Coordinates[0], cp.Location.Coordinates[1])
	if delta > 100 {
		return nil
	}
	tz := t.StartLocalDT.Timezone
	newTS := t.StartTS - 30
	t.StartTS = newTS
	t.StartLocalDT, t.StartFmtTime = mustLocalTime(newTS, tz)
	t.StartLoc = *cp.Location
	t.Distance += delta
	t.Duration += 30
	if ct.untrack || len(ct.sections) == 0 {
		return nil
	}
	fs := ct.sections[0]
	s := fs.s
	s.StartTS = newTS
	s.StartLocalDT, s.StartFmtTime = mustLocalTime(newTS, tz)
	s.StartLoc = *cp.Location
	s.Distance += delta
	s.Duration += 30
	s.Distances = slices.Insert(s.Distances, 1, delta)
	s.Speeds = slices.Insert(s.Speeds, 1, delta/30)
	var orig Pt
	var ok bool
	if cp.EnterTS != nil {
		orig, ok = c.locByTS[*cp.EnterTS]
	} else if len(cp.RawPlaces) > 0 {
		if rp, err := c.place(cp.RawPlaces[0]); err == nil && rp.ExitTS != nil {
			orig, ok = c.locByTS[*rp.ExitTS]
		}
	}
	if !ok {
		return fmt.Errorf("squished place fix: no location for place")
	}
	zero := 0.0
	mode := fs.rawMode
	if s.SensedMode != fs.rawMode {
		mode = s.SensedMode
	}
	l := *orig.Location
	l.TS, l.LocalDT, l.FmtTime = newTS, s.StartLocalDT, s.StartFmtTime
	l.Distance, l.Speed, l.Mode, l.Section = &zero, &zero, &mode, fs.e.ID
	c.extraRecs = append(c.extraRecs, newEntry(c.r.UserID, KeyRecreated, c.r.now(), &l))
	if len(fs.rows.pts) > 0 {
		fs.rows.dist[0] = delta
		fs.rows.speed[0] = delta / 30
	}
	return nil
}
