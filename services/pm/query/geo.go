package query

import (
	"fmt"
	"math"
)

// Geometry on the unit sphere, as MongoDB's 2dsphere $geoWithin: polygon edges
// are great-circle arcs, not straight lines in longitude/latitude. Like
// MongoDB, a polygon must be smaller than a hemisphere.

type vec [3]float64

func toVec(lng, lat float64) vec {
	la, lo := lat*math.Pi/180, lng*math.Pi/180
	return vec{math.Cos(la) * math.Cos(lo), math.Cos(la) * math.Sin(lo), math.Sin(la)}
}

func dot(a, b vec) float64 { return a[0]*b[0] + a[1]*b[1] + a[2]*b[2] }
func cross(a, b vec) vec {
	return vec{a[1]*b[2] - a[2]*b[1], a[2]*b[0] - a[0]*b[2], a[0]*b[1] - a[1]*b[0]}
}

// tangent projects a onto the plane tangent to the sphere at p.
func tangent(a, p vec) vec {
	d := dot(a, p)
	return vec{a[0] - d*p[0], a[1] - d*p[1], a[2] - d*p[2]}
}

// ring is a closed loop of vertices with the direction of their mean.
type ring struct {
	pts    []vec
	center vec
}

func newRing(pts []vec) ring {
	var c vec
	for _, v := range pts[:len(pts)-1] { // the last vertex repeats the first
		c[0], c[1], c[2] = c[0]+v[0], c[1]+v[1], c[2]+v[2]
	}
	return ring{pts: pts, center: c}
}

// contains sums the signed angles the ring's edges subtend around p: a full
// turn (2π) means p is inside. Each edge is the shorter great-circle arc,
// whose turn seen from p is below π for rings smaller than a hemisphere.
// Seen from the antipode of an inside point the edges make the same turn the
// other way, so points on the far side of the ring's center are outside.
func (r ring) contains(p vec) bool {
	if dot(r.center, p) <= 0 {
		return false
	}
	ring := r.pts
	sum := 0.0
	for i := 0; i+1 < len(ring); i++ {
		a, b := tangent(ring[i], p), tangent(ring[i+1], p)
		if dot(a, a) < 1e-24 && dot(ring[i], p) > 0 {
			return true // p is a vertex
		}
		sum += math.Atan2(dot(p, cross(a, b)), dot(a, b))
	}
	return math.Abs(sum) > math.Pi
}

type polygon []ring // exterior ring, then holes

func (pg polygon) contains(p vec) bool {
	if !pg[0].contains(p) {
		return false
	}
	for _, h := range pg[1:] {
		if h.contains(p) {
			return false
		}
	}
	return true
}

type region interface{ contains(p vec) bool }

type multiPolygon []polygon

func (m multiPolygon) contains(p vec) bool {
	for _, pg := range m {
		if pg.contains(p) {
			return true
		}
	}
	return false
}

type sphereCap struct {
	center vec
	cosR   float64
}

func (c sphereCap) contains(p vec) bool { return dot(c.center, p) >= c.cosR-1e-15 }

type geoCond struct{ r region }

