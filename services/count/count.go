// Package count is UPC's count service: was the user inside a region during
// a time window (answer 0 or 1), charged −ln(α)·Δf/offset (Δf = 1) to the
// user's privacy budget before any data is read. The question goes to the
// user's PM as a filter on analysis/recreated_location (data.ts range and a
// spherical $geoWithin on data.loc), so the service never sees a location.
package count

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/e-mission/upc/internal/dp"
)

// KeyRecreatedLocation is the stream asked: the pipeline's resampled points.
const KeyRecreatedLocation = "analysis/recreated_location"

// Query is the "query" object of POST /count_query.
type Query struct {
	Offset    float64         `json:"offset"`
	Alpha     float64         `json:"alpha"`
	StartTs   Timestamp       `json:"start_ts"`
	EndTs     Timestamp       `json:"end_ts"`
	SelRegion json.RawMessage `json:"sel_region"`
}

// Timestamp is seconds since the epoch. Besides a JSON number it accepts a
// date-time string such as "2017-08-01 00:00:00+00:00" (an early example
// query of the original used them; there they silently matched nothing).
type Timestamp float64

func (t *Timestamp) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05Z07:00", "2006-01-02 15:04:05.999999999Z07:00"} {
			if tm, err := time.Parse(layout, s); err == nil {
				*t = Timestamp(float64(tm.UnixNano()) / 1e9)
				return nil
			}
		}
		return fmt.Errorf("time %q is neither a number of seconds nor a date-time with a UTC offset", s)
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("a time must be a number of seconds or a date-time string, not %s", b)
	}
	*t = Timestamp(f)
	return nil
}

// Cost is the privacy cost of q: −ln(alpha)·1/offset.
func (q Query) Cost() (float64, error) {
	return dp.Epsilon(q.Alpha, 1, q.Offset)
}

// Validate checks everything before any budget is spent, and returns the
// region's geometry (nil for none).
func (q Query) Validate() (map[string]any, error) {
	var errs []error
	if _, err := q.Cost(); err != nil {
		errs = append(errs, err)
	}
	s, e := float64(q.StartTs), float64(q.EndTs)
	if math.IsNaN(s) || math.IsNaN(e) || math.IsInf(s, 0) || math.IsInf(e, 0) {
		errs = append(errs, errors.New("start_ts and end_ts must be finite"))
	} else if s > e {
		errs = append(errs, fmt.Errorf("start_ts %v is after end_ts %v", s, e))
	}
	geom, err := parseRegion(q.SelRegion)
	if err != nil {
		errs = append(errs, fmt.Errorf("sel_region: %w", err))
	}
	return geom, errors.Join(errs...)
}

// parseRegion reads sel_region: null, or an object (a GeoJSON Feature, say)
// whose "geometry" is a Polygon or MultiPolygon.
func parseRegion(raw json.RawMessage) (map[string]any, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var region struct {
		Geometry json.RawMessage `json:"geometry"`
	}
	if err := json.Unmarshal(raw, &region); err != nil {
		return nil, errors.New(`must be null or an object {"geometry": Polygon or MultiPolygon}`)
	}
	if len(region.Geometry) == 0 || bytes.Equal(region.Geometry, []byte("null")) {
		return nil, errors.New(`has no "geometry"`)
	}
	var g struct {
		Type        string          `json:"type"`
		Coordinates json.RawMessage `json:"coordinates"`
	}
	if err := json.Unmarshal(region.Geometry, &g); err != nil {
		return nil, fmt.Errorf("geometry is not a GeoJSON object: %w", err)
	}
	var polys [][][][]float64
	switch g.Type {
	case "Polygon":
		var p [][][]float64
		if err := json.Unmarshal(g.Coordinates, &p); err != nil {
			return nil, errors.New("Polygon coordinates must be [[[lng, lat], ...], ...]")
		}
		polys = [][][][]float64{p}
	case "MultiPolygon":
		if err := json.Unmarshal(g.Coordinates, &polys); err != nil {
			return nil, errors.New("MultiPolygon coordinates must be [[[[lng, lat], ...], ...], ...]")
		}
	default:
		return nil, fmt.Errorf("geometry type %q is not Polygon or MultiPolygon", g.Type)
	}
	var errs []error
	if len(polys) == 0 {
		errs = append(errs, errors.New("no polygon"))
	}
	for i, p := range polys {
		if len(p) == 0 {
			errs = append(errs, fmt.Errorf("polygon %d has no ring", i))
		}
		for j, ring := range p {
			if err := checkRing(ring); err != nil {
				errs = append(errs, fmt.Errorf("polygon %d ring %d: %w", i, j, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(region.Geometry, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func checkRing(ring [][]float64) error {
	if len(ring) < 4 {
		return fmt.Errorf("a ring needs at least 4 positions, has %d", len(ring))
	}
	var bad []string
	for k, pos := range ring {
		if len(pos) < 2 || math.IsNaN(pos[0]) || math.IsNaN(pos[1]) || pos[0] < -180 || pos[0] > 180 || pos[1] < -90 || pos[1] > 90 {
			bad = append(bad, fmt.Sprint(k))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("positions %s are not [lng, lat] within [-180, 180] × [-90, 90]", strings.Join(bad, ", "))
	}
	first, last := ring[0], ring[len(ring)-1]
	if first[0] != last[0] || first[1] != last[1] {
		return errors.New("the ring is not closed (its last position must repeat the first)")
	}
	return nil
}

// Filter is the PM filter that selects the query's recreated locations.
func Filter(q Query, geometry map[string]any) map[string]any {
	f := map[string]any{
		"metadata.key": KeyRecreatedLocation,
		"data.ts":      map[string]any{"$gte": float64(q.StartTs), "$lte": float64(q.EndTs)},
		"invalid":      map[string]any{"$exists": false},
	}
	if geometry != nil {
		f["data.loc"] = map[string]any{"$geoWithin": map[string]any{"$geometry": geometry}}
	}
	return f
}
