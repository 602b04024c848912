package pipeline

import (
	"context"
	"encoding/json"
	"testing"
)

func TestLocalTime(t *testing.T) {
	cases := []struct {
		ts   float64
		tz   string
		want string
	}{
		{1440348354.303, "America/Los_Angeles", "2015-08-23T09:45:54.303000-07:00"},
		{1469001915.028071, "America/Los_Angeles", "2016-07-20T01:05:15.028071-07:00"},
		{1456182000, "America/Los_Angeles", "2016-02-22T15:00:00-08:00"},         // no fraction
		{1456182000.0000005, "America/Los_Angeles", "2016-02-22T15:00:00-08:00"}, // rounds to even (0 µs)
		{1440354611.63178, "America/Los_Angeles", "2015-08-23T11:30:11.631780-07:00"},
		{1440348354.9999996, "Asia/Kolkata", "2015-08-23T22:15:55+05:30"}, // carry into the second
		{0, "UTC", "1970-01-01T00:00:00+00:00"},
	}
	for _, c := range cases {
		_, got, err := LocalTime(c.ts, c.tz)
		if err != nil || got != c.want {
			t.Errorf("LocalTime(%v, %s) = %q, %v; want %q", c.ts, c.tz, got, err, c.want)
		}
	}
	ld, _, _ := LocalTime(1440348354.303, "America/Los_Angeles")
	if ld != (LocalDate{2015, 8, 23, 9, 45, 54, 6, "America/Los_Angeles"}) {
		t.Errorf("local date = %+v", ld)
	}
	if _, _, err := LocalTime(0, "Mars/Olympus"); err == nil {
		t.Error("unknown zone accepted")
	}
}

func raw(t *testing.T, s string) Entry {
	t.Helper()
	var e struct {
		Metadata Metadata       `json:"metadata"`
		Data     map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(s), &e); err != nil {
		t.Fatal(err)
	}
	return Entry{ID: "x", UserID: "u", Metadata: e.Metadata, Data: e.Data}
}