// test: a geometry is within when every one of its points is.
func (c geoCond) test(vals []any, _ bool) bool {
	for _, v := range vals {
		pts, ok := geoPoints(v)
		if !ok || len(pts) == 0 {
			continue
		}
		all := true
		for _, p := range pts {
			if !c.r.contains(p) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// geoPoints reads a stored GeoJSON geometry (Point, LineString, Polygon,
// MultiPoint) or a legacy [lng, lat] pair.
func geoPoints(v any) ([]vec, bool) {
	switch x := v.(type) {
	case []any:
		lng, lat, ok := position(x)
		if !ok {
			return nil, false
		}
		return []vec{toVec(lng, lat)}, true
	case map[string]any:
		t, _ := x["type"].(string)
		coords := x["coordinates"]
		switch t {
		case "Point":
			arr, ok := coords.([]any)
			if !ok {
				return nil, false
			}
			return geoPoints(arr)
		case "LineString", "MultiPoint":
			return positions(coords)
		case "Polygon":
			rings, ok := coords.([]any)
			if !ok || len(rings) == 0 {
				return nil, false
			}
			return positions(rings[0])
		}
	}
	return nil, false
}

func position(a []any) (lng, lat float64, ok bool) {
	if len(a) < 2 {
		return 0, 0, false
	}
	lng, ok1 := number(a[0])
	lat, ok2 := number(a[1])
	return lng, lat, ok1 && ok2
}

func positions(v any) ([]vec, bool) {
	arr, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]vec, 0, len(arr))
	for _, e := range arr {
		p, ok := e.([]any)
		if !ok {
			return nil, false
		}
		lng, lat, ok := position(p)
		if !ok {
			return nil, false
		}
		out = append(out, toVec(lng, lat))
	}
	return out, true
}

func compileGeoWithin(path string, arg any) (cond, error) {
	m, ok := arg.(map[string]any)
	if !ok || len(m) != 1 {
		return nil, fmt.Errorf("%s: $geoWithin needs one of {\"$geometry\": ...} or {\"$centerSphere\": [[lng, lat], radians]}", path)
	}
	if g, ok := m["$geometry"]; ok {
		r, err := parseGeometry(g)
		if err != nil {
			return nil, fmt.Errorf("%s: $geoWithin: %w", path, err)
		}
		return geoCond{r}, nil
	}
	if cs, ok := m["$centerSphere"]; ok {
		a, ok := cs.([]any)
		if !ok || len(a) != 2 {
			return nil, fmt.Errorf("%s: $centerSphere needs [[lng, lat], radius in radians]", path)
		}
		c, ok := a[0].([]any)
		lng, lat, ok2 := position(c)
		rad, ok3 := number(a[1])
		if !ok || !ok2 || !ok3 || rad < 0 || !validLngLat(lng, lat) {
			return nil, fmt.Errorf("%s: $centerSphere needs [[lng, lat], radius in radians] with valid coordinates", path)
		}
		return geoCond{sphereCap{center: toVec(lng, lat), cosR: math.Cos(math.Min(rad, math.Pi))}}, nil
	}
	for k := range m {
		return nil, fmt.Errorf("%s: $geoWithin shape %s is not supported (use $geometry or $centerSphere)", path, k)
	}
	return nil, nil
}

func validLngLat(lng, lat float64) bool {
	return lng >= -180 && lng <= 180 && lat >= -90 && lat <= 90
}

func parseGeometry(g any) (region, error) {
	m, ok := g.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("$geometry must be a GeoJSON object")
	}
	t, _ := m["type"].(string)
	switch t {
	case "Polygon":
		return parsePolygon(m["coordinates"])
	case "MultiPolygon":
		list, ok := m["coordinates"].([]any)
		if !ok || len(list) == 0 {
			return nil, fmt.Errorf("MultiPolygon coordinates must be a non-empty array of polygons")
		}
		var mp multiPolygon
		for i, c := range list {
			pg, err := parsePolygon(c)
			if err != nil {
				return nil, fmt.Errorf("polygon %d: %w", i, err)
			}
			mp = append(mp, pg)
		}
		return mp, nil
	}
	return nil, fmt.Errorf("$geometry type must be Polygon or MultiPolygon, not %q", t)
}

func parsePolygon(c any) (polygon, error) {
	rings, ok := c.([]any)
	if !ok || len(rings) == 0 {
		return nil, fmt.Errorf("Polygon coordinates must be a non-empty array of rings")
	}
	var pg polygon
	for i, r := range rings {
		pts, ok := r.([]any)
		if !ok || len(pts) < 4 {
			return nil, fmt.Errorf("ring %d must be an array of at least 4 [lng, lat] positions", i)
		}
		ring := make([]vec, 0, len(pts))
		var first, last [2]float64
		for j, p := range pts {
			pa, ok := p.([]any)
			lng, lat, ok2 := position(pa)
			if !ok || !ok2 {
				return nil, fmt.Errorf("ring %d position %d must be [lng, lat]", i, j)
			}
			if !validLngLat(lng, lat) {
				return nil, fmt.Errorf("ring %d position %d: longitude must be in [-180, 180] and latitude in [-90, 90]", i, j)
			}
			if j == 0 {
				first = [2]float64{lng, lat}
			}
			last = [2]float64{lng, lat}
			ring = append(ring, toVec(lng, lat))
		}
		if first != last {
			return nil, fmt.Errorf("ring %d is not closed: its first and last positions differ", i)
		}
		pg = append(pg, newRing(ring))
	}
	return pg, nil
}
