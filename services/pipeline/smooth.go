package pipeline

import (
	"context"
	"fmt"
	"math"
	"slices"
)

const (
	mach1         = 340.29 // m/s
	clusterRadius = 100.0  // m
	iosFillGap    = 60.0   // s
)

// quantile is pandas' linear quantile (numpy's pre-1.22 percentile formula).
func quantile(xs []float64, q float64) float64 {
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
	pos := q * float64(len(v)-1)
	lo := math.Floor(pos)
	f := pos - lo
	i := int(lo)
	if i+1 >= len(v) {
		return v[i]
	}
	return v[i]*(1-f) + v[i+1]*f
}

// boxplotThreshold is BoxplotOutlier(multiplier).get_threshold over speeds.
func boxplotThreshold(sp []float64, k float64) float64 {
	q1, q3 := quantile(sp, 0.25), quantile(sp, 0.75)
	return q3 + k*(q3-q1)
}

type spPoint struct {
	lat, lng, ts float64
	id           string // empty for iOS fill-in points
}

func distSP(a, b spPoint) float64 { return Haversine(a.lng, a.lat, b.lng, b.lat) }

func speedSP(a, b spPoint) float64 {
	if b.ts-a.ts == 0 {
		return 0
	}
	return distSP(a, b) / (b.ts - a.ts)
}

// distSpeed is add_dist_heading_speed for these points.
func distSpeed(pts []spPoint) (dist, speed []float64) {
	dist = make([]float64, len(pts))
	speed = make([]float64, len(pts))
	for i := 1; i < len(pts); i++ {
		dist[i] = distSP(pts[i-1], pts[i])
		speed[i] = speedSP(pts[i-1], pts[i])
	}
	return dist, speed
}

// iosFill adds e-mission's fake points in long, short-distance iOS gaps,
// drawn from the run's seeded generator.
func iosFill(pts []spPoint, rng *MT19937) []spPoint {
	var out []spPoint
	for i, p := range pts {
		if i > 0 {
			s := pts[i-1]
			if p.ts-s.ts > iosFillGap && distSP(s, p) <= 100 {
				var tss []float64
				for t := s.ts + 60; t < p.ts; t += 60 {
					tss = append(tss, t)
				}
				d := make([]float64, len(tss))
				for k := range d {
					d[k] = rng.Uniform(0, 100)
				}
				for k, t := range tss {
					th := rng.Uniform(0, 2*math.Pi)
					out = append(out, spPoint{
						lat: p.lat + d[k]*(math.Sin(th)/111111),
						// e-mission passes the latitude in degrees to cos
						lng: p.lng + d[k]*((math.Cos(th)/math.Cos(p.lat))/111111),
						ts:  t,
					})
				}
			}
		}
		out = append(out, p)
	}
	return out
}

type zzSeg struct {
	start, end int
	dist       float64
	cluster    bool
	state      int // 0 unknown, 1 bad, 2 good
}

type zigzag struct {
	pts  []spPoint
	segs []*zzSeg
}

func (z *zigzag) seg(s, e int) *zzSeg {
	if s >= e {
		panic("empty zigzag segment")
	}
	d := distSP(z.pts[s], z.pts[e-1])
	return &zzSeg{start: s, end: e, dist: d, cluster: d < clusterRadius}
}

