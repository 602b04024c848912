// Package pipeline is e-mission's intake pipeline in Go: raw phone entries in a
// user's timeseries become trips, places, sections and stops, cleaned and
// resampled, matching e-mission's own output on its real days (testdata/real_examples).
package pipeline

import (
	"encoding/json"
	"fmt"
)

// Keys of the streams the pipeline reads and writes.
const (
	KeyLocation         = "background/location"
	KeyFilteredLocation = "background/filtered_location"
	KeyMotion           = "background/motion_activity"
	KeyTransition       = "statemachine/transition"
	KeyRawTrip          = "segmentation/raw_trip"
	KeyRawPlace         = "segmentation/raw_place"
	KeyRawSection       = "segmentation/raw_section"
	KeyRawStop          = "segmentation/raw_stop"
	KeyRawUntracked     = "segmentation/raw_untracked"
	KeySmoothing        = "analysis/smoothing"
	KeyCleanedTrip      = "analysis/cleaned_trip"
	KeyCleanedPlace     = "analysis/cleaned_place"
	KeyCleanedSection   = "analysis/cleaned_section"
	KeyCleanedStop      = "analysis/cleaned_stop"
	KeyCleanedUntracked = "analysis/cleaned_untracked"
	KeyRecreated        = "analysis/recreated_location"
)

// Entry is e-mission's timeseries envelope. Data holds either a typed value
// (*Location, *RawTrip, ...) or raw JSON; Decode converts as needed, so an
// in-memory store avoids JSON round trips and a remote one needs nothing else.
type Entry struct {
	ID       string   `json:"_id"`
	UserID   string   `json:"user_id"`
	Metadata Metadata `json:"metadata"`
	Data     any      `json:"data"`
	Invalid  bool     `json:"invalid,omitempty"`
}

// Metadata is the envelope's metadata.
type Metadata struct {
	Key          string     `json:"key"`
	Platform     string     `json:"platform"`
	Type         string     `json:"type"`
	WriteTS      float64    `json:"write_ts"`
	TimeZone     string     `json:"time_zone"`
	WriteLocalDT *LocalDate `json:"write_local_dt,omitempty"`
	WriteFmtTime string     `json:"write_fmt_time,omitempty"`
	ReadTS       float64    `json:"read_ts"`
	Plugin       any        `json:"plugin,omitempty"`
	Filter       string     `json:"filter,omitempty"` // very old Android data kept it here
}

// Decode returns e.Data as a *T, converting through JSON when it is not one.
func Decode[T any](e Entry) (*T, error) {
	switch d := e.Data.(type) {
	case *T:
		return d, nil
	case T:
		return &d, nil
	case json.RawMessage:
		var v T
		if err := json.Unmarshal(d, &v); err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", e.Metadata.Key, e.ID, err)
		}
		return &v, nil
	default:
		b, err := json.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", e.Metadata.Key, e.ID, err)
		}
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", e.Metadata.Key, e.ID, err)
		}
		return &v, nil
	}
}

// Point is a GeoJSON point; Coordinates are [lng, lat].
type Point struct {
	Type        string     `json:"type"`
	Coordinates [2]float64 `json:"coordinates"`
}

// NewPoint returns the GeoJSON point at lng, lat.
func NewPoint(lng, lat float64) Point { return Point{Type: "Point", Coordinates: [2]float64{lng, lat}} }

// LocalDate is e-mission's broken-down local time.
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

// Location is background/location, background/filtered_location and (with
// the section fields) analysis/recreated_location.
type Location struct {
	Latitude             float64   `json:"latitude"`
	Longitude            float64   `json:"longitude"`
	Loc                  Point     `json:"loc"`
	TS                   float64   `json:"ts"`
	LocalDT              LocalDate `json:"local_dt"`
	FmtTime              string    `json:"fmt_time"`
	Altitude             float64   `json:"altitude"`
	Accuracy             float64   `json:"accuracy"`
	SensedSpeed          float64   `json:"sensed_speed"`
	Heading              float64   `json:"heading"`
	Filter               string    `json:"filter,omitempty"`
	ElapsedRealtimeNanos *float64  `json:"elapsedRealtimeNanos,omitempty"`
	VAccuracy            *float64  `json:"vaccuracy,omitempty"`
	Floor                *float64  `json:"floor,omitempty"`

	// recreated_location only
	Distance *float64 `json:"distance,omitempty"`
	Speed    *float64 `json:"speed,omitempty"`
	Mode     *int     `json:"mode,omitempty"`
	Section  string   `json:"section,omitempty"`
	Idx      *int     `json:"idx,omitempty"`
}

// Motion is background/motion_activity.
type Motion struct {
	Type            int       `json:"type"`
	Confidence      float64   `json:"confidence"`
	TS              float64   `json:"ts"`
	LocalDT         LocalDate `json:"local_dt"`
	FmtTime         string    `json:"fmt_time"`
	Stationary      *bool     `json:"stationary,omitempty"`
	Walking         *bool     `json:"walking,omitempty"`
	Running         *bool     `json:"running,omitempty"`
	Cycling         *bool     `json:"cycling,omitempty"`
	Automotive      *bool     `json:"automotive,omitempty"`
	Unknown         *bool     `json:"unknown,omitempty"`
	ConfidenceLevel string    `json:"confidence_level,omitempty"`
}

// Transition is statemachine/transition.
type Transition struct {
	CurrState  int       `json:"curr_state"`
	Transition int       `json:"transition"`
	TS         float64   `json:"ts"`
	LocalDT    LocalDate `json:"local_dt"`
	FmtTime    string    `json:"fmt_time"`
}

// Motion types (e-mission's MotionTypes).
const (
	InVehicle             = 0
	Bicycling             = 1
	OnFoot                = 2
	Still                 = 3
	UnknownMode           = 4
	Tilting               = 5
	Walking               = 7
	Running               = 8
	NoneMode              = 9
	StoppedWhileInVehicle = 10
	AirOrHSR              = 11
)

// MotionTypeName is the Python enum's str(), as the ground truth prints it.
func MotionTypeName(t int) string {
	names := map[int]string{0: "IN_VEHICLE", 1: "BICYCLING", 2: "ON_FOOT", 3: "STILL", 4: "UNKNOWN", 5: "TILTING",
		7: "WALKING", 8: "RUNNING", 9: "NONE", 10: "STOPPED_WHILE_IN_VEHICLE", 11: "AIR_OR_HSR"}
	if n, ok := names[t]; ok {
		return "MotionTypes." + n
	}
	return fmt.Sprintf("MotionTypes.%d", t)
}

// Transition types and states used by the pipeline.
const (
	TransStopTracking = 3
	TransBooted       = 4
	TransStoppedMove  = 2
	TransVisitEnded   = 14
	StateWaitingStart = 1
)

func isRestart(t *Transition) bool {
	return t.Transition == TransStopTracking || t.Transition == TransBooted ||
		(t.CurrState == StateWaitingStart && t.Transition == TransVisitEnded)
}
