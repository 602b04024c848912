package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// Usercache entries are what phones push: metadata plus phone-format data
// (Android's bearing, obfuscated activity fields, state-machine strings; iOS's
// activity flags and confidence levels). The formatters turn them into
// timeseries entries (§2.1). They also accept entries already in timeseries
// form, which is what the user's client uploads from e-mission day files.

var androidStates = map[string]int{
	"unknown": -1, "local.state.start": 0, "local.state.waiting_for_trip_start": 1,
	"local.state.ongoing_trip": 2, "local.state.tracking_stopped": 3,
}

var androidTransitions = map[string]int{
	"booted": 4, "local.transition.initialize": 0, "local.transition.exited_geofence": 1,
	"local.transition.stopped_moving": 2, "local.transition.stop_tracking": 3, "local.transition.start_tracking": 17,
	"local.transition.ble_beacon_found": 18, "local.transition.ble_beacon_lost": 19, "local.transition.tracking_error": 20,
}

var iosStates = map[string]int{
	"STATE_START": 0, "STATE_WAITING_FOR_TRIP_START": 1, "STATE_ONGOING_TRIP": 2, "STATE_TRACKING_STOPPED": 3,
}

var iosTransitions = map[string]int{
	"booted": 4, "T_INITIALIZE": 0, "T_INIT_COMPLETE": 5, "T_EXITED_GEOFENCE": 1, "T_TRIP_STARTED": 6,
	"T_RECEIVED_SILENT_PUSH": 7, "T_TRIP_END_DETECTED": 8, "T_TRIP_RESTARTED": 9, "T_END_TRIP_TRACKING": 10,
	"T_DATA_PUSHED": 16, "T_TRIP_ENDED": 2, "T_FORCE_STOP_TRACKING": 3, "T_TRACKING_STOPPED": 11,
	"T_VISIT_STARTED": 13, "T_VISIT_ENDED": 14, "T_BLE_BEACON_FOUND": 18, "T_BLE_BEACON_LOST": 19,
	"T_NOP": 12, "T_START_TRACKING": 17,
}

// ErrNoFormatter marks a usercache entry the pipeline cannot convert.
var ErrNoFormatter = errors.New("no formatter")

// isMillis is e-mission's isMillisecs: old Android clients sent ms.
func isMillis(ts float64) bool { return !(ts < 1e11) }

func num(m map[string]any, keys ...string) (float64, bool) {
	for _, k := range keys {
		switch v := m[k].(type) {
		case float64:
			return v, true
		case json.Number:
			f, err := v.Float64()
			return f, err == nil
		case int:
			return float64(v), true
		}
	}
	return 0, false
}

func flag(m map[string]any, k string) bool { b, _ := m[k].(bool); return b }

// FormatUsercache converts one usercache entry (data as decoded JSON) into a
// timeseries entry, or returns ErrNoFormatter.
func FormatUsercache(e Entry) (Entry, error) {
	var data map[string]any
	switch d := e.Data.(type) {
	case map[string]any:
		data = d
	default:
		b, err := json.Marshal(d)
		if err != nil {
			return Entry{}, err
		}
		if err := json.Unmarshal(b, &data); err != nil {
			return Entry{}, fmt.Errorf("format %s: data is not an object: %w", e.Metadata.Key, err)
		}
	}
	m := e.Metadata
	if m.TimeZone == "" {
		m.TimeZone = DefaultTimeZone
	}
	if _, err := loadZone(m.TimeZone); err != nil {
		return Entry{}, fmt.Errorf("format %s: %w", m.Key, err)
	}
	if m.Platform == "android" && isMillis(m.WriteTS) {
		m.WriteTS /= 1000
	}
	wld, wf, _ := LocalTime(m.WriteTS, m.TimeZone)
	m.WriteLocalDT, m.WriteFmtTime = &wld, wf
	out := Entry{ID: e.ID, UserID: e.UserID, Metadata: m}
	switch m.Key {
	case KeyLocation, KeyFilteredLocation:
		l, err := formatLocation(m, data)
		if err != nil {
			return Entry{}, err
		}
		out.Data = l
	case KeyMotion:
		mo, err := formatMotion(m, data)
		if err != nil {
			return Entry{}, err
		}
		out.Data = mo
	case KeyTransition:
		t, err := formatTransition(m, data)
		if err != nil {
			return Entry{}, err
		}
		out.Data = t
	default:
		// other streams (battery, sensor config, stats...) keep their data
		out.Data = data
	}
	return out, nil
}

