// Package diary turns a user's cleaned pipeline entries into e-mission's
// "diary/trips-YYYY-MM-DD" document: one GeoJSON FeatureCollection per trip
// holding its start and end places, its stops and its sections (with the
// recreated locations), the shape the ground-truth files use.
package diary

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/e-mission/upc/services/pipeline"
	gt "github.com/e-mission/upc/services/pipeline/groundtruth"
)

// Trips returns the day's trips: every cleaned trip whose start_local_dt is
// year-month-day, by start_ts. Untracked time is not part of the diary.
func Trips(ctx context.Context, st pipeline.Store, year, month, day int) ([]gt.Trip, error) {
	find := func(key, field string) ([]pipeline.Entry, error) {
		es, err := st.Find(ctx, pipeline.Query{Keys: []string{key}, Field: field})
		if err != nil {
			return nil, fmt.Errorf("diary: find %s: %w", key, err)
		}
		return es, nil
	}
	trips, err := find(pipeline.KeyCleanedTrip, "data.start_ts")
	if err != nil {
		return nil, err
	}
	places, err := find(pipeline.KeyCleanedPlace, "")
	if err != nil {
		return nil, err
	}
	secs, err := find(pipeline.KeyCleanedSection, "data.start_ts")
	if err != nil {
		return nil, err
	}
	stops, err := find(pipeline.KeyCleanedStop, "data.enter_ts")
	if err != nil {
		return nil, err
	}
	locs, err := find(pipeline.KeyRecreated, pipeline.FieldTS)
	if err != nil {
		return nil, err
	}
	placeByID := map[string]*pipeline.Place{}
	for _, e := range places {
		p, err := pipeline.Decode[pipeline.Place](e)
		if err != nil {
			return nil, err
		}
		placeByID[e.ID] = p
	}
	recs := make([]*pipeline.Location, 0, len(locs))
	for _, e := range locs {
		l, err := pipeline.Decode[pipeline.Location](e)
		if err != nil {
			return nil, err
		}
		recs = append(recs, l)
	}
	type secE struct {
		id string
		s  *pipeline.Section
	}
	type stopE struct {
		id string
		s  *pipeline.Stop
	}
	secsByTrip := map[string][]secE{}
	for _, e := range secs {
		s, err := pipeline.Decode[pipeline.Section](e)
		if err != nil {
			return nil, err
		}
		secsByTrip[s.TripID] = append(secsByTrip[s.TripID], secE{e.ID, s})
	}
	stopsByTrip := map[string][]stopE{}
	for _, e := range stops {
		s, err := pipeline.Decode[pipeline.Stop](e)
		if err != nil {
			return nil, err
		}
		stopsByTrip[s.TripID] = append(stopsByTrip[s.TripID], stopE{e.ID, s})
	}
	out := []gt.Trip{}
	for _, e := range trips {
		t, err := pipeline.Decode[pipeline.Trip](e)
		if err != nil {
			return nil, err
		}
		if t.StartLocalDT.Year != year || t.StartLocalDT.Month != month || t.StartLocalDT.Day != day {
			continue
		}
		tr := gt.Trip{Type: "FeatureCollection", ID: e.ID, Properties: gt.TripProps{
			Source: t.Source, StartTs: t.StartTS, StartLocalDt: ld(t.StartLocalDT), StartFmtTime: t.StartFmtTime,
			StartLoc: *geom(t.StartLoc), EndTs: t.EndTS, EndLocalDt: ld(t.EndLocalDT), EndFmtTime: t.EndFmtTime,
			EndLoc: *geom(t.EndLoc), Duration: t.Duration, Distance: t.Distance, RawTrip: oid(t.RawTrip),
			StartPlace: oid(t.StartPlace), EndPlace: oid(t.EndPlace), FeatureType: "trip"}}
		for _, pp := range []struct{ id, kind string }{{t.StartPlace, "start_place"}, {t.EndPlace, "end_place"}} {
			p, ok := placeByID[pp.id]
			if !ok {
				return nil, fmt.Errorf("diary: trip %s: %s %s not found", e.ID, pp.kind, pp.id)
			}
			tr.Features = append(tr.Features, placeFeature(pp.id, pp.kind, p))
		}
		for _, s := range stopsByTrip[e.ID] {
			tr.Features = append(tr.Features, stopFeature(s.id, s.s))
		}
		ss := secsByTrip[e.ID]
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].s.StartTS < ss[j].s.StartTS })
		for _, s := range ss {
			tr.Features = append(tr.Features, sectionFeature(s.id, s.s, recs))
		}
		out = append(out, tr)
	}
	return out, nil
}

