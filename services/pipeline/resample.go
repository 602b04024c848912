package pipeline

import (
	"math"
	"slices"
)

// cpt is a location row during cleaning.
type cpt struct {
	lat, lng, alt, ts float64
	tz                string
	id                string
}

func cptOf(p Pt) cpt {
	return cpt{lat: p.Latitude, lng: p.Longitude, alt: p.Altitude, ts: p.TS, tz: p.LocalDT.Timezone, id: p.ID}
}

func cptDist(a, b cpt) float64 { return Haversine(a.lng, a.lat, b.lng, b.lat) }

// heading is e-mission's calHeading (bearing from a to b, degrees).
func heading(a, b cpt) float64 {
	phi1, phi2 := a.lng*degToRad, b.lng*degToRad
	l1, l2 := a.lat*degToRad, b.lat*degToRad
	y := math.Sin(l2-l1) * math.Cos(phi2)
	x := math.Cos(phi1)*math.Sin(phi2) - math.Sin(phi1)*math.Cos(phi2)*math.Cos(l2-l1)
	return math.Atan2(y, x) * 180 / math.Pi
}

type withSpeeds struct {
	pts                  []cpt
	dist, speed, heading []float64
}

// addDistSpeed is add_dist_heading_speed over cleaning rows.
func addDistSpeed(pts []cpt) withSpeeds {
	w := withSpeeds{pts: pts, dist: make([]float64, len(pts)), speed: make([]float64, len(pts)), heading: make([]float64, len(pts))}
	for i := 1; i < len(pts); i++ {
		d := cptDist(pts[i-1], pts[i])
		w.dist[i] = d
		if dt := pts[i].ts - pts[i-1].ts; dt != 0 {
			w.speed[i] = d / dt
		}
		w.heading[i] = heading(pts[i-1], pts[i])
	}
	return w
}

// resample30 is e-mission's resample(interval=30): numpy arange times plus
// the end, scipy interp1d (linear, extrapolating) for lat, lng and altitude.
func resample30(pts []cpt) []cpt {
	if len(pts) <= 1 {
		return pts
	}
	start, end := pts[0].ts, pts[len(pts)-1].ts
	n := int(math.Ceil((end - start) / 30))
	if n < 0 {
		n = 0
	}
	ts := make([]float64, 0, n+1)
	if n > 0 {
		ts = append(ts, start)
		delta := (start + 30) - start
		for i := 1; i < n; i++ {
			ts = append(ts, start+float64(i)*delta)
		}
	}
	ts = append(ts, end)
	// interp1d sorts its x (stable)
	xs := slices.Clone(pts)
	slices.SortStableFunc(xs, func(a, b cpt) int {
		if a.ts < b.ts {
			return -1
		}
		if a.ts > b.ts {
			return 1
		}
		return 0
	})
	tzr := tzRanges(pts)
	out := make([]cpt, len(ts))
	for k, t := range ts {
		i := lowerBound(len(xs), func(j int) bool { return xs[j].ts >= t })
		i = min(max(i, 1), len(xs)-1)
		lo, hi := xs[i-1], xs[i]
		dx := hi.ts - lo.ts
		interp := func(ylo, yhi float64) float64 { return (yhi-ylo)/dx*(t-lo.ts) + ylo }
		out[k] = cpt{lat: interp(lo.lat, hi.lat), lng: interp(lo.lng, hi.lng), alt: interp(lo.alt, hi.alt), ts: t, tz: tzAt(tzr, t)}
	}
	return out
}

type tzRange struct {
	tz         string
	start, end float64
}

func tzRanges(pts []cpt) []tzRange {
	var rs []tzRange
	cur, curStart := pts[0].tz, pts[0].ts
	for _, p := range pts {
		if p.tz != cur {
			rs = append(rs, tzRange{cur, curStart, p.ts})
			cur, curStart = p.tz, p.ts
		}
	}
	return append(rs, tzRange{cur, curStart, pts[len(pts)-1].ts})
}

func tzAt(rs []tzRange, ts float64) string {
	if len(rs) == 1 {
		return rs[0].tz
	}
	var sel []tzRange
	for _, r := range rs {
		if r.start <= ts && r.end >= ts {
			sel = append(sel, r)
		}
	}
	if len(sel) == 1 {
		return sel[0].tz
	}
	if len(sel) == 0 {
		sel = rs
	}
	best := sel[0]
	for _, r := range sel[1:] {
		if r.end-r.start > best.end-best.start {
			best = r
		}
	}
	return best.tz
}
