package synth

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/pm/query"
)

// CountAnswers is what the count service must answer for each user of m
// (by name) to q: 1 when a resampled point of one of the user's ground-truth
// sections (the pipeline's analysis/recreated_location) lies in q's region
// during q's window, else 0. Points are matched with the count service's own
// PM filter, so the test is the PM's ($geoWithin on the sphere, ts range).
func CountAnswers(dir string, m *Manifest, q count.Query) (map[string]int64, error) {
	geom, err := q.Validate()
	if err != nil {
		return nil, err
	}
	f, err := query.Compile(count.Filter(q, geom))
	if err != nil {
		return nil, fmt.Errorf("compile count filter: %w", err)
	}
	out := make(map[string]int64, len(m.Users))
	for _, u := range m.Users {
		b, err := realdata.ReadFile(filepath.Join(dir, u.Name+realdata.GroundTruthSuffix))
		if err != nil {
			return nil, err
		}
		gt, err := decode(b)
		if err != nil {
			return nil, fmt.Errorf("%s ground truth: %w", u.Name, err)
		}
		hit, err := anyPoint(gt, f)
		if err != nil {
			return nil, fmt.Errorf("%s ground truth: %w", u.Name, err)
		}
		out[u.Name] = 0
		if hit {
			out[u.Name] = 1
		}
	}
	return out, nil
}

// anyPoint reports whether a section point of the ground truth matches f.
func anyPoint(gt any, f *query.Filter) (bool, error) {
	trips, err := gtTrips(gt)
	if err != nil {
		return false, err
	}
	for _, t := range trips {
		for _, sec := range sections(t) {
			g, _ := sec["geometry"].(map[string]any)
			p, _ := sec["properties"].(map[string]any)
			coords, _ := g["coordinates"].([]any)
			times, _ := p["times"].([]any)
			start, _ := p["start_ts"].(float64)
			end, _ := p["end_ts"].(float64)
			for i, c := range coords {
				pos, _ := c.([]any)
				var ts float64
				if len(times) == len(coords) {
					ts, _ = times[i].(float64)
				} else if len(coords) > 1 {
					// Some ground truths keep no times: the pipeline resamples
					// evenly from start to end.
					ts = start + (end-start)*float64(i)/float64(len(coords)-1)
				} else {
					ts = start
				}
				if len(pos) < 2 {
					continue
				}
				doc := map[string]any{
					"metadata": map[string]any{"key": count.KeyRecreatedLocation},
					"data":     map[string]any{"ts": ts, "loc": map[string]any{"type": "Point", "coordinates": []any{pos[0], pos[1]}}},
				}
				if f.Match(doc) {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// sections finds the section features (LineStrings with a start and end
// time) of a trip FeatureCollection, at any depth.
func sections(v any) []map[string]any {
	var out []map[string]any
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if g, ok := x["geometry"].(map[string]any); ok && g["type"] == "LineString" {
				if p, ok := x["properties"].(map[string]any); ok {
					if _, ok := p["start_ts"].(float64); ok {
						out = append(out, x)
						return
					}
				}
			}
			if fs, ok := x["features"].([]any); ok {
				for _, f := range fs {
					walk(f)
				}
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return out
}

// Box is a count query region: a GeoJSON Feature whose geometry is the
// square of half-width d degrees around lon, lat.
func Box(lon, lat, d float64) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"type": "Feature", "geometry": map[string]any{"type": "Polygon", "coordinates": [][][2]float64{{
		{lon - d, lat - d}, {lon + d, lat - d}, {lon + d, lat + d}, {lon - d, lat + d}, {lon - d, lat - d},
	}}}})
	return b
}