func ld(l pipeline.LocalDate) gt.LocalDate {
	return gt.LocalDate{Year: l.Year, Month: l.Month, Day: l.Day, Hour: l.Hour, Minute: l.Minute, Second: l.Second, Weekday: l.Weekday, Timezone: l.Timezone}
}

func ldp(l *pipeline.LocalDate) *gt.LocalDate {
	if l == nil {
		return nil
	}
	v := ld(*l)
	return &v
}

func geom(p pipeline.Point) *gt.Geometry { return gt.PointGeometry(p.Coordinates[0], p.Coordinates[1]) }

func oid(id string) *gt.ObjectID {
	if id == "" {
		return nil
	}
	return &gt.ObjectID{OID: id}
}

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func f64(v float64) *float64 { return &v }

func placeFeature(id, kind string, p *pipeline.Place) gt.Feature {
	props := &gt.FeatureProps{FeatureType: kind, Source: p.Source,
		EnterTs: p.EnterTS, EnterLocalDt: ldp(p.EnterLocalDT), EnterFmtTime: strp(p.EnterFmtTime),
		ExitTs: p.ExitTS, ExitLocalDt: ldp(p.ExitLocalDT), ExitFmtTime: strp(p.ExitFmtTime),
		Duration: p.Duration, StartingTrip: oid(p.StartingTrip), EndingTrip: oid(p.EndingTrip)}
	for _, r := range p.RawPlaces {
		props.RawPlaces = append(props.RawPlaces, gt.ObjectID{OID: r})
	}
	f := gt.Feature{Type: "Feature", ID: id, Properties: props}
	if p.Location != nil {
		f.Geometry = geom(*p.Location)
	}
	return f
}

func stopFeature(id string, s *pipeline.Stop) gt.Feature {
	return gt.Feature{Type: "Feature", ID: id,
		Geometry: gt.LineGeometry([][]float64{s.EnterLoc.Coordinates[:], s.ExitLoc.Coordinates[:]}),
		Properties: &gt.FeatureProps{FeatureType: "stop", Source: s.Source, TripID: oid(s.TripID),
			EndingSection: oid(s.EndingSection), StartingSection: oid(s.StartingSection),
			EnterTs: f64(s.EnterTS), EnterLocalDt: ldp(&s.EnterLocalDT), EnterFmtTime: strp(s.EnterFmtTime), EnterLoc: geom(s.EnterLoc),
			ExitTs: f64(s.ExitTS), ExitLocalDt: ldp(&s.ExitLocalDT), ExitFmtTime: strp(s.ExitFmtTime), ExitLoc: geom(s.ExitLoc),
			Duration: f64(s.Duration), Distance: f64(s.Distance)}}
}

// sectionFeature holds every recreated location with ts in the section's
// range, whichever section wrote it (as e-mission's query by time does).
func sectionFeature(id string, s *pipeline.Section, recs []*pipeline.Location) gt.Feature {
	lo := sort.Search(len(recs), func(i int) bool { return recs[i].TS >= s.StartTS })
	var coords [][]float64
	var times []float64
	var stamps []int64
	for _, l := range recs[lo:] {
		if l.TS > s.EndTS {
			break
		}
		coords = append(coords, []float64{l.Loc.Coordinates[0], l.Loc.Coordinates[1]})
		times = append(times, l.TS)
		stamps = append(stamps, int64(math.RoundToEven(l.TS*1000)))
	}
	props := &gt.FeatureProps{FeatureType: "section", Source: s.Source, TripID: oid(s.TripID),
		StartTs: f64(s.StartTS), StartLocalDt: ldp(&s.StartLocalDT), StartFmtTime: strp(s.StartFmtTime),
		EndTs: f64(s.EndTS), EndLocalDt: ldp(&s.EndLocalDT), EndFmtTime: strp(s.EndFmtTime),
		Duration: f64(s.Duration), Distance: f64(s.Distance), SensedMode: pipeline.MotionTypeName(s.SensedMode),
		StartStop: oid(s.StartStop), EndStop: oid(s.EndStop),
		Times: times, Timestamps: stamps, Speeds: s.Speeds, Distances: s.Distances}
	return gt.Feature{Type: "FeatureCollection", Features: []gt.Feature{{Type: "Feature", ID: id, Geometry: gt.LineGeometry(coords), Properties: props}}}
}
