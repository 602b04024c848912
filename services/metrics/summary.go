package metrics

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
	_ "time/tzdata" // the service runs FROM scratch, without a zoneinfo database
)

// Metric names, as e-mission's get_summary_fn.
const (
	Count       = "count"
	Distance    = "distance"
	Duration    = "duration"
	MedianSpeed = "median_speed" // e-mission redirects it to mean_speed
	MeanSpeed   = "mean_speed"
)

// metricFn reduces the sections of one mode to a value; ok false omits the mode.
type metricFn func(ss []Section) (v any, ok bool)

var metricFns = map[string]metricFn{
	Count: func(ss []Section) (any, bool) { return len(ss), true },
	Distance: func(ss []Section) (any, bool) {
		sum := 0.0
		for _, s := range ss {
			sum += s.Distance
		}
		return Float(sum), true
	},
	Duration: func(ss []Section) (any, bool) {
		sum := 0.0
		for _, s := range ss {
			sum += s.Duration
		}
		return Float(sum), true
	},
	MedianSpeed: meanSpeed,
	MeanSpeed:   meanSpeed,
}

// meanSpeed is the mean of distance/duration per section, NaN rows dropped
// and the mode omitted when nothing is left. Infinite speeds (a zero duration
// with a distance), which pandas would keep and Python's JSON would print as
// Infinity, are dropped too: JSON cannot carry them.
func meanSpeed(ss []Section) (any, bool) {
	sum, n := 0.0, 0
	for _, s := range ss {
		v := s.Distance / s.Duration
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		sum += v
		n++
	}
	if n == 0 {
		return nil, false
	}
	return Float(sum / float64(n)), true
}

// CheckMetric reports whether name is a known metric.
func CheckMetric(name string) error {
	if _, ok := metricFns[name]; !ok {
		return fmt.Errorf("unknown metric %q (want count, distance, duration, median_speed or mean_speed)", name)
	}
	return nil
}

// Float is a float64 that JSON-encodes as Python does: an integral value
// keeps its ".0", so answers read the same as the original service's.
type Float float64

func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("metric value %v is not representable in JSON", v)
	}
	b := strconv.AppendFloat(nil, v, 'g', -1, 64)
	if v == math.Trunc(v) && math.Abs(v) < 1e16 {
		b = strconv.AppendFloat(nil, v, 'f', 1, 64)
	}
	return b, nil
}

// Summary is one period's ModeStatTimeSummary: its start, the number of
// users, and one value per mode name.
type Summary struct {
	Ts      int64
	LocalDt map[string]any
	FmtTime string
	NUsers  int
	Modes   map[string]any
}

// MarshalJSON flattens the modes into the object, as e-mission does.
func (s Summary) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(s.Modes)+4)
	for k, v := range s.Modes {
		m[k] = v
	}
	m["ts"] = s.Ts
	m["local_dt"] = s.LocalDt
	m["fmt_time"] = s.FmtTime
	m["nUsers"] = s.NUsers
	return json.Marshal(m)
}

// Result is summarize_*'s answer: per metric (in the order asked), the list
// of period summaries.
type Result struct {
	AggregateMetrics [][]Summary `json:"aggregate_metrics,omitempty"`
	UserMetrics      [][]Summary `json:"user_metrics,omitempty"`
}

// Freq is a local-date grouping.
type Freq string

const (
	Daily   Freq = "DAILY"
	Weekly  Freq = "WEEKLY" // not in e-mission: ISO weeks, Monday first, in local time
	Monthly Freq = "MONTHLY"
	Yearly  Freq = "YEARLY"
)

// ParseFreq checks a local-date frequency name.
func ParseFreq(s string) (Freq, error) {
	switch f := Freq(s); f {
	case Daily, Weekly, Monthly, Yearly:
		return f, nil
	}
	return "", fmt.Errorf("unknown freq %q (want DAILY, WEEKLY, MONTHLY or YEARLY)", s)
}

// DateBound is a start or end of a local-date range: some of year, month,
// day, hour, minute, second, weekday, and a timezone (which the filter ignores).
type DateBound struct {
	Year     *int   `json:"year,omitempty"`
	Month    *int   `json:"month,omitempty"`
	Day      *int   `json:"day,omitempty"`
	Hour     *int   `json:"hour,omitempty"`
	Minute   *int   `json:"minute,omitempty"`
	Second   *int   `json:"second,omitempty"`
	Weekday  *int   `json:"weekday,omitempty"`
	Timezone string `json:"timezone,omitempty"`
}