// smoothZigzag returns the inlier mask of SmoothZigzag.
func smoothZigzag(pts []spPoint, dist, speed []float64, maxSpeed float64, ios bool) []bool {
	inlier := make([]bool, len(pts))
	for i := range inlier {
		inlier[i] = true
	}
	var splits []int
	if ios {
		for j := range pts {
			if speed[j] > maxSpeed && dist[j] > 100 {
				to := -1
				for k := 0; k < j; k++ {
					if dist[k] > 100 {
						to = k
					}
				}
				if to < 0 {
					panic("no jump_to point")
				}
				splits = append(splits, to, j)
			}
		}
	} else {
		for j := range pts {
			if speed[j] > maxSpeed {
				splits = append(splits, j)
			}
		}
	}
	splits = append([]int{0}, splits...)
	if !slices.Contains(splits, len(pts)) {
		splits = append(splits, len(pts))
	}
	z := &zigzag{pts: pts}
	for i := 0; i+1 < len(splits); i++ {
		z.segs = append(z.segs, z.seg(splits[i], splits[i+1]))
	}
	if len(z.segs) == 1 {
		return inlier
	}
	start := -1
	for i, s := range z.segs {
		if !s.cluster && (start < 0 || s.dist < z.segs[start].dist) {
			start = i
		}
	}
	if start < 0 {
		m := 0
		for i, s := range z.segs {
			if s.dist < z.segs[m].dist {
				m = i
			}
		}
		if m == 0 {
			start = 1
		} else {
			start = m - 1
		}
	}
	z.segs[start].state = 2
	z.mark(start, 1)
	start = slices.Index(z.segs, z.segs[start])
	z.mark(start, -1)
	for _, s := range z.segs {
		if s.state == 0 {
			panic("unknown zigzag segment")
		}
		if s.state == 1 {
			for i := s.start; i < s.end; i++ {
				inlier[i] = false
			}
		}
	}
	return inlier
}

func (z *zigzag) mark(start, inc int) {
	i := start + inc
	expect := 1
	for i >= 0 && i < len(z.segs) {
		cur := z.segs[i]
		if cur.state != 0 {
			panic("zigzag segment state overwritten")
		}
		if expect == 1 && !cur.cluster {
			cur = z.split(i, cur, inc)
			if inc < 0 {
				i++
			}
			if !cur.cluster {
				panic("split segment is not a cluster")
			}
		}
		i += inc
		cur.state = expect
		expect = 3 - expect
	}
}

// split cuts a mixed segment at the first point > 100 m from its
// predecessor, counted from the near end, and returns the near part.
func (z *zigzag) split(i int, cur *zzSeg, inc int) *zzSeg {
	if inc > 0 {
		p := -1
		for k := cur.start + 1; k < cur.end; k++ {
			if distSP(z.pts[k-1], z.pts[k]) > clusterRadius {
				p = k
				break
			}
		}
		if p < 0 {
			panic("no split point")
		}
		near, far := z.seg(cur.start, p), z.seg(p, cur.end)
		z.segs[i] = near
		z.segs = slices.Insert(z.segs, i+1, far)
		return near
	}
	p := -1
	for k := cur.end - 2; k >= cur.start; k-- {
		if distSP(z.pts[k+1], z.pts[k]) > clusterRadius {
			p = k
			break
		}
	}
	if p < 0 {
		panic("no split point")
	}
	far, near := z.seg(cur.start, p+1), z.seg(p+1, cur.end)
	z.segs[i] = near
	z.segs = slices.Insert(z.segs, i, far)
	return near
}

// smoothPosdap is SmoothPosdap(MACH1)'s inlier mask.
func smoothPosdap(pts []spPoint, maxSpeed float64) []bool {
	inlier := make([]bool, len(pts))
	for i := range inlier {
		inlier[i] = true
	}
	var quality [][]int
	var cur []int
	for i := 1; i < len(pts); i++ {
		if speedSP(pts[i-1], pts[i]) > maxSpeed {
			quality = append(quality, cur)
			cur = nil
		}
		cur = append(cur, i)
	}
	quality = append(quality, cur)
	last := quality[0]
	for _, c := range quality[1:] {
		if len(last) == 0 {
			last = c
			continue
		}
		if len(c) == 0 {
			continue
		}
		dur := func(s []int) float64 { return pts[s[len(s)-1]].ts - pts[s[0]].ts }
		if dur(c) <= dur(last) {
			ref := last[len(last)-1]
			for _, k := range c {
				if math.Abs(distSP(pts[ref], pts[k])) > maxSpeed/1000*math.Abs(pts[ref].ts-pts[k].ts) {
					inlier[k] = false
				}
			}
		} else {
			ref := c[len(c)-1]
			for j := len(last) - 1; j >= 0; j-- {
				k := last[j]
				if math.Abs(distSP(pts[ref], pts[k])) > maxSpeed/1000*math.Abs(pts[ref].ts-pts[k].ts) {
					inlier[k] = false
				}
			}
		}
		last = c
	}
	return inlier
}