func formatLocation(m Metadata, d map[string]any) (*Location, error) {
	l := &Location{}
	var ok [3]bool
	if _, raw := d["mLatitude"]; raw {
		l.Latitude, ok[0] = num(d, "mLatitude")
		l.Longitude, ok[1] = num(d, "mLongitude")
		l.TS, ok[2] = num(d, "mTime")
		l.TS /= 1000
		l.Altitude, _ = num(d, "mAltitude")
		l.Accuracy, _ = num(d, "mAccuracy")
		l.SensedSpeed, _ = num(d, "mSpeed")
		l.Heading, _ = num(d, "mBearing")
	} else {
		l.Latitude, ok[0] = num(d, "latitude")
		l.Longitude, ok[1] = num(d, "longitude")
		l.TS, ok[2] = num(d, "ts")
		if m.Platform == "android" && isMillis(l.TS) {
			l.TS /= 1000
		}
		l.Altitude, _ = num(d, "altitude")
		l.Accuracy, _ = num(d, "accuracy")
		l.SensedSpeed, _ = num(d, "sensed_speed", "speed")
		l.Heading, _ = num(d, "bearing", "heading")
		if v, has := num(d, "elapsedRealtimeNanos"); has {
			l.ElapsedRealtimeNanos = &v
		}
		if v, has := num(d, "vaccuracy", "verticalAccuracy"); has {
			l.VAccuracy = &v
		}
		if v, has := num(d, "floor"); has {
			l.Floor = &v
		}
	}
	if !ok[0] || !ok[1] || !ok[2] {
		return nil, fmt.Errorf("format %s: latitude, longitude and ts are required", m.Key)
	}
	l.Filter, _ = d["filter"].(string)
	if l.Filter == "" {
		l.Filter = m.Filter
	}
	if l.Filter == "" {
		l.Filter = "time"
		if m.Platform == "ios" {
			l.Filter = "distance"
		}
	}
	l.Loc = NewPoint(l.Longitude, l.Latitude)
	l.LocalDT, l.FmtTime, _ = LocalTime(l.TS, m.TimeZone)
	return l, nil
}

func formatMotion(m Metadata, d map[string]any) (*Motion, error) {
	mo := &Motion{TS: m.WriteTS, LocalDT: *m.WriteLocalDT, FmtTime: m.WriteFmtTime}
	if m.Platform == "ios" {
		flags := []struct {
			name string
			typ  int
		}{{"stationary", Still}, {"walking", Walking}, {"running", Running}, {"cycling", Bicycling}, {"automotive", InVehicle}, {"unknown", UnknownMode}}
		var set []int
		for _, f := range flags {
			b := flag(d, f.name)
			v := b
			switch f.name {
			case "stationary":
				mo.Stationary = &v
			case "walking":
				mo.Walking = &v
			case "running":
				mo.Running = &v
			case "cycling":
				mo.Cycling = &v
			case "automotive":
				mo.Automotive = &v
			case "unknown":
				mo.Unknown = &v
			}
			if b {
				set = append(set, f.typ)
			}
		}
		switch {
		case len(set) == 0:
			mo.Type = NoneMode
		case len(set) == 1:
			mo.Type = set[0]
		case len(set) == 2 && set[0] == Still && set[1] == InVehicle:
			mo.Type = StoppedWhileInVehicle
		default:
			return nil, fmt.Errorf("format %s: cannot deal with several activity flags at once", m.Key)
		}
		level, _ := d["confidence_level"].(string)
		if s, isStr := d["confidence"].(string); isStr {
			level = s
		}
		if c, has := num(d, "confidence"); has {
			mo.Confidence = c
		}
		if level != "" {
			mo.ConfidenceLevel = level
			mo.Confidence = map[string]float64{"high": 100, "medium": 75, "low": 50}[level]
		}
		return mo, nil
	}
	t, ok := num(d, "agb", "zzaEg", "zzaKM", "zzaEM", "zzbhB")
	if !ok {
		// already in timeseries form: keep its own time
		if t, ok = num(d, "type"); !ok {
			return nil, fmt.Errorf("format %s: no activity type", m.Key)
		}
		if ts, has := num(d, "ts"); has {
			mo.TS = ts
			mo.LocalDT, mo.FmtTime, _ = LocalTime(ts, m.TimeZone)
		}
	}
	if t != math.Trunc(t) || t < 0 || t > AirOrHSR {
		return nil, fmt.Errorf("format %s: activity type %v is not a MotionType", m.Key, t)
	}
	mo.Type = int(t)
	mo.Confidence, _ = num(d, "agc", "zzaEh", "zzaKN", "zzaEN", "zzbhC", "confidence")
	return mo, nil
}

