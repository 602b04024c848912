package pipeline

import (
	"math"
	"slices"
)

// Trip segmentation constants (e-mission's DwellSegmentation{Time,Dist}Filter).
const (
	timeFilterTime     = 300.0 // s still before a trip end (Android)
	timeFilterPoints   = 9
	timeFilterDistance = 100.0 // m
	distFilterTime     = 600.0 // s (iOS)
	distFilterDistance = 50.0  // m
	twelveHours        = 12 * 60 * 60.0
	TimeFilterName     = "DwellSegmentationTimeFilter"
	DistFilterName     = "DwellSegmentationDistFilter"
)

type segInput struct {
	motions     []*Motion     // all motions, by ts
	transitions []*Transition // all transitions, by ts
	windowTrans []*Transition // transitions of the run's write_ts window, by write_ts
}

type segPoint struct{ start, end Pt }

// medianIdx is numpy's median of the consecutive-or-not positions.
func medianInts(xs []int) float64 {
	n := len(xs)
	if n%2 == 1 {
		return float64(xs[n/2])
	}
	return (float64(xs[n/2-1]) + float64(xs[n/2])) / 2
}

// segmentTimeFilter is DwellSegmentationTimeFilter: a trip ends when the
// phone stayed within 100 m for 5 minutes (and 9 points), or at a gap.
func segmentTimeFilter(all []Pt, in segInput) (segs []segPoint, lastWriteTS *float64) {
	pts := make([]Pt, 0, len(all))
	for _, p := range all {
		if p.WriteTS-p.TS < 1000 {
			pts = append(pts, p)
		}
	}
	var (
		startIdx  = -1
		justEnded = true
		prev      = -1
		l10       []int
		curr      = -1
	)
	setLast := func(i int) { w := pts[i].WriteTS; lastWriteTS = &w }
	for i := range pts {
		c := pts[i].Location
		curr = i
		if justEnded {
			if i > 0 {
				p := pts[i-1].Location
				if ptDist(p, c) < timeFilterDistance && c.TS-p.TS <= 60 {
					setLast(i)
					continue
				}
			}
			startIdx = i
			justEnded = false
		}
		startTS := pts[startIdx].TS
		var l5 []int
		for j := range pts {
			if t := pts[j].TS; t > c.TS-timeFilterTime && t < c.TS && t >= startTS {
				l5 = append(l5, j)
			}
		}
		l10 = l10[:0]
		for j := max(i-timeFilterPoints, startIdx); j <= i; j++ {
			l10 = append(l10, j)
		}
		if tripEndedTime(pts, prev, i, l5, l10, in) {
			var endIdx int
			endedBefore := len(l5) == 0
			if endedBefore {
				endIdx = int(medianInts(l10))
			} else {
				endIdx = int(math.Min(medianInts(l5), medianInts(l10)))
			}
			segs = append(segs, segPoint{pts[startIdx], pts[endIdx]})
			setLast(i)
			if endedBefore {
				justEnded = false
				prev = i
				startIdx = i
			} else {
				justEnded = true
				prev = -1
			}
		} else {
			prev = i
		}
	}
	if !justEnded && len(in.windowTrans) > 0 && curr >= 0 {
		for _, t := range in.windowTrans {
			if t.TS > pts[curr].TS && t.Transition == TransStoppedMove {
				segs = append(segs, segPoint{pts[startIdx], pts[int(medianInts(l10))]})
				setLast(curr)
				break
			}
		}
	}
	return segs, lastWriteTS
}

