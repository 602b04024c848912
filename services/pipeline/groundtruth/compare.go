package groundtruth

import (
	"fmt"
	"math"
	"strconv"
)

// Mode names the comparison a Report comes from.
type Mode string

const (
	Exact  Mode = "exact"
	Approx Mode = "approx"
)

// Fuzz is the tolerance of the approximate comparison.
type Fuzz struct {
	Distance float64 // metres, for start/end locations and trip distance
	Time     float64 // seconds, for every *_ts
	Count    int     // for len(speeds) and len(coordinates) of a section
}

// DefaultFuzz is what e-mission's multi-sync tests pass to
// compare_approx_result (100 m, 60 s) and its hard-coded ±2 resampled points.
var DefaultFuzz = Fuzz{Distance: 100, Time: 60, Count: 2}

// Check is one comparison of a field between the expected and the actual value.
type Check struct {
	Field string `json:"field"`
	Want  string `json:"want"`
	Got   string `json:"got"`
	OK    bool   `json:"ok"`
}

// FeatureReport holds the checks of one feature of a trip.
type FeatureReport struct {
	Index  int     `json:"index"`
	Kind   string  `json:"kind"`  // feature_type of the expected feature, or its GeoJSON type
	Label  string  `json:"label"` // a human hint: the times it spans
	Checks []Check `json:"checks"`
}

// OK says whether every check of the feature passed.
func (f FeatureReport) OK() bool { return allOK(f.Checks) }

// TripReport holds the checks of one trip and of its features.
type TripReport struct {
	Index    int             `json:"index"`
	Want     string          `json:"want"` // "start → end" of the expected trip
	Got      string          `json:"got"`
	Checks   []Check         `json:"checks"`
	Features []FeatureReport `json:"features"`
}

// OK says whether the trip and all its features passed.
func (t TripReport) OK() bool {
	if !allOK(t.Checks) {
		return false
	}
	for _, f := range t.Features {
		if !f.OK() {
			return false
		}
	}
	return true
}

// Report is the outcome of comparing an actual trip list with the expected one.
// Trips are paired by position (as e-mission's zip does); when the counts
// differ, the common prefix is still compared to help find the divergence.
type Report struct {
	Mode      Mode         `json:"mode"`
	Fuzz      *Fuzz        `json:"fuzz,omitempty"`
	WantTrips int          `json:"want_trips"`
	GotTrips  int          `json:"got_trips"`
	Trips     []TripReport `json:"trips"`
}

// OK says whether the comparison passed: same trip count and every check true.
func (r Report) OK() bool {
	if r.WantTrips != r.GotTrips {
		return false
	}
	for _, t := range r.Trips {
		if !t.OK() {
			return false
		}
	}
	return true
}

// Failures counts the failed checks, plus one for a trip count mismatch.
func (r Report) Failures() int {
	n := 0
	if r.WantTrips != r.GotTrips {
		n++
	}
	for _, t := range r.Trips {
		n += failed(t.Checks)
		for _, f := range t.Features {
			n += failed(f.Checks)
		}
	}
	return n
}

func failed(cs []Check) int {
	n := 0
	for _, c := range cs {
		if !c.OK {
			n++
		}
	}
	return n
}

func allOK(cs []Check) bool { return failed(cs) == 0 }

// CompareExact is e-mission's compare_result: trip count; per trip start_ts,
// end_ts (float equality), start_loc, end_loc (exact coordinates), distance to
// 2 places and feature count; per feature the type, then for places and stops
// enter_fmt_time / exit_fmt_time (absent on one side means absent on the
// other) and feature_type, for sections start/end_fmt_time, sensed_mode,
// len(speeds) and len(coordinates).
func CompareExact(want, got []Trip) Report {
	return compare(want, got, nil)
}

// CompareApprox is e-mission's compare_approx_result with DefaultFuzz.
func CompareApprox(want, got []Trip) Report {
	return CompareApproxFuzz(want, got, DefaultFuzz)
}

// CompareApproxFuzz is compare_approx_result with the given tolerances: times
// within fz.Time, locations (haversine) and distance within fz.Distance,
// section point counts within fz.Count; modes, types and counts exact.
func CompareApproxFuzz(want, got []Trip, fz Fuzz) Report {
	return compare(want, got, &fz)
}

