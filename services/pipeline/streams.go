package pipeline

import (
	"context"
	"fmt"
)

// Pt is a location row as the stages see it: the entry id and write_ts beside
// the data, and a validity flag the iOS trip segmentation may clear.
type Pt struct {
	ID      string
	WriteTS float64
	*Location
	invalid bool
}

type locKey struct {
	ts, lat, lng, alt, acc, speed, heading, vacc, floor, writeTS float64
}

// fetchLocations returns the key's locations in q, without duplicates: a row
// equal to an earlier one on every numeric field and write_ts is dropped.
func fetchLocations(ctx context.Context, st Store, key, field string, start, end *float64) ([]Pt, error) {
	es, err := st.Find(ctx, Query{Keys: []string{key}, Field: field, Start: start, End: end})
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", key, err)
	}
	seen := make(map[locKey]bool, len(es))
	out := make([]Pt, 0, len(es))
	for _, e := range es {
		l, err := Decode[Location](e)
		if err != nil {
			return nil, err
		}
		k := locKey{l.TS, l.Latitude, l.Longitude, l.Altitude, l.Accuracy, l.SensedSpeed, l.Heading, -1, -1, e.Metadata.WriteTS}
		if l.VAccuracy != nil {
			k.vacc = *l.VAccuracy
		}
		if l.Floor != nil {
			k.floor = *l.Floor
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, Pt{ID: e.ID, WriteTS: e.Metadata.WriteTS, Location: l})
	}
	return out, nil
}

type motionKey struct {
	typ           int
	conf, ts, wts float64
}

func fetchMotions(ctx context.Context, st Store, field string, start, end *float64) ([]*Motion, error) {
	es, err := st.Find(ctx, Query{Keys: []string{KeyMotion}, Field: field, Start: start, End: end})
	if err != nil {
		return nil, fmt.Errorf("fetch motion: %w", err)
	}
	seen := make(map[motionKey]bool, len(es))
	out := make([]*Motion, 0, len(es))
	for _, e := range es {
		m, err := Decode[Motion](e)
		if err != nil {
			return nil, err
		}
		k := motionKey{m.Type, m.Confidence, m.TS, e.Metadata.WriteTS}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, m)
	}
	return out, nil
}

type transKey struct {
	state, trans int
	ts, wts      float64
}

func fetchTransitions(ctx context.Context, st Store, field string, start, end *float64) ([]*Transition, error) {
	es, err := st.Find(ctx, Query{Keys: []string{KeyTransition}, Field: field, Start: start, End: end})
	if err != nil {
		return nil, fmt.Errorf("fetch transitions: %w", err)
	}
	seen := make(map[transKey]bool, len(es))
	out := make([]*Transition, 0, len(es))
	for _, e := range es {
		t, err := Decode[Transition](e)
		if err != nil {
			return nil, err
		}
		k := transKey{t.CurrState, t.Transition, t.TS, e.Metadata.WriteTS}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, t)
	}
	return out, nil
}

// inTS returns the entries of a ts-sorted slice with ts in [a, b].
func motionsIn(ms []*Motion, a, b float64) []*Motion {
	lo := lowerBound(len(ms), func(i int) bool { return ms[i].TS >= a })
	hi := lowerBound(len(ms), func(i int) bool { return ms[i].TS > b })
	if hi < lo {
		hi = lo
	}
	return ms[lo:hi]
}

func transitionsIn(ts []*Transition, a, b float64) []*Transition {
	lo := lowerBound(len(ts), func(i int) bool { return ts[i].TS >= a })
	hi := lowerBound(len(ts), func(i int) bool { return ts[i].TS > b })
	if hi < lo {
		hi = lo
	}
	return ts[lo:hi]
}

func lowerBound(n int, f func(int) bool) int {
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !f(m) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func restartIn(ts []*Transition, a, b float64) bool {
	for _, t := range transitionsIn(ts, a, b) {
		if isRestart(t) {
			return true
		}
	}
	return false
}

func ptDist(a, b *Location) float64 {
	return Haversine(a.Longitude, a.Latitude, b.Longitude, b.Latitude)
}