func TestFormatters(t *testing.T) {
	t.Run("android location", func(t *testing.T) {
		e := raw(t, `{"metadata":{"key":"background/filtered_location","platform":"android","type":"sensor-data","write_ts":1440348356.367,"time_zone":"America/Los_Angeles"},
			"data":{"latitude":37.39,"longitude":-122.08,"ts":1440348355.307,"altitude":11.5,"accuracy":15,"speed":11.5,"bearing":217,"elapsedRealtimeNanos":123,"filter":"time"}}`)
		f, err := FormatUsercache(e)
		if err != nil {
			t.Fatal(err)
		}
		l := f.Data.(*Location)
		if l.Heading != 217 || l.Loc.Coordinates != [2]float64{-122.08, 37.39} || l.FmtTime != "2015-08-23T09:45:55.307000-07:00" || l.Filter != "time" || l.SensedSpeed != 11.5 {
			t.Errorf("formatted %+v", l)
		}
		if f.Metadata.WriteFmtTime != "2015-08-23T09:45:56.367000-07:00" {
			t.Errorf("write_fmt_time %s", f.Metadata.WriteFmtTime)
		}
	})
	t.Run("old android location in ms", func(t *testing.T) {
		e := raw(t, `{"metadata":{"key":"background/location","platform":"android","type":"sensor-data","write_ts":1440348356367},
			"data":{"mLatitude":37.39,"mLongitude":-122.08,"mTime":1440348355307,"mAccuracy":15,"mBearing":10}}`)
		f, err := FormatUsercache(e)
		if err != nil {
			t.Fatal(err)
		}
		l := f.Data.(*Location)
		if l.TS != 1440348355.307 || f.Metadata.WriteTS != 1440348356.367 || l.Heading != 10 || f.Metadata.TimeZone != DefaultTimeZone {
			t.Errorf("formatted %+v %+v", l, f.Metadata)
		}
	})
	t.Run("ios location", func(t *testing.T) {
		e := raw(t, `{"metadata":{"key":"background/location","platform":"ios","type":"sensor-data","write_ts":1469065862.64254,"time_zone":"America/Los_Angeles"},
			"data":{"latitude":37.33,"longitude":-122.04,"ts":1468926825.309539,"bearing":-1,"floor":0,"vaccuracy":4,"filter":"distance"}}`)
		f, err := FormatUsercache(e)
		if err != nil {
			t.Fatal(err)
		}
		l := f.Data.(*Location)
		if l.FmtTime != "2016-07-19T04:13:45.309539-07:00" || l.Filter != "distance" || l.VAccuracy == nil || *l.VAccuracy != 4 || l.Heading != -1 {
			t.Errorf("formatted %+v", l)
		}
	})
	t.Run("android motion", func(t *testing.T) {
		e := raw(t, `{"metadata":{"key":"background/motion_activity","platform":"android","type":"sensor-data","write_ts":1440348359.413},"data":{"zzaEg":5,"zzaEh":100}}`)
		f, err := FormatUsercache(e)
		if err != nil {
			t.Fatal(err)
		}
		m := f.Data.(*Motion)
		if m.Type != Tilting || m.Confidence != 100 || m.TS != 1440348359.413 || m.FmtTime != "2015-08-23T09:45:59.413000-07:00" {
			t.Errorf("formatted %+v", m)
		}
	})
	t.Run("ios motion", func(t *testing.T) {
		for _, c := range []struct {
			data string
			typ  int
			conf float64
		}{
			{`{"automotive":true,"confidence":"medium"}`, InVehicle, 75},
			{`{"stationary":true,"automotive":true,"confidence":"high"}`, StoppedWhileInVehicle, 100},
			{`{"confidence":"low"}`, NoneMode, 50},
			{`{"walking":true,"confidence":100,"confidence_level":"high"}`, Walking, 100},
		} {
			e := raw(t, `{"metadata":{"key":"background/motion_activity","platform":"ios","type":"sensor-data","write_ts":1469001926.432104,"time_zone":"America/Los_Angeles"},"data":`+c.data+`}`)
			f, err := FormatUsercache(e)
			if err != nil {
				t.Fatal(err)
			}
			m := f.Data.(*Motion)
			if m.Type != c.typ || m.Confidence != c.conf || m.TS != 1469001926.432104 {
				t.Errorf("%s: formatted %+v", c.data, m)
			}
		}
		e := raw(t, `{"metadata":{"key":"background/motion_activity","platform":"ios","type":"sensor-data","write_ts":1},"data":{"walking":true,"cycling":true}}`)
		if _, err := FormatUsercache(e); err == nil {
			t.Error("two flags accepted")
		}
	})
	t.Run("transitions", func(t *testing.T) {
		for _, c := range []struct {
			platform, state, trans string
			cs, tr                 int
		}{
			{"android", "local.state.waiting_for_trip_start", "local.transition.stopped_moving", 1, 2},
			{"android", "local.state.ongoing_trip", "booted", 2, 4},
			{"ios", "STATE_WAITING_FOR_TRIP_START", "T_VISIT_ENDED", 1, 14},
			{"ios", "STATE_ONGOING_TRIP", "T_TRIP_ENDED", 2, 2},
		} {
			e := raw(t, `{"metadata":{"key":"statemachine/transition","platform":"`+c.platform+`","type":"message","write_ts":1469001915.028071},"data":{"currState":"`+c.state+`","transition":"`+c.trans+`"}}`)
			f, err := FormatUsercache(e)
			if err != nil {
				t.Fatal(err)
			}
			tr := f.Data.(*Transition)
			if tr.CurrState != c.cs || tr.Transition != c.tr || tr.TS != 1469001915.028071 {
				t.Errorf("%s %s: formatted %+v", c.state, c.trans, tr)
			}
		}
		e := raw(t, `{"metadata":{"key":"statemachine/transition","platform":"ios","type":"message","write_ts":1},"data":{"currState":"STATE_X","transition":"T_NOP"}}`)
		if _, err := FormatUsercache(e); err == nil {
			t.Error("unknown state accepted")
		}
	})
	t.Run("bad time zone", func(t *testing.T) {
		e := raw(t, `{"metadata":{"key":"background/battery","platform":"ios","type":"message","write_ts":1,"time_zone":"Nowhere/Land"},"data":{}}`)
		if _, err := FormatUsercache(e); err == nil {
			t.Error("bad zone accepted")
		}
	})
}