func keep(pts []spPoint, inlier []bool) []spPoint {
	var out []spPoint
	for i, p := range pts {
		if inlier[i] {
			out = append(out, p)
		}
	}
	return out
}

// goodSolution: no outliers left by e-mission's own boxplot test, or no
// impossible (supersonic) speed.
func goodSolution(pts []spPoint, inlier []bool) bool {
	if !slices.Contains(inlier, false) {
		return true
	}
	_, sp := distSpeed(keep(pts, inlier))
	th := boxplotThreshold(sp, 3)
	above := false
	mx := 0.0
	for _, s := range sp {
		if s > th {
			above = true
		}
		mx = math.Max(mx, s)
	}
	return !above || mx < mach1
}

// jumpOutliers returns the ids of the points jump smoothing removes from one
// section and the algorithm that chose them.
func jumpOutliers(pts []spPoint, ios bool, rng *MT19937) (deleted []string, algo string, err error) {
	defer func() {
		if r := recover(); r != nil {
			deleted, algo, err = nil, "", fmt.Errorf("jump smoothing: %v", r)
		}
	}()
	if ios {
		pts = iosFill(pts, rng)
	}
	dist, speed := distSpeed(pts)
	maxSpeed := boxplotThreshold(speed, 3)
	inlier := smoothZigzag(pts, dist, speed, maxSpeed, ios)
	algo = "SmoothZigzag"
	if !goodSolution(pts, inlier) {
		alt := smoothPosdap(pts, mach1)
		if goodSolution(pts, alt) {
			inlier, algo = alt, "SmoothPosdap"
		}
	}
	for i, p := range pts {
		if !inlier[i] && p.id != "" {
			deleted = append(deleted, p.id)
		}
	}
	return deleted, algo, nil
}

func (r *Run) smoothJumps(ctx context.Context) error {
	st := r.Store
	state, err := st.State(ctx, StageSmoothing)
	if err != nil {
		return err
	}
	secs, err := st.Find(ctx, Query{Keys: []string{KeyRawSection}, Field: "data.end_ts", Start: state.LastProcessedTS})
	if err != nil {
		return err
	}
	if len(secs) == 0 {
		return r.markDone(ctx, state, nil)
	}
	all, err := r.allLocations(ctx)
	if err != nil {
		return err
	}
	tc := &tripCtx{pts: all}
	var inserts []Entry
	var lastEnd float64
	for _, se := range secs {
		sec, err := Decode[Section](se)
		if err != nil {
			return err
		}
		lastEnd = sec.EndTS
		in := tc.ptsIn(sec.StartTS, sec.EndTS)
		if len(in) == 0 {
			continue
		}
		pts := make([]spPoint, len(in))
		ios := true
		for i, p := range in {
			pts[i] = spPoint{lat: p.Latitude, lng: p.Longitude, ts: p.TS, id: p.ID}
			if p.Filter != "distance" {
				ios = false
			}
		}
		deleted, algo, err := jumpOutliers(pts, ios, r.rng)
		if err != nil {
			// e-mission logs and skips the section: no smoothing entry
			r.Logger.Debug("jump smoothing skipped", "section", se.ID, "err", err)
			continue
		}
		if deleted == nil {
			deleted = []string{}
		}
		inserts = append(inserts, newEntry(r.UserID, KeySmoothing, r.now(), &Smoothing{
			Section: se.ID, DeletedPoints: deleted, OutlierAlgo: "BoxplotOutlier", FilteringAlgo: algo}))
	}
	if err := st.Insert(ctx, Timeseries, inserts); err != nil {
		return err
	}
	return r.markDone(ctx, state, ptrF(lastEnd+endFuzz))
}