func formatTransition(m Metadata, d map[string]any) (*Transition, error) {
	if cs, ok := num(d, "curr_state"); ok {
		// already in timeseries form (a day file uploaded by the user's client)
		tr, ok := num(d, "transition")
		if !ok {
			return nil, fmt.Errorf("format %s: curr_state without transition", m.Key)
		}
		t := &Transition{CurrState: int(cs), Transition: int(tr), TS: m.WriteTS, LocalDT: *m.WriteLocalDT, FmtTime: m.WriteFmtTime}
		if ts, ok := num(d, "ts"); ok {
			t.TS = ts
			t.LocalDT, t.FmtTime, _ = LocalTime(ts, m.TimeZone)
		}
		return t, nil
	}
	states, trans := androidStates, androidTransitions
	if m.Platform == "ios" {
		states, trans = iosStates, iosTransitions
	}
	cs, _ := d["currState"].(string)
	tr, _ := d["transition"].(string)
	s, ok := states[cs]
	if !ok {
		return nil, fmt.Errorf("format %s: unknown state %q", m.Key, cs)
	}
	t, ok := trans[tr]
	if !ok {
		return nil, fmt.Errorf("format %s: unknown transition %q", m.Key, tr)
	}
	return &Transition{CurrState: s, Transition: t, TS: m.WriteTS, LocalDT: *m.WriteLocalDT, FmtTime: m.WriteFmtTime}, nil
}

// moveUsercache formats the usercache entries of the run's window into the
// timeseries and removes them from the cache. Entries that cannot be
// formatted stay in the cache (e-mission moves them to an error timeseries).
func (r *Run) moveUsercache(ctx context.Context) error {
	state, err := r.Store.State(ctx, StageUsercache)
	if err != nil {
		return err
	}
	end := r.now() - endFuzz
	es, err := r.Store.Find(ctx, Query{Collection: Usercache, Field: FieldWriteTS, Start: state.LastProcessedTS, End: &end})
	if err != nil {
		return err
	}
	var out []Entry
	var done []string
	var last *float64
	for _, e := range es {
		switch e.Metadata.Type {
		case "message", "sensor-data", "rw-document":
		default:
			continue
		}
		f, err := FormatUsercache(e)
		if err != nil {
			r.Logger.Warn("usercache entry not formatted", "id", e.ID, "key", e.Metadata.Key, "err", err)
			continue
		}
		if f.ID == "" {
			f.ID = NewID()
		}
		out = append(out, f)
		done = append(done, e.ID)
		w := e.Metadata.WriteTS
		last = &w
	}
	if len(out) == 0 {
		return r.markDone(ctx, state, nil)
	}
	if err := r.Store.Insert(ctx, Timeseries, out); err != nil {
		return err
	}
	if err := r.Store.Delete(ctx, Usercache, done); err != nil {
		return err
	}
	return r.markDone(ctx, state, ptrF(*last+endFuzz))
}

// filterAccuracy copies background/location points with accuracy < 200 m to
// background/filtered_location (off by default: phones filter already).
func (r *Run) filterAccuracy(ctx context.Context) error {
	if !r.FilterAccuracy {
		return nil
	}
	state, err := r.Store.State(ctx, StageAccuracy)
	if err != nil {
		return err
	}
	end := r.now() - endFuzz
	raw, err := fetchLocations(ctx, r.Store, KeyLocation, FieldWriteTS, state.LastProcessedTS, &end)
	if err != nil {
		return err
	}
	have, err := fetchLocations(ctx, r.Store, KeyFilteredLocation, FieldTS, nil, nil)
	if err != nil {
		return err
	}
	done := map[int64]bool{}
	for _, p := range have {
		done[int64(p.TS*1000)] = true
	}
	type key struct{ lat, lng, ts, acc float64 }
	seen := map[key]bool{}
	var out []Entry
	var last *float64
	for _, p := range raw {
		w := p.WriteTS
		last = &w
		k := key{p.Latitude, p.Longitude, p.TS, p.Accuracy}
		if !(p.Accuracy < 200) || seen[k] || done[int64(p.TS*1000)] {
			continue
		}
		seen[k] = true
		l := *p.Location
		e := Entry{ID: NewID(), UserID: r.UserID, Data: &l, Metadata: Metadata{Key: KeyFilteredLocation, Platform: "server",
			Type: "sensor-data", WriteTS: p.WriteTS, TimeZone: l.LocalDT.Timezone}}
		out = append(out, e)
	}
	if err := r.Store.Insert(ctx, Timeseries, out); err != nil {
		return err
	}
	if last != nil {
		last = ptrF(*last + endFuzz)
	}
	return r.markDone(ctx, state, last)
}
