package metrics

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pipeline/groundtruth"
)

// groundTruthSections turns a day's ground-truth sections (the cleaned
// sections e-mission's pipeline produced, as the diary shows them) into
// metric inputs for user.
func groundTruthSections(t testing.TB, day, user string, shift float64) []Section {
	t.Helper()
	trips, err := groundtruth.Load(filepath.Join(realdata.DirT(t), day+".ground_truth"))
	if err != nil {
		t.Fatal(err)
	}
	var out []Section
	for _, tr := range trips {
		for _, f := range tr.Features {
			if f.Type != "FeatureCollection" {
				continue
			}
			p := f.Features[0].Properties
			mode, ok := MotionTypeOf(p.SensedMode)
			if !ok {
				t.Fatalf("unknown mode %q", p.SensedMode)
			}
			ts := *p.StartTs + shift
			loc, _ := time.LoadLocation(p.StartLocalDt.Timezone)
			lt := utcOf(ts).In(loc)
			out = append(out, Section{
				User: user, StartTs: ts, Mode: mode, Distance: *p.Distance, Duration: *p.Duration,
				StartLocalDt: LocalDate{Year: lt.Year(), Month: int(lt.Month()), Day: lt.Day(), Hour: lt.Hour(),
					Minute: lt.Minute(), Second: lt.Second(), Weekday: (int(lt.Weekday()) + 6) % 7, Timezone: p.StartLocalDt.Timezone},
			})
		}
	}
	return out
}

func ip(v int) *int { return &v }

// aug27Users is the fixture of e-mission's TestMetricsCleanedSections: the
// aug-27 user, and a second user standing in for aug-21 (aug-27 moved six
// days earlier), so the aggregate spans 21, 22, 27 and 28 August UTC.
func aug27Users(t *testing.T) []Section {
	user := groundTruthSections(t, "shankari_2015-aug-27", `"aug27"`, 0)
	other := groundTruthSections(t, "shankari_2015-aug-27", `"aug21"`, -6*86400)
	if len(user) != 15 {
		t.Fatalf("aug-27 has %d sections in its ground truth, want 15", len(user))
	}
	return append(user, other...)
}