func compare(want, got []Trip, fz *Fuzz) Report {
	r := Report{Mode: Exact, Fuzz: fz, WantTrips: len(want), GotTrips: len(got)}
	if fz != nil {
		r.Mode = Approx
	}
	for i := 0; i < min(len(want), len(got)); i++ {
		r.Trips = append(r.Trips, compareTrip(i, want[i], got[i], fz))
	}
	return r
}

func compareTrip(i int, w, g Trip, fz *Fuzz) TripReport {
	wp, gp := w.Properties, g.Properties
	tr := TripReport{
		Index: i,
		Want:  wp.StartFmtTime + " → " + wp.EndFmtTime,
		Got:   gp.StartFmtTime + " → " + gp.EndFmtTime,
	}
	var c checker
	if fz == nil {
		c.exactFloat("start_ts", wp.StartTs, gp.StartTs)
		c.exactFloat("end_ts", wp.EndTs, gp.EndTs)
		c.exactLoc("start_loc", wp.StartLoc, gp.StartLoc)
		c.exactLoc("end_loc", wp.EndLoc, gp.EndLoc)
		c.places2("distance", wp.Distance, gp.Distance)
	} else {
		c.within("start_ts", wp.StartTs, gp.StartTs, fz.Time)
		c.within("end_ts", wp.EndTs, gp.EndTs, fz.Time)
		c.nearLoc("start_loc", wp.StartLoc, gp.StartLoc, fz.Distance)
		c.nearLoc("end_loc", wp.EndLoc, gp.EndLoc, fz.Distance)
		c.within("distance", wp.Distance, gp.Distance, fz.Distance)
	}
	c.equalInt("len(features)", len(w.Features), len(g.Features), 0)
	tr.Checks = c.checks
	for j := 0; j < min(len(w.Features), len(g.Features)); j++ {
		tr.Features = append(tr.Features, compareFeature(j, w.Features[j], g.Features[j], fz))
	}
	return tr
}

func compareFeature(j int, w, g Feature, fz *Fuzz) FeatureReport {
	fr := FeatureReport{Index: j, Kind: w.Type}
	var c checker
	c.equalString("type", w.Type, g.Type)
	if w.Type != g.Type {
		fr.Checks = c.checks
		return fr
	}
	switch w.Type {
	case "Feature":
		wp, gp := propsOf(w), propsOf(g)
		fr.Kind = wp.FeatureType
		fr.Label = fmtPtr(wp.EnterFmtTime) + " → " + fmtPtr(wp.ExitFmtTime)
		// As in e-mission, presence is decided by the *_fmt_time field even
		// when the approximate comparison then looks at *_ts.
		c.side("enter", wp.EnterFmtTime, gp.EnterFmtTime, wp.EnterTs, gp.EnterTs, fz)
		c.side("exit", wp.ExitFmtTime, gp.ExitFmtTime, wp.ExitTs, gp.ExitTs, fz)
		c.equalString("feature_type", wp.FeatureType, gp.FeatureType)
	case "FeatureCollection":
		fr.Kind = "section"
		ws, wok := sectionOf(w)
		gs, gok := sectionOf(g)
		if !wok || !gok {
			c.add("features[0]", present(wok), present(gok), false)
			break
		}
		wp, gp := propsOf(ws), propsOf(gs)
		fr.Label = fmtPtr(wp.StartFmtTime) + " → " + fmtPtr(wp.EndFmtTime) + " " + wp.SensedMode
		if fz == nil {
			c.equalString("start_fmt_time", fmtPtr(wp.StartFmtTime), fmtPtr(gp.StartFmtTime))
			c.equalString("end_fmt_time", fmtPtr(wp.EndFmtTime), fmtPtr(gp.EndFmtTime))
		} else {
			c.withinPtr("start_ts", wp.StartTs, gp.StartTs, fz.Time)
			c.withinPtr("end_ts", wp.EndTs, gp.EndTs, fz.Time)
		}
		c.equalString("sensed_mode", wp.SensedMode, gp.SensedMode)
		tol := 0
		if fz != nil {
			tol = fz.Count
		}
		c.equalInt("len(speeds)", len(wp.Speeds), len(gp.Speeds), tol)
		c.equalInt("len(coordinates)", lineLen(ws), lineLen(gs), tol)
	}
	fr.Checks = c.checks
	return fr
}

