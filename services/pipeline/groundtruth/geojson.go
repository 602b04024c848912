// Package groundtruth loads e-mission ground-truth files (the diary GeoJSON a
// day's pipeline run produces) and compares two trip lists the way
// e-mission's TestPipelineRealData does: exactly (compare_result) or within
// fuzz (compare_approx_result). The comparison reports every check per trip
// and per feature instead of stopping at the first failure.
package groundtruth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/e-mission/upc/internal/realdata"
)

// LocalDate is e-mission's local date-time of a timestamp (weekday: Monday=0).
type LocalDate struct {
	Year     int    `json:"year"`
	Month    int    `json:"month"`
	Day      int    `json:"day"`
	Hour     int    `json:"hour"`
	Minute   int    `json:"minute"`
	Second   int    `json:"second"`
	Weekday  int    `json:"weekday"`
	Timezone string `json:"timezone"`
}

// Geometry is a GeoJSON Point or LineString, the only shapes the diary uses.
type Geometry struct {
	Type string
	// Point holds [lng, lat] for a Point.
	Point []float64
	// Line holds the [lng, lat] vertices of a LineString.
	Line [][]float64
}

// PointGeometry returns a GeoJSON Point at lng, lat.
func PointGeometry(lng, lat float64) *Geometry {
	return &Geometry{Type: "Point", Point: []float64{lng, lat}}
}

// LineGeometry returns a GeoJSON LineString through coords ([lng, lat] each).
func LineGeometry(coords [][]float64) *Geometry {
	return &Geometry{Type: "LineString", Line: coords}
}

type rawGeometry struct {
	Type        string          `json:"type"`
	Coordinates json.RawMessage `json:"coordinates"`
}

// UnmarshalJSON decodes the coordinates according to the geometry type.
func (g *Geometry) UnmarshalJSON(b []byte) error {
	var raw rawGeometry
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*g = Geometry{Type: raw.Type}
	switch raw.Type {
	case "Point":
		if err := json.Unmarshal(raw.Coordinates, &g.Point); err != nil {
			return fmt.Errorf("decode Point coordinates: %w", err)
		}
	case "LineString":
		if err := json.Unmarshal(raw.Coordinates, &g.Line); err != nil {
			return fmt.Errorf("decode LineString coordinates: %w", err)
		}
	default:
		return fmt.Errorf("unsupported geometry type %q", raw.Type)
	}
	return nil
}

// MarshalJSON writes the GeoJSON form.
func (g Geometry) MarshalJSON() ([]byte, error) {
	var coords any = g.Point
	if g.Type == "LineString" {
		coords = g.Line
	}
	return json.Marshal(struct {
		Type        string `json:"type"`
		Coordinates any    `json:"coordinates"`
	}{g.Type, coords})
}

// ObjectID is Mongo extended JSON's {"$oid": hex}.
type ObjectID struct {
	OID string `json:"$oid"`
}

// TripProps are a trip FeatureCollection's properties.
type TripProps struct {
	Source       string    `json:"source"`
	StartTs      float64   `json:"start_ts"`
	StartLocalDt LocalDate `json:"start_local_dt"`
	StartFmtTime string    `json:"start_fmt_time"`
	StartLoc     Geometry  `json:"start_loc"`
	EndTs        float64   `json:"end_ts"`
	EndLocalDt   LocalDate `json:"end_local_dt"`
	EndFmtTime   string    `json:"end_fmt_time"`
	EndLoc       Geometry  `json:"end_loc"`
	Duration     float64   `json:"duration"`
	Distance     float64   `json:"distance"`
	RawTrip      *ObjectID `json:"raw_trip,omitempty"`
	StartPlace   *ObjectID `json:"start_place,omitempty"`
	EndPlace     *ObjectID `json:"end_place,omitempty"`
	FeatureType  string    `json:"feature_type"`
}

