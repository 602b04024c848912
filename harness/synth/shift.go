// Package synth makes synthetic UPC users from real e-mission days: each is
// a real day moved by whole weeks in time and by a small offset in space, so
// the trips stay plausible (same shapes, speeds, weekdays and local times of
// day) while every user's answers differ and are known in advance.
package synth

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/e-mission/upc/services/pipeline"
)

// Shift is how one synthetic user differs from the real day it comes from.
type Shift struct {
	// Days moves every time stamp by Days·86400 seconds (whole weeks keep
	// weekdays).
	Days int `json:"days"`
	// DLon and DLat move every position, in degrees.
	DLon float64 `json:"dlon"`
	DLat float64 `json:"dlat"`
}

// Seconds is the time shift in seconds.
func (s Shift) Seconds() float64 { return float64(s.Days) * 86400 }

// isMillis is e-mission's test: a time stamp of 10^11 or more is in ms.
func isMillis(ts float64) bool { return !(ts < 1e11) }

// Apply moves a decoded e-mission document (a day file's entry array or a
// ground truth) in place: every "ts" and "*_ts" time stamp (in seconds or
// milliseconds), "times" and "timestamps" arrays, every GeoJSON
// "coordinates", every "latitude"/"longitude" and the day a ground truth's
// "key" names ("diary/trips-YYYY-MM-DD"); the "*local_dt" and
// "*fmt_time" beside a moved time stamp are recomputed from it in their time
// zone, so they stay consistent (across a daylight-saving change too).
func Apply(v any, s Shift) error {
	return s.walk(v, "")
}

func (s Shift) walk(v any, zone string) error {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if err := s.walk(e, zone); err != nil {
				return err
			}
		}
	case map[string]any:
		// The metadata's time zone names the zone of an entry's times.
		if md, ok := x["metadata"].(map[string]any); ok {
			if tz, ok := md["time_zone"].(string); ok && tz != "" {
				zone = tz
			}
		}
		if tz, ok := x["time_zone"].(string); ok && tz != "" {
			zone = tz
		}
		for k, e := range x {
			switch {
			case k == "coordinates":
				if err := s.coords(e); err != nil {
					return fmt.Errorf("coordinates: %w", err)
				}
			case k == "latitude" || k == "longitude":
				if f, ok := e.(float64); ok {
					if k == "latitude" {
						x[k] = f + s.DLat
					} else {
						x[k] = f + s.DLon
					}
				}
			case k == "times" || k == "timestamps":
				if arr, ok := e.([]any); ok {
					for i, t := range arr {
						if f, ok := t.(float64); ok {
							arr[i] = s.ts(f)
						}
					}
				}
			case k == "ts" || strings.HasSuffix(k, "_ts"):
				f, ok := e.(float64)
				if !ok || f <= 0 { // read_ts is 0 when never read
					continue
				}
				nts := s.ts(f)
				x[k] = nts
				if err := relocal(x, strings.TrimSuffix(k, "ts"), nts, zone); err != nil {
					return fmt.Errorf("%s: %w", k, err)
				}
			case strings.HasSuffix(k, "local_dt") || strings.HasSuffix(k, "fmt_time"):
				// recomputed with their time stamp
			case k == "key":
				// A ground truth's metadata.key names its day.
				if str, ok := e.(string); ok {
					moved, err := s.diaryKey(str)
					if err != nil {
						return err
					}
					x[k] = moved
				}
			default:
				if err := s.walk(e, zone); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

var diaryKeyRE = regexp.MustCompile(`^diary/trips-(\d{4}-\d{2}-\d{2})$`)

// diaryKey moves the day a ground truth's key names ("diary/trips-2016-07-20")
// by the shift's days; any other key is kept.
func (s Shift) diaryKey(key string) (string, error) {
	m := diaryKeyRE.FindStringSubmatch(key)
	if m == nil {
		return key, nil
	}
	d, err := time.Parse("2006-01-02", m[1])
	if err != nil {
		return "", fmt.Errorf("key %q: %w", key, err)
	}
	return "diary/trips-" + d.AddDate(0, 0, s.Days).Format("2006-01-02"), nil
}

func (s Shift) ts(f float64) float64 {
	if isMillis(f) {
		return f + s.Seconds()*1000
	}
	return f + s.Seconds()
}

// relocal rewrites prefix+"local_dt" and prefix+"fmt_time" of o for the
// moved time stamp ts, in the zone its local_dt names (else zone).
func relocal(o map[string]any, prefix string, ts float64, zone string) error {
	ldKey, fmtKey := prefix+"local_dt", prefix+"fmt_time"
	ld, hasLD := o[ldKey].(map[string]any)
	_, hasFmt := o[fmtKey].(string)
	if !hasLD && !hasFmt {
		return nil
	}
	tz := zone
	if hasLD {
		if z, ok := ld["timezone"].(string); ok && z != "" {
			tz = z
		}
	}
	if isMillis(ts) {
		ts /= 1000
	}
	l, f, err := pipeline.LocalTime(ts, tz)
	if err != nil {
		return err
	}
	if hasLD {
		ld["year"], ld["month"], ld["day"] = float64(l.Year), float64(l.Month), float64(l.Day)
		ld["hour"], ld["minute"], ld["second"] = float64(l.Hour), float64(l.Minute), float64(l.Second)
		ld["weekday"] = float64(l.Weekday)
		if _, ok := ld["timezone"]; !ok {
			ld["timezone"] = l.Timezone
		}
	}
	if hasFmt {
		o[fmtKey] = f
	}
	return nil
}

// coords moves a GeoJSON position ([lon, lat, ...]) or any nesting of them.
func (s Shift) coords(v any) error {
	arr, ok := v.([]any)
	if !ok {
		return fmt.Errorf("want an array, got %T", v)
	}
	if len(arr) >= 2 {
		if lon, ok := arr[0].(float64); ok {
			lat, ok := arr[1].(float64)
			if !ok {
				return fmt.Errorf("position [%v, %v] is not two numbers", arr[0], arr[1])
			}
			arr[0], arr[1] = lon+s.DLon, lat+s.DLat
			return nil
		}
	}
	for _, e := range arr {
		if err := s.coords(e); err != nil {
			return err
		}
	}
	return nil
}

// dayOf is the UTC day of ts, for naming.
func dayOf(ts float64) string { return time.Unix(int64(ts), 0).UTC().Format("2006-01-02") }