var componentOrder = []string{"year", "month", "day", "hour", "minute", "second", "weekday"}

func (b DateBound) components() map[string]int {
	m := map[string]int{}
	for name, p := range map[string]*int{"year": b.Year, "month": b.Month, "day": b.Day,
		"hour": b.Hour, "minute": b.Minute, "second": b.Second, "weekday": b.Weekday} {
		if p != nil {
			m[name] = *p
		}
	}
	return m
}

// componentFilter is e-mission's TimeComponentQuery on start_local_dt: for
// each component named in the bounds, start ≤ v ≤ end, or, when start > end
// for that component, v ≤ end or v ≥ start. It is not a date range: 2015-08-30
// to 2015-09-02 selects days 2..30 of August and September.
type componentFilter struct {
	start, end map[string]int
}

func newComponentFilter(start, end DateBound) (componentFilter, error) {
	s, e := start.components(), end.components()
	if !sameKeys(s, e) {
		return componentFilter{}, fmt.Errorf("start_time and end_time must name the same date components (start has %v, end has %v)", keys(s), keys(e))
	}
	if len(s) == 0 {
		return componentFilter{}, errors.New("start_time and end_time must name at least the year")
	}
	return componentFilter{start: s, end: e}, nil
}

func sameKeys(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

func keys(m map[string]int) []string {
	var ks []string
	for _, k := range componentOrder {
		if _, ok := m[k]; ok {
			ks = append(ks, k)
		}
	}
	return ks
}

func (f componentFilter) match(ld LocalDate) bool {
	for name, lo := range f.start {
		hi := f.end[name]
		v, _ := ld.component(name)
		if lo <= hi {
			if v < lo || v > hi {
				return false
			}
		} else if v > hi && v < lo {
			return false
		}
	}
	return true
}

// Options choose what a summary reads and how it names modes.
type Options struct {
	Modes ModeNames // MotionTypes when nil
	// User, when not empty, adds user_metrics for the sections whose User
	// equals it (JSON text of the user_id); aggregate_metrics cover all
	// sections when Aggregate is set.
	User      string
	Aggregate bool
}

func (o Options) names() ModeNames {
	if o.Modes == nil {
		return MotionTypes
	}
	return o.Modes
}

// SummarizeByLocalDate is e-mission's summarize_by_local_date over sections:
// filter on start_local_dt components, group by local year/month/day (or ISO
// week), and compute each metric per mode per group.
func SummarizeByLocalDate(sections []Section, start, end DateBound, freq Freq, metricList []string, o Options) (Result, error) {
	filter, err := newComponentFilter(start, end)
	if err != nil {
		return Result{}, err
	}
	if _, err := ParseFreq(string(freq)); err != nil {
		return Result{}, err
	}
	if err := checkMetrics(metricList); err != nil {
		return Result{}, err
	}
	selected := make([]Section, 0, len(sections))
	for _, s := range sections {
		if filter.match(s.StartLocalDt) {
			selected = append(selected, s)
		}
	}
	group := func(ss []Section, m metricFn) ([]Summary, error) { return groupLocal(ss, freq, m, o.names()) }
	return run(selected, metricList, o, group)
}

func checkMetrics(list []string) error {
	if len(list) == 0 {
		return errors.New("no metric asked")
	}
	var errs []error
	for _, m := range list {
		errs = append(errs, CheckMetric(m))
	}
	return errors.Join(errs...)
}

func run(sections []Section, metricList []string, o Options, group func([]Section, metricFn) ([]Summary, error)) (Result, error) {
	var r Result
	for _, name := range metricList {
		fn := metricFns[name]
		if o.Aggregate {
			sums, err := group(sections, fn)
			if err != nil {
				return Result{}, err
			}
			r.AggregateMetrics = append(r.AggregateMetrics, sums)
		}
		if o.User != "" {
			var mine []Section
			for _, s := range sections {
				if s.User == o.User {
					mine = append(mine, s)
				}
			}
			sums, err := group(mine, fn)
			if err != nil {
				return Result{}, err
			}
			r.UserMetrics = append(r.UserMetrics, sums)
		}
	}
	return r, nil
}

type localKey struct{ a, b, c int } // (year, month, day), (isoYear, isoWeek, 0), ...

func localKeyOf(ld LocalDate, freq Freq) localKey {
	switch freq {
	case Daily:
		return localKey{ld.Year, ld.Month, ld.Day}
	case Weekly:
		y, w := time.Date(ld.Year, time.Month(ld.Month), ld.Day, 12, 0, 0, 0, time.UTC).ISOWeek()
		return localKey{y, w, 0}
	case Monthly:
		return localKey{ld.Year, ld.Month, 0}
	default:
		return localKey{ld.Year, 0, 0}
	}
}

func cmpKey(x, y localKey) int {
	if x.a != y.a {
		return x.a - y.a
	}
	if x.b != y.b {
		return x.b - y.b
	}
	return x.c - y.c
}

func groupLocal(sections []Section, freq Freq, fn metricFn, names ModeNames) ([]Summary, error) {
	// One stable sort by (period, mode) and one copy: periods and, within
	// them, modes become contiguous runs, each in input order (which fixes the
	// order of the float sums).
	keys := make([]localKey, len(sections))
	order := make([]int, len(sections))
	for i, s := range sections {
		keys[i] = localKeyOf(s.StartLocalDt, freq)
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int {
		if c := cmpKey(keys[i], keys[j]); c != 0 {
			return c
		}
		return sections[i].Mode - sections[j].Mode
	})
	sorted := make([]Section, len(order))
	for n, i := range order {
		sorted[n] = sections[i]
	}
	out := []Summary{}
	for lo := 0; lo < len(sorted); {
		k := keys[order[lo]]
		hi := lo + 1
		for hi < len(sorted) && keys[order[hi]] == k {
			hi++
		}
		ss := sorted[lo:hi]
		lo = hi
		// The period starts in the timezone of its earliest section.
		first := ss[0]
		for _, s := range ss {
			if s.StartTs < first.StartTs {
				first = s
			}
		}
		tzName := first.StartLocalDt.Timezone
		loc, err := loadLocation(tzName)
		if err != nil {
			return nil, fmt.Errorf("section timezone %q: %w", tzName, err)
		}
		var sum Summary
		switch freq {
		case Daily:
			t := time.Date(k.a, time.Month(k.b), k.c, 0, 0, 0, 0, loc)
			sum = Summary{Ts: t.Unix(), FmtTime: t.Format("2006-01-02"),
				LocalDt: map[string]any{"year": k.a, "month": k.b, "day": k.c, "timezone": tzName}}
		case Weekly:
			monday := isoWeekMonday(k.a, k.b)
			t := time.Date(monday.Year(), monday.Month(), monday.Day(), 0, 0, 0, 0, loc)
			sum = Summary{Ts: t.Unix(), FmtTime: fmt.Sprintf("%04d-W%02d", k.a, k.b),
				LocalDt: map[string]any{"year": t.Year(), "month": int(t.Month()), "day": t.Day(), "timezone": tzName}}
		case Monthly:
			t := time.Date(k.a, time.Month(k.b), 1, 0, 0, 0, 0, loc)
			sum = Summary{Ts: t.Unix(), FmtTime: t.Format("2006-01"),
				LocalDt: map[string]any{"year": k.a, "month": k.b, "timezone": tzName}}
		default:
			t := time.Date(k.a, 1, 1, 0, 0, 0, 0, loc)
			sum = Summary{Ts: t.Unix(), FmtTime: t.Format("2006"),
				LocalDt: map[string]any{"year": k.a, "timezone": tzName}}
		}
		fillModes(&sum, ss, fn, names)
		out = append(out, sum)
	}
	return out, nil
}

var locations sync.Map // name → *time.Location

// loadLocation caches time.LoadLocation, which parses the zone each call.
func loadLocation(name string) (*time.Location, error) {
	if l, ok := locations.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	locations.Store(name, l)
	return l, nil
}

// isoWeekMonday is the Monday (UTC date) of ISO week w of ISO year y.
func isoWeekMonday(y, w int) time.Time {
	jan4 := time.Date(y, 1, 4, 0, 0, 0, 0, time.UTC) // always in week 1
	offset := (int(jan4.Weekday()) + 6) % 7          // days since Monday
	return jan4.AddDate(0, 0, -offset+7*(w-1))
}

// fillModes sets nUsers and the metric of each mode of the sections ss.
func fillModes(sum *Summary, ss []Section, fn metricFn, names ModeNames) {
	bymode := func(a, b Section) int { return a.Mode - b.Mode }
	if !slices.IsSortedFunc(ss, bymode) {
		ss = slices.Clone(ss)
		slices.SortStableFunc(ss, bymode)
	}
	var users []string
	for _, s := range ss {
		if !slices.Contains(users, s.User) {
			users = append(users, s.User)
		}
	}
	sum.NUsers = len(users)
	sum.Modes = map[string]any{}
	for lo := 0; lo < len(ss); {
		hi := lo + 1
		for hi < len(ss) && ss[hi].Mode == ss[lo].Mode {
			hi++
		}
		if v, ok := fn(ss[lo:hi]); ok {
			sum.Modes[names(ss[lo].Mode)] = v
		}
		lo = hi
	}
}

// SummarizeByTimestamp is e-mission's summarize_by_timestamp: sections with
// start_ts in [startTs, endTs], binned by UTC start time at a pandas
// frequency, empty bins between the first and the last included (nUsers 0, no
// modes). Supported frequencies: D (bins labelled by their start), W (ISO
// weeks Monday–Sunday, labelled by the Sunday, as pandas' W-SUN), M (months,
// labelled by their last day), A or Y (years, labelled by 31 December).
func SummarizeByTimestamp(sections []Section, startTs, endTs float64, freq string, metricList []string, o Options) (Result, error) {
	bin, err := timestampBinner(freq)
	if err != nil {
		return Result{}, err
	}
	if err := checkMetrics(metricList); err != nil {
		return Result{}, err
	}
	var selected []Section
	for _, s := range sections {
		if s.StartTs >= startTs && s.StartTs <= endTs {
			selected = append(selected, s)
		}
	}
	group := func(ss []Section, fn metricFn) ([]Summary, error) {
		if len(ss) == 0 {
			return []Summary{}, nil
		}
		groups := map[time.Time][]Section{}
		var lo, hi time.Time
		for i, s := range ss {
			t := bin.key(utcOf(s.StartTs))
			groups[t] = append(groups[t], s)
			if i == 0 || t.Before(lo) {
				lo = t
			}
			if i == 0 || t.After(hi) {
				hi = t
			}
		}
		var out []Summary
		for t := lo; !t.After(hi); t = bin.next(t) {
			label := bin.label(t)
			sum := Summary{
				Ts:      label.Unix(),
				FmtTime: label.Format("2006-01-02T15:04:05-07:00"),
				LocalDt: utcLocalDate(label),
				Modes:   map[string]any{},
			}
			fillModes(&sum, groups[t], fn, o.names())
			out = append(out, sum)
		}
		return out, nil
	}
	return run(selected, metricList, o, group)
}

func utcOf(ts float64) time.Time {
	sec, frac := math.Modf(ts)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC()
}

func utcLocalDate(t time.Time) map[string]any {
	return map[string]any{"year": t.Year(), "month": int(t.Month()), "day": t.Day(),
		"hour": t.Hour(), "minute": t.Minute(), "second": t.Second(),
		"weekday": (int(t.Weekday()) + 6) % 7, "timezone": "UTC"}
}

// binner maps a UTC time to its bin (the bin's first day), steps to the next
// bin, and labels a bin as pandas does.
type binner struct {
	key   func(time.Time) time.Time
	next  func(time.Time) time.Time
	label func(time.Time) time.Time
}

func day(t time.Time) time.Time { return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC) }