// FeatureProps is the union of the properties of the diary's features:
// places (enter_*/exit_*, either may be absent), stops (enter_*/exit_* and
// locations) and sections (start_*/end_*, sensed_mode, speeds...). Fields
// whose absence means something are pointers.
type FeatureProps struct {
	FeatureType string `json:"feature_type"`
	Source      string `json:"source,omitempty"`

	EnterTs      *float64   `json:"enter_ts,omitempty"`
	EnterLocalDt *LocalDate `json:"enter_local_dt,omitempty"`
	EnterFmtTime *string    `json:"enter_fmt_time,omitempty"`
	EnterLoc     *Geometry  `json:"enter_loc,omitempty"`
	ExitTs       *float64   `json:"exit_ts,omitempty"`
	ExitLocalDt  *LocalDate `json:"exit_local_dt,omitempty"`
	ExitFmtTime  *string    `json:"exit_fmt_time,omitempty"`
	ExitLoc      *Geometry  `json:"exit_loc,omitempty"`

	StartTs      *float64   `json:"start_ts,omitempty"`
	StartLocalDt *LocalDate `json:"start_local_dt,omitempty"`
	StartFmtTime *string    `json:"start_fmt_time,omitempty"`
	EndTs        *float64   `json:"end_ts,omitempty"`
	EndLocalDt   *LocalDate `json:"end_local_dt,omitempty"`
	EndFmtTime   *string    `json:"end_fmt_time,omitempty"`

	Duration *float64 `json:"duration,omitempty"`
	Distance *float64 `json:"distance,omitempty"`

	// Places.
	RawPlaces    []ObjectID `json:"raw_places,omitempty"`
	StartingTrip *ObjectID  `json:"starting_trip,omitempty"`
	EndingTrip   *ObjectID  `json:"ending_trip,omitempty"`
	DisplayName  string     `json:"display_name,omitempty"`

	// Stops and sections.
	TripID          *ObjectID `json:"trip_id,omitempty"`
	EndingSection   *ObjectID `json:"ending_section,omitempty"`
	StartingSection *ObjectID `json:"starting_section,omitempty"`
	StartStop       *ObjectID `json:"start_stop,omitempty"`
	EndStop         *ObjectID `json:"end_stop,omitempty"`

	// Sections.
	SensedMode string    `json:"sensed_mode,omitempty"`
	Times      []float64 `json:"times,omitempty"`
	Timestamps []int64   `json:"timestamps,omitempty"`
	Speeds     []float64 `json:"speeds,omitempty"`
	Distances  []float64 `json:"distances,omitempty"`
}

// Feature is one element of a trip's features: a place or stop Feature, or a
// section FeatureCollection holding one LineString Feature.
type Feature struct {
	Type       string        `json:"type"`
	ID         string        `json:"id,omitempty"`
	Geometry   *Geometry     `json:"geometry,omitempty"`
	Properties *FeatureProps `json:"properties,omitempty"`
	Features   []Feature     `json:"features,omitempty"`
}

// Trip is a trip FeatureCollection: start place, end place, stops, sections.
type Trip struct {
	Type       string    `json:"type"`
	ID         string    `json:"id,omitempty"`
	Properties TripProps `json:"properties"`
	Features   []Feature `json:"features"`
}

// File is the shape of a .ground_truth file.
type File struct {
	Data     []Trip          `json:"data"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// Load reads a trip list from path: a .ground_truth file ({"data": [...],
// "metadata": ...}), the literal null (an empty day), or a bare JSON array of
// trips.
func Load(path string) ([]Trip, error) {
	b, err := realdata.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load ground truth: %w", err)
	}
	trips, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("load ground truth %s: %w", path, err)
	}
	return trips, nil
}

// Decode parses the forms Load accepts.
func Decode(b []byte) ([]Trip, error) {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return nil, errors.New("empty input: expected null, a trip array or {\"data\": [...]}")
	case bytes.Equal(b, []byte("null")):
		return []Trip{}, nil
	case b[0] == '[':
		var trips []Trip
		if err := json.Unmarshal(b, &trips); err != nil {
			return nil, fmt.Errorf("decode trip array: %w", err)
		}
		return nonNil(trips), checkShape(trips)
	case b[0] == '{':
		var f File
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("decode ground truth object: %w", err)
		}
		return nonNil(f.Data), checkShape(f.Data)
	default:
		return nil, fmt.Errorf("unexpected JSON starting with %q: expected null, a trip array or {\"data\": [...]}", b[0])
	}
}

func nonNil(trips []Trip) []Trip {
	if trips == nil {
		return []Trip{}
	}
	return trips
}

// checkShape rejects input that decodes but is not diary GeoJSON, so a wrong
// file is reported as such rather than as a list of mismatches.
func checkShape(trips []Trip) error {
	var errs []error
	for i, t := range trips {
		if t.Type != "FeatureCollection" {
			errs = append(errs, fmt.Errorf("trip %d: type is %q, want FeatureCollection", i, t.Type))
		}
		for j, f := range t.Features {
			switch f.Type {
			case "Feature":
				if f.Properties == nil {
					errs = append(errs, fmt.Errorf("trip %d feature %d: no properties", i, j))
				}
			case "FeatureCollection":
				if len(f.Features) == 0 || f.Features[0].Properties == nil {
					errs = append(errs, fmt.Errorf("trip %d feature %d: section collection without a Feature with properties", i, j))
				}
			default:
				errs = append(errs, fmt.Errorf("trip %d feature %d: type %q", i, j, f.Type))
			}
		}
	}
	return errors.Join(errs...)
}

var diaryKey = regexp.MustCompile(`diary/trips-(\d{4}-\d{2}-\d{2})`)

// Day is the day a ground truth describes (YYYY-MM-DD): the one its
// metadata.key names ("diary/trips-2015-08-27"), else its first trip's
// start_local_dt. A ground truth with neither has no day.
func Day(b []byte) (string, error) {
	if m := diaryKey.FindSubmatch(b); m != nil {
		return string(m[1]), nil
	}
	trips, err := Decode(b)
	if err != nil {
		return "", err
	}
	if len(trips) == 0 {
		return "", errors.New("the ground truth names no day and has no trips")
	}
	ld := trips[0].Properties.StartLocalDt
	return fmt.Sprintf("%04d-%02d-%02d", ld.Year, ld.Month, ld.Day), nil
}