func propsOf(f Feature) FeatureProps {
	if f.Properties == nil {
		return FeatureProps{}
	}
	return *f.Properties
}

func sectionOf(fc Feature) (Feature, bool) {
	if len(fc.Features) == 0 {
		return Feature{}, false
	}
	return fc.Features[0], true
}

func lineLen(f Feature) int {
	if f.Geometry == nil {
		return 0
	}
	return len(f.Geometry.Line)
}

func present(ok bool) string {
	if ok {
		return "present"
	}
	return "absent"
}

func fmtPtr(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

// checker accumulates checks.
type checker struct{ checks []Check }

func (c *checker) add(field, want, got string, ok bool) {
	c.checks = append(c.checks, Check{Field: field, Want: want, Got: got, OK: ok})
}

func ff(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func (c *checker) exactFloat(field string, w, g float64) {
	c.add(field, ff(w), ff(g), w == g)
}

// places2 is Python's assertAlmostEqual(places=2): round(|a-b|, 2) == 0.
// Python rounds the exact binary value, so that holds exactly when the
// difference is below the real 0.005, i.e. below the double 0.005 (the
// nearest double lies just above 0.005).
func (c *checker) places2(field string, w, g float64) {
	ok := w == g || math.Abs(w-g) < 0.005
	c.add(field, ff(w), ff(g), ok)
}

// within is assertAlmostEqual(delta=d): equal, or |a-b| <= d.
func (c *checker) within(field string, w, g, d float64) {
	ok := w == g || math.Abs(g-w) <= d
	c.add(field, ff(w), ff(g)+" (Δ "+ff(g-w)+")", ok)
}

func (c *checker) withinPtr(field string, w, g *float64, d float64) {
	if w == nil || g == nil {
		c.add(field, presentF(w), presentF(g), w == nil && g == nil)
		return
	}
	c.within(field, *w, *g, d)
}

func presentF(p *float64) string {
	if p == nil {
		return "absent"
	}
	return ff(*p)
}

func (c *checker) equalString(field, w, g string) {
	c.add(field, w, g, w == g)
}

func (c *checker) equalInt(field string, w, g, tol int) {
	d := g - w
	if d < 0 {
		d = -d
	}
	c.add(field, strconv.Itoa(w), strconv.Itoa(g), d <= tol)
}

func coordString(g Geometry) string {
	return fmt.Sprint(g.Point)
}

func (c *checker) exactLoc(field string, w, g Geometry) {
	ok := w.Type == g.Type && len(w.Point) == len(g.Point)
	for i := range w.Point {
		ok = ok && w.Point[i] == g.Point[i]
	}
	c.add(field, coordString(w), coordString(g), ok)
}

func (c *checker) nearLoc(field string, w, g Geometry, d float64) {
	if len(w.Point) < 2 || len(g.Point) < 2 {
		c.add(field, coordString(w), coordString(g), false)
		return
	}
	dist := Haversine(w.Point, g.Point)
	c.add(field, coordString(w), fmt.Sprintf("%v (%.1f m away)", g.Point, dist), dist <= d)
}

// side compares a place's or stop's enter or exit time: the fmt_time string
// exactly, or the ts within fuzz.
func (c *checker) side(name string, wf, gf *string, wts, gts *float64, fz *Fuzz) {
	field := name + "_fmt_time"
	if wf == nil || gf == nil {
		c.add(field, fmtPtr(wf), fmtPtr(gf), wf == nil && gf == nil)
		return
	}
	if fz == nil {
		c.equalString(field, *wf, *gf)
		return
	}
	c.withinPtr(name+"_ts", wts, gts, fz.Time)
}

// Haversine is e-mission's calDistance between two [lng, lat] points, in
// metres, with its operation order.
func Haversine(p1, p2 []float64) float64 {
	const earthRadius = 6371000
	dLat := radians(p1[1] - p2[1])
	dLon := radians(p1[0] - p2[0])
	lat1, lat2 := radians(p1[1]), radians(p2[1])
	a := math.Pow(math.Sin(dLat/2), 2) + math.Pow(math.Sin(dLon/2), 2)*math.Cos(lat1)*math.Cos(lat2)
	return earthRadius * 2 * math.Atan2(math.Sqrt(a), math.Sqrt(1-a))
}

func radians(deg float64) float64 { return deg * math.Pi / 180 }