func TestFixtureCountByTimestamp(t *testing.T) {
	const augStart, augEnd = 1438387200, 1441065600
	res, err := SummarizeByTimestamp(aug27Users(t), augStart, augEnd, "d", []string{Count}, Options{User: `"aug27"`, Aggregate: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	if !strings.HasPrefix(string(b), `{"aggregate_metrics":`) || !strings.Contains(string(b), `"user_metrics":`) {
		t.Fatalf("keys: %s", b)
	}
	user, agg := res.UserMetrics[0], res.AggregateMetrics[0]
	if len(user) != 2 || user[0].LocalDt["day"] != 27 || user[1].LocalDt["day"] != 28 {
		t.Fatalf("user bins: %+v", user)
	}
	for i, s := range user {
		if s.NUsers != 1 {
			t.Errorf("user bin %d nUsers = %d", i, s.NUsers)
		}
	}
	want := map[string]any{"ON_FOOT": 3, "BICYCLING": 2, "IN_VEHICLE": 4}
	for k, v := range want {
		if user[0].Modes[k] != v {
			t.Errorf("27 Aug %s = %v, want %v", k, user[0].Modes[k], v)
		}
	}
	var nUsers []int
	for _, s := range agg {
		nUsers = append(nUsers, s.NUsers)
	}
	if got := strings.Trim(strings.Join(strings.Fields(strings.Trim(jsonOf(nUsers), "[]")), ""), ","); got != "1,1,0,0,0,0,1,1" {
		t.Errorf("aggregate nUsers = %v, want [1 1 0 0 0 0 1 1]", nUsers)
	}
	if len(agg[2].Modes) != 0 {
		t.Errorf("an empty bin has modes: %v", agg[2].Modes)
	}
	if agg[0].FmtTime != "2015-08-21T00:00:00+00:00" || agg[0].Ts != 1440115200 || agg[0].LocalDt["timezone"] != "UTC" {
		t.Errorf("first bin label: %+v", agg[0])
	}
}

func jsonOf(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestFixtureCountByLocalDateMonthly(t *testing.T) {
	res, err := SummarizeByLocalDate(aug27Users(t), DateBound{Year: ip(2015), Month: ip(8)}, DateBound{Year: ip(2015), Month: ip(9)},
		Monthly, []string{Count}, Options{User: `"aug27"`, Aggregate: true})
	if err != nil {
		t.Fatal(err)
	}
	user, agg := res.UserMetrics[0], res.AggregateMetrics[0]
	if len(user) != 1 || user[0].NUsers != 1 {
		t.Fatalf("user: %+v", user)
	}
	for k, v := range map[string]any{"ON_FOOT": 5, "BICYCLING": 4, "IN_VEHICLE": 5} {
		if user[0].Modes[k] != v {
			t.Errorf("August %s = %v, want %v", k, user[0].Modes[k], v)
		}
	}
	if len(agg) != 1 || agg[0].NUsers != 2 || agg[0].Modes["BICYCLING"] != 8 {
		t.Errorf("aggregate: %+v", agg)
	}
	s := user[0]
	if s.FmtTime != "2015-08" || s.Ts != 1438412400 || s.LocalDt["timezone"] != "America/Los_Angeles" || s.LocalDt["month"] != 8 {
		t.Errorf("period fields: %+v", s)
	}
}

func TestCountNoEntries(t *testing.T) {
	secs := aug27Users(t)
	res, err := SummarizeByLocalDate(secs, DateBound{Year: ip(2000)}, DateBound{Year: ip(2001)}, Monthly, []string{Count}, Options{User: `"aug27"`, Aggregate: true})
	if err != nil {
		t.Fatal(err)
	}
	if jsonOf(res) != `{"aggregate_metrics":[[]],"user_metrics":[[]]}` {
		t.Errorf("local date, no entries: %s", jsonOf(res))
	}
	res, err = SummarizeByTimestamp(secs, 946684800, 978307200, "m", []string{Count}, Options{User: `"aug27"`, Aggregate: true})
	if err != nil {
		t.Fatal(err)
	}
	if jsonOf(res) != `{"aggregate_metrics":[[]],"user_metrics":[[]]}` {
		t.Errorf("timestamp, no entries: %s", jsonOf(res))
	}
}

func TestMetricValues(t *testing.T) {
	secs := []Section{
		{User: "u", StartTs: 0, Mode: 0, Distance: 1000, Duration: 100, StartLocalDt: LocalDate{Year: 2016, Month: 1, Day: 1, Timezone: "UTC"}},
		{User: "u", StartTs: 1, Mode: 0, Distance: 3000, Duration: 100, StartLocalDt: LocalDate{Year: 2016, Month: 1, Day: 1, Timezone: "UTC"}},
		{User: "u", StartTs: 2, Mode: 2, Distance: 0, Duration: 0, StartLocalDt: LocalDate{Year: 2016, Month: 1, Day: 1, Timezone: "UTC"}},
		{User: "u", StartTs: 3, Mode: 1, Distance: 10, Duration: 0, StartLocalDt: LocalDate{Year: 2016, Month: 1, Day: 1, Timezone: "UTC"}},
	}
	y := DateBound{Year: ip(2016)}
	res, err := SummarizeByLocalDate(secs, y, y, Yearly, []string{Count, Distance, Duration, MedianSpeed, MeanSpeed}, Options{Aggregate: true})
	if err != nil {
		t.Fatal(err)
	}
	got := jsonOf(res.AggregateMetrics)
	want := `[[{"BICYCLING":1,"IN_VEHICLE":2,"ON_FOOT":1,"fmt_time":"2016","local_dt":{"timezone":"UTC","year":2016},"nUsers":1,"ts":1451606400}],` +
		`[{"BICYCLING":10.0,"IN_VEHICLE":4000.0,"ON_FOOT":0.0,"fmt_time":"2016","local_dt":{"timezone":"UTC","year":2016},"nUsers":1,"ts":1451606400}],` +
		`[{"BICYCLING":0.0,"IN_VEHICLE":200.0,"ON_FOOT":0.0,"fmt_time":"2016","local_dt":{"timezone":"UTC","year":2016},"nUsers":1,"ts":1451606400}],` +
		`[{"IN_VEHICLE":20.0,"fmt_time":"2016","local_dt":{"timezone":"UTC","year":2016},"nUsers":1,"ts":1451606400}],` +
		`[{"IN_VEHICLE":20.0,"fmt_time":"2016","local_dt":{"timezone":"UTC","year":2016},"nUsers":1,"ts":1451606400}]]`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestComponentFilter(t *testing.T) {
	ld := func(y, m, d int) Section {
		return Section{User: "u", Mode: 0, StartLocalDt: LocalDate{Year: y, Month: m, Day: d, Timezone: "UTC"},
			StartTs: float64(time.Date(y, time.Month(m), d, 12, 0, 0, 0, time.UTC).Unix())}
	}
	secs := []Section{ld(2015, 8, 1), ld(2015, 8, 15), ld(2015, 8, 31), ld(2015, 9, 1), ld(2015, 9, 2), ld(2015, 9, 20)}
	for _, tc := range []struct {
		name       string
		start, end DateBound
		want       int
	}{
		{"one day", DateBound{Year: ip(2015), Month: ip(8), Day: ip(15)}, DateBound{Year: ip(2015), Month: ip(8), Day: ip(15)}, 1},
		{"month", DateBound{Year: ip(2015), Month: ip(8)}, DateBound{Year: ip(2015), Month: ip(8)}, 3},
		// Components, not a date range: days 2..30 of both months are out.
		{"rollover day", DateBound{Year: ip(2015), Month: ip(8), Day: ip(31)}, DateBound{Year: ip(2015), Month: ip(9), Day: ip(1)}, 3},
		{"day range across months", DateBound{Year: ip(2015), Month: ip(8), Day: ip(1)}, DateBound{Year: ip(2015), Month: ip(9), Day: ip(2)}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := SummarizeByLocalDate(secs, tc.start, tc.end, Yearly, []string{Count}, Options{Aggregate: true})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			if len(res.AggregateMetrics[0]) > 0 {
				n = res.AggregateMetrics[0][0].Modes["IN_VEHICLE"].(int)
			}
			if n != tc.want {
				t.Errorf("selected %d sections, want %d", n, tc.want)
			}
		})
	}
	if _, err := SummarizeByLocalDate(secs, DateBound{Year: ip(2015), Month: ip(8)}, DateBound{Year: ip(2015)}, Daily, []string{Count}, Options{Aggregate: true}); err == nil {
		t.Error("mismatched components accepted")
	}
}

func TestWeeklyAndDaily(t *testing.T) {
	secs := groundTruthSections(t, "shankari_2015-aug-27", "u", 0)
	// Move the last two trips' sections four days later: Monday 31 August, a new ISO week.
	for i := range secs {
		if secs[i].StartLocalDt.Hour >= 19 {
			secs[i].StartTs += 4 * 86400
			secs[i].StartLocalDt.Day += 4
		}
	}
	b := func(m int) DateBound { return DateBound{Year: ip(2015), Month: ip(m)} }
	res, err := SummarizeByLocalDate(secs, b(8), b(9), Weekly, []string{Count}, Options{Aggregate: true})
	if err != nil {
		t.Fatal(err)
	}
	w := res.AggregateMetrics[0]
	if len(w) != 2 || w[0].FmtTime != "2015-W35" || w[1].FmtTime != "2015-W36" {
		t.Fatalf("weeks: %s", jsonOf(w))
	}
	// Monday 24 August 2015, 00:00 PDT.
	if w[0].Ts != 1440399600 || w[0].LocalDt["day"] != 24 || w[1].LocalDt["day"] != 31 {
		t.Errorf("week starts: %s", jsonOf(w))
	}
	if w[0].Modes["IN_VEHICLE"] != 4 || w[1].Modes["IN_VEHICLE"] != 1 || w[1].Modes["BICYCLING"] != 1 {
		t.Errorf("week counts: %s", jsonOf(w))
	}
	res, _ = SummarizeByLocalDate(secs, b(8), b(9), Daily, []string{Count}, Options{Aggregate: true})
	d := res.AggregateMetrics[0]
	if len(d) != 2 || d[0].FmtTime != "2015-08-27" || d[0].Ts != 1440658800 || d[1].FmtTime != "2015-08-31" {
		t.Errorf("days: %s", jsonOf(d))
	}
	// ISO week 53 and week 1 across a new year.
	if got := isoWeekMonday(2015, 53).Format("2006-01-02"); got != "2015-12-28" {
		t.Errorf("Monday of 2015-W53 = %s", got)
	}
	if got := isoWeekMonday(2016, 1).Format("2006-01-02"); got != "2016-01-04" {
		t.Errorf("Monday of 2016-W01 = %s", got)
	}
}

func TestTimestampFrequencies(t *testing.T) {
	secs := groundTruthSections(t, "shankari_2015-aug-27", "u", 0)
	for _, tc := range []struct {
		freq   string
		labels []string
	}{
		{"W", []string{"2015-08-30T00:00:00+00:00"}},
		{"M", []string{"2015-08-31T00:00:00+00:00"}},
		{"A", []string{"2015-12-31T00:00:00+00:00"}},
	} {
		res, err := SummarizeByTimestamp(secs, 0, 2e9, tc.freq, []string{Count}, Options{Aggregate: true})
		if err != nil {
			t.Fatal(err)
		}
		var labels []string
		for _, s := range res.AggregateMetrics[0] {
			labels = append(labels, s.FmtTime)
		}
		if strings.Join(labels, ",") != strings.Join(tc.labels, ",") {
			t.Errorf("%s labels = %v, want %v", tc.freq, labels, tc.labels)
		}
	}
	if _, err := SummarizeByTimestamp(secs, 0, 1, "H", []string{Count}, Options{Aggregate: true}); err == nil {
		t.Error("hourly accepted")
	}
}

func TestCost(t *testing.T) {
	d := func(y, m, dd int) DateBound {
		return DateBound{Year: ip(y), Month: ip(m), Day: ip(dd), Timezone: "America/Los_Angeles"}
	}
	off := map[string]float64{"CAR": 1000, "WALK": 100}
	alpha := map[string]float64{"CAR": 0.05, "WALK": 0.1}
	c, err := Cost(Count, d(2015, 7, 22), d(2015, 7, 23), off, alpha)
	if err != nil {
		t.Fatal(err)
	}
	want := -math.Log(0.05)*55/1000 + -math.Log(0.1)*55/100
	if math.Abs(c-want) > 1e-12 {
		t.Errorf("cost = %v, want %v", c, want)
	}
	// Across the spring DST change the original still counts whole days.
	if n, _ := NumDays(d(2016, 3, 1), d(2016, 4, 1)); n != 31 {
		t.Errorf("NumDays across DST = %v, want 31", n)
	}
	if n, _ := NumDays(DateBound{Year: ip(2015), Timezone: "UTC"}, DateBound{Year: ip(2016), Timezone: "UTC"}); n != 365 {
		t.Errorf("NumDays of a year = %v", n)
	}
	for name, tc := range map[string]struct {
		metric     string
		start, end DateBound
		alpha      map[string]float64
	}{
		"median_speed has no Δf": {MedianSpeed, d(2015, 7, 22), d(2015, 7, 23), alpha},
		"end before start":       {Count, d(2015, 7, 23), d(2015, 7, 22), alpha},
		"alpha above 1":          {Count, d(2015, 7, 22), d(2015, 7, 23), map[string]float64{"CAR": 2, "WALK": 0.1}},
		"alpha missing":          {Count, d(2015, 7, 22), d(2015, 7, 23), map[string]float64{"CAR": 0.5}},
		"bad timezone":           {Count, DateBound{Year: ip(2015), Timezone: "Mars/Olympus"}, d(2015, 7, 23), alpha},
		"not a date":             {Count, d(2015, 2, 30), d(2015, 7, 23), alpha},
		// What made answers free in the original:
		"a range of no whole day": {Count, DateBound{Year: ip(2015), Timezone: "UTC"}, DateBound{Year: ip(2015), Timezone: "UTC"}, alpha},
	} {
		if _, err := Cost(tc.metric, tc.start, tc.end, off, tc.alpha); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Cost(Distance, d(2015, 7, 22), d(2015, 7, 23), map[string]float64{"car": 5}, map[string]float64{"car": 0.5}); err == nil || !strings.Contains(err.Error(), "no sensitivity") {
		t.Errorf("a mode outside the table: %v", err)
	}
	// The modes the data holds are charged like the original's.
	c2, err := Cost(Count, d(2015, 7, 22), d(2015, 7, 23), map[string]float64{"IN_VEHICLE": 1000}, map[string]float64{"IN_VEHICLE": 0.05})
	if err != nil || math.Abs(c2-(-math.Log(0.05)*55/1000)) > 1e-12 {
		t.Errorf("IN_VEHICLE cost %v, %v", c2, err)
	}
}

func TestFloatJSON(t *testing.T) {
	for v, want := range map[float64]string{3: "3.0", 0: "0.0", 1573.988648884902: "1573.988648884902", 1e20: "1e+20", -2.5: "-2.5"} {
		if got := jsonOf(Float(v)); got != want {
			t.Errorf("Float(%v) = %s, want %s", v, got, want)
		}
	}
	if _, err := json.Marshal(Float(math.Inf(1))); err == nil {
		t.Error("Inf encoded")
	}
}

// BenchmarkSummarizeYear summarizes a year of aug-27 days (5,475 sections)
// by local day, all four metrics.
func BenchmarkSummarizeYear(b *testing.B) {
	day := groundTruthSections(b, "shankari_2015-aug-27", "u", 0)
	var secs []Section
	for d := 0; d < 365; d++ {
		for _, s := range day {
			s.StartTs += float64(d) * 86400
			t := utcOf(s.StartTs).In(time.FixedZone("PDT", -7*3600))
			s.StartLocalDt.Year, s.StartLocalDt.Month, s.StartLocalDt.Day = t.Year(), int(t.Month()), t.Day()
			secs = append(secs, s)
		}
	}
	y := DateBound{Year: ip(2015)}
	y2 := DateBound{Year: ip(2016)}
	b.ResetTimer()
	reportCPU(b, func() {
		res, err := SummarizeByLocalDate(secs, y, y2, Daily, []string{Count, Distance, Duration, MeanSpeed}, Options{Aggregate: true})
		if err != nil || len(res.AggregateMetrics[0]) != 365 {
			b.Fatalf("%v %d", err, len(res.AggregateMetrics[0]))
		}
	})
	b.ReportMetric(float64(len(secs)), "sections")
}
