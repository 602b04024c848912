// Package metrics is e-mission's per-mode travel metrics (count, distance,
// duration, speed) over a user's cleaned sections, summarized by local date
// (daily, weekly, monthly, yearly) or by UTC timestamp bins, and the UPC
// metrics service that answers them with a privacy cost charged first.
package metrics

import (
	"encoding/json"
	"fmt"
)

// Section keys the summaries can read, as e-mission's
// analysis.result.section.key. The pipeline writes cleaned sections (sensed
// modes, MotionTypes); inferred sections carry PredictedModeTypes.
const (
	KeyCleanedSection  = "analysis/cleaned_section"
	KeyInferredSection = "analysis/inferred_section"
)

// LocalDate is a section's start_local_dt (weekday: Monday = 0).
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

func (ld LocalDate) component(name string) (int, bool) {
	switch name {
	case "year":
		return ld.Year, true
	case "month":
		return ld.Month, true
	case "day":
		return ld.Day, true
	case "hour":
		return ld.Hour, true
	case "minute":
		return ld.Minute, true
	case "second":
		return ld.Second, true
	case "weekday":
		return ld.Weekday, true
	}
	return 0, false
}

// Section is what the metrics read of a section entry.
type Section struct {
	User         string // the entry's user_id, as JSON text (only compared)
	StartTs      float64
	StartLocalDt LocalDate
	Mode         int // sensed_mode
	Distance     float64
	Duration     float64
}

// SectionEntry is the timeseries envelope of a section, as the PM returns it.
type SectionEntry struct {
	UserID json.RawMessage `json:"user_id"`
	Data   struct {
		StartTs      float64   `json:"start_ts"`
		StartLocalDt LocalDate `json:"start_local_dt"`
		SensedMode   int       `json:"sensed_mode"`
		Distance     float64   `json:"distance"`
		Duration     float64   `json:"duration"`
	} `json:"data"`
}

// Section converts the entry.
func (e SectionEntry) Section() Section {
	return Section{
		User:         string(e.UserID),
		StartTs:      e.Data.StartTs,
		StartLocalDt: e.Data.StartLocalDt,
		Mode:         e.Data.SensedMode,
		Distance:     e.Data.Distance,
		Duration:     e.Data.Duration,
	}
}

// DecodeSections decodes a JSON array of section entries.
func DecodeSections(b []byte) ([]Section, error) {
	var es []SectionEntry
	if err := json.Unmarshal(b, &es); err != nil {
		return nil, fmt.Errorf("decode section entries: %w", err)
	}
	out := make([]Section, len(es))
	for i, e := range es {
		out[i] = e.Section()
	}
	return out, nil
}

// ModeNames names modes in summaries, by the section key they come from.
type ModeNames func(mode int) string

var motionTypes = map[int]string{
	0: "IN_VEHICLE", 1: "BICYCLING", 2: "ON_FOOT", 3: "STILL", 4: "UNKNOWN", 5: "TILTING",
	7: "WALKING", 8: "RUNNING", 9: "NONE", 10: "STOPPED_WHILE_IN_VEHICLE", 11: "AIR_OR_HSR",
}

var predictedModeTypes = map[int]string{
	0: "UNKNOWN", 1: "WALKING", 2: "BICYCLING", 3: "BUS", 4: "TRAIN", 5: "CAR",
	6: "AIR_OR_HSR", 7: "SUBWAY", 8: "TRAM", 9: "LIGHT_RAIL",
}

func namer(table map[int]string) ModeNames {
	return func(m int) string {
		if n, ok := table[m]; ok {
			return n
		}
		return fmt.Sprintf("MODE_%d", m)
	}
}

// MotionTypes names cleaned sections' sensed modes.
var MotionTypes = namer(motionTypes)

// PredictedModeTypes names inferred sections' modes.
var PredictedModeTypes = namer(predictedModeTypes)

// MotionTypeOf returns the MotionTypes value of a name such as "ON_FOOT" or
// "MotionTypes.ON_FOOT" (as the diary GeoJSON writes sensed_mode).
func MotionTypeOf(name string) (int, bool) {
	const prefix = "MotionTypes."
	if len(name) > len(prefix) && name[:len(prefix)] == prefix {
		name = name[len(prefix):]
	}
	for v, n := range motionTypes {
		if n == name {
			return v, true
		}
	}
	return 0, false
}