func timestampBinner(freq string) (binner, error) {
	switch freq {
	case "D", "d":
		return binner{key: day, next: func(t time.Time) time.Time { return t.AddDate(0, 0, 1) },
			label: func(t time.Time) time.Time { return t }}, nil
	case "W", "w", "W-SUN":
		return binner{
			key: func(t time.Time) time.Time {
				d := day(t)
				return d.AddDate(0, 0, -((int(d.Weekday()) + 6) % 7))
			},
			next:  func(t time.Time) time.Time { return t.AddDate(0, 0, 7) },
			label: func(t time.Time) time.Time { return t.AddDate(0, 0, 6) },
		}, nil
	case "M", "m", "ME":
		return binner{
			key:   func(t time.Time) time.Time { return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC) },
			next:  func(t time.Time) time.Time { return t.AddDate(0, 1, 0) },
			label: func(t time.Time) time.Time { return t.AddDate(0, 1, -1) },
		}, nil
	case "A", "a", "Y", "y", "YE", "A-DEC":
		return binner{
			key:   func(t time.Time) time.Time { return time.Date(t.Year(), 1, 1, 0, 0, 0, 0, time.UTC) },
			next:  func(t time.Time) time.Time { return t.AddDate(1, 0, 0) },
			label: func(t time.Time) time.Time { return t.AddDate(1, 0, -1) },
		}, nil
	}
	return binner{}, fmt.Errorf("unsupported freq %q (want D, W, M or A)", freq)
}

// SortedModes lists a summary's mode names (for printing).
func (s Summary) SortedModes() []string {
	ks := make([]string, 0, len(s.Modes))
	for k := range s.Modes {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