func TestUsercacheAndAccuracyStages(t *testing.T) {
	ctx := context.Background()
	st := NewMemStore()
	var cache []Entry
	for i, acc := range []float64{10, 250, 10, 30} {
		ts := 1440348355.0 + float64(i)
		lat := 37.39 + float64(i)*0.001
		if i == 2 { // an exact duplicate of point 0 apart from its time of writing
			ts, lat = 1440348355.0, 37.39
		}
		cache = append(cache, raw(t, `{"metadata":{"key":"background/location","platform":"android","type":"sensor-data","write_ts":`+jsonNum(ts+1+float64(i)*0.1)+`},
			"data":{"latitude":`+jsonNum(lat)+`,"longitude":-122.08,"ts":`+jsonNum(ts)+`,"accuracy":`+jsonNum(acc)+`,"bearing":1}}`))
		cache[i].ID = NewID()
	}
	cache = append(cache, raw(t, `{"metadata":{"key":"statemachine/transition","platform":"android","type":"message","write_ts":1440348360},"data":{"currState":"nonsense","transition":"booted"}}`))
	cache[4].ID = NewID()
	if err := st.Insert(ctx, Usercache, cache); err != nil {
		t.Fatal(err)
	}
	r := &Run{Store: st, UserID: "u", FilterAccuracy: true}
	if err := r.Execute(ctx); err != nil {
		t.Fatal(err)
	}
	if n := st.Count(Timeseries, KeyLocation); n != 4 {
		t.Errorf("%d locations moved, want 4", n)
	}
	left, _ := st.Find(ctx, Query{Collection: Usercache})
	if len(left) != 1 || left[0].Metadata.Key != KeyTransition {
		t.Errorf("usercache keeps %d entries, want only the unformattable transition", len(left))
	}
	if n := st.Count(Timeseries, KeyFilteredLocation); n != 2 {
		t.Errorf("%d filtered locations, want 2 (one too inaccurate, one duplicate)", n)
	}
	// A second run finds nothing new and adds nothing.
	if err := r.Execute(ctx); err != nil {
		t.Fatal(err)
	}
	if n := st.Count(Timeseries, KeyFilteredLocation); n != 2 {
		t.Errorf("second run: %d filtered locations, want 2", n)
	}
}

func jsonNum(f float64) string { b, _ := json.Marshal(f); return string(b) }

// numpy: np.random.seed(0); np.random.random() → 0.5488135039273248, then
// 0.7151893663724195; np.random.seed(42) → 0.3745401188473625.
func TestMT19937MatchesNumpy(t *testing.T) {
	g := NewMT19937(0)
	if a, b := g.Float64(), g.Float64(); a != 0.5488135039273248 || b != 0.7151893663724195 {
		t.Errorf("seed 0: %v %v", a, b)
	}
	if v := NewMT19937(42).Float64(); v != 0.3745401188473625 {
		t.Errorf("seed 42: %v", v)
	}
}

func TestFormattersKeepTimeseriesForm(t *testing.T) {
	e := raw(t, `{"metadata":{"key":"statemachine/transition","platform":"android","type":"message","write_ts":1440318569.034,"time_zone":"America/Los_Angeles"},
		"data":{"curr_state":1,"transition":0,"ts":1440318569.034}}`)
	f, err := FormatUsercache(e)
	if err != nil {
		t.Fatal(err)
	}
	if tr := f.Data.(*Transition); tr.CurrState != 1 || tr.Transition != 0 || tr.FmtTime != "2015-08-23T01:29:29.034000-07:00" {
		t.Errorf("transition %+v", tr)
	}
	e = raw(t, `{"metadata":{"key":"background/motion_activity","platform":"android","type":"message","write_ts":1440348360},
		"data":{"type":5,"confidence":100,"ts":1440348359.413}}`)
	if f, err = FormatUsercache(e); err != nil {
		t.Fatal(err)
	}
	if m := f.Data.(*Motion); m.Type != Tilting || m.TS != 1440348359.413 {
		t.Errorf("motion %+v", m)
	}
}