func tripEndedTime(pts []Pt, prev, i int, l5, l10 []int, in segInput) bool {
	c := pts[i].Location
	if prev >= 0 {
		p := pts[prev].Location
		dt := c.TS - p.TS
		dist := ptDist(p, c)
		speed := math.NaN()
		if dt > 0 {
			speed = dist / dt
		}
		if restartIn(in.transitions, p.TS, c.TS) {
			return true
		}
		if dt > 2*timeFilterTime && len(motionsIn(in.motions, p.TS, c.TS)) == 0 {
			return true
		}
		if dt > twelveHours {
			return true
		}
		if dt > 2*timeFilterTime && speed < timeFilterDistance/timeFilterTime {
			return true
		}
	}
	if len(l10) < timeFilterPoints-1 || len(l5) == 0 {
		return false
	}
	maxT := math.Inf(-1)
	for _, j := range l5 {
		maxT = math.Max(maxT, c.TS-pts[j].TS)
	}
	if maxT < timeFilterTime-30 {
		return false
	}
	for _, j := range l5 {
		if !(ptDist(pts[j].Location, c) < timeFilterDistance) {
			return false
		}
	}
	for _, j := range l10 {
		if !(ptDist(pts[j].Location, c) < timeFilterDistance) {
			return false
		}
	}
	return true
}

// segmentDistFilter is DwellSegmentationDistFilter (iOS): points only come
// when the phone moves, so a trip ends at a long, slow gap.
func segmentDistFilter(pts []Pt, in segInput, invalidate func(id string)) (segs []segPoint, lastWriteTS *float64) {
	setLast := func(i int) { w := pts[i].WriteTS; lastWriteTS = &w }
	glom := func(i int) bool {
		return i > 0 && ptDist(pts[i-1].Location, pts[i].Location) < distFilterDistance
	}
	justEnded := true
	startIdx, curr := -1, -1
	for i := range pts {
		curr = i
		if justEnded {
			if glom(i) {
				setLast(i)
				continue
			}
			startIdx = i
			justEnded = false
			continue
		}
		last := lastValid(pts, i)
		if tripEndedDist(pts, last, i, in, invalidate) {
			segs = append(segs, segPoint{pts[startIdx], pts[last]})
			setLast(i)
			justEnded = true
			if !glom(i) {
				startIdx = i
				justEnded = false
			}
		}
	}
	if !justEnded && len(in.windowTrans) > 0 && curr >= 0 {
		for _, t := range in.windowTrans {
			if t.TS > pts[curr].TS && t.Transition == TransStoppedMove {
				segs = append(segs, segPoint{pts[startIdx], pts[curr]})
				setLast(curr)
				break
			}
		}
	}
	return segs, lastWriteTS
}

// lastValid mirrors e-mission's find_last_valid_point, including its walk
// order (i-1, then i-2, then forward again) when points were invalidated.
func lastValid(pts []Pt, i int) int {
	j := i - 1
	if !pts[j].invalid {
		return j
	}
	for k := 2; pts[j].invalid && i-k >= 0 && i-k < len(pts); k-- {
		j = i - k
	}
	return j
}

var ignoredMotion = []int{Tilting, UnknownMode, Still, NoneMode, StoppedWhileInVehicle}

func tripEndedDist(pts []Pt, last, i int, in segInput, invalidate func(string)) bool {
	l, c := pts[last].Location, pts[i].Location
	dt := c.TS - l.TS
	if !(dt > distFilterTime) {
		return false
	}
	dist := ptDist(l, c)
	speed := math.NaN()
	if dt > 0 {
		speed = dist / dt
	}
	if restartIn(in.transitions, l.TS, c.TS) {
		return true
	}
	motions := motionsIn(in.motions, l.TS, c.TS)
	if len(motions) == 0 {
		return true
	}
	if dt > twelveHours {
		return true
	}
	if speed < (distFilterDistance*2)/(distFilterTime/2) {
		nTrans := 0
		for _, t := range in.windowTrans {
			if t.TS >= l.TS && t.TS <= c.TS {
				nTrans++
			}
		}
		moving := 0
		for _, m := range motions {
			if !slices.Contains(ignoredMotion, m.Type) && m.Confidence == 100 {
				moving++
			}
		}
		if nTrans == 0 && float64(moving)/dt > 1.0/(5*60) {
			pts[i].invalid = true
			invalidate(pts[i].ID)
			return false
		}
		return true
	}
	return false
}
