package metrics

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/e-mission/upc/internal/dp"
)

// DeltaF is the sensitivity per metric and mode, for one day: trips per
// day, metres per day, seconds per day. The original's four modes (CAR, WALK,
// BICYCLE, TRANSIT) keep its values. The modes the data holds, e-mission's
// sensed modes (MotionTypes), get the values of the original mode they
// resemble; the original had none for them and answered them for nothing.
// There is none for median_speed, so it cannot be charged (nor answered).
var DeltaF = deltaF()

func deltaF() map[string]map[string]float64 {
	t := map[string]map[string]float64{
		Count:    {"CAR": 55, "WALK": 55, "BICYCLE": 55, "TRANSIT": 55},
		Distance: {"CAR": 3840000, "WALK": 504000, "BICYCLE": 648000, "TRANSIT": 1440000},
		Duration: {"CAR": 86400, "WALK": 86400, "BICYCLE": 86400, "TRANSIT": 86400},
	}
	like := map[string]string{
		"IN_VEHICLE": "CAR", "BICYCLING": "BICYCLE", "ON_FOOT": "WALK", "WALKING": "WALK", "RUNNING": "WALK",
		"STILL": "CAR", "UNKNOWN": "CAR", "TILTING": "CAR", "NONE": "CAR", "STOPPED_WHILE_IN_VEHICLE": "CAR",
	}
	for _, table := range t {
		for mode, orig := range like {
			table[mode] = table[orig]
		}
	}
	// Planes and high-speed rail: up to 1,000 km/h all day.
	t[Count]["AIR_OR_HSR"], t[Distance]["AIR_OR_HSR"], t[Duration]["AIR_OR_HSR"] = 55, 24000000, 86400
	return t
}

// NumDays is the original's (end − start) in days, where a bound missing its
// month or day means the 1st. The original built both datetimes with the
// pytz zone's first (LMT) offset, so the difference is in whole civil days,
// with no daylight-saving hour: that is what this returns.
func NumDays(start, end DateBound) (float64, error) {
	s, err := civilDate(start, "start_time")
	if err != nil {
		return 0, err
	}
	e, err := civilDate(end, "end_time")
	if err != nil {
		return 0, err
	}
	return e.Sub(s).Hours() / 24, nil
}

func civilDate(b DateBound, field string) (time.Time, error) {
	var errs []error
	if b.Year == nil {
		errs = append(errs, fmt.Errorf("%s.year is required", field))
	}
	if _, err := time.LoadLocation(b.Timezone); err != nil || b.Timezone == "" {
		errs = append(errs, fmt.Errorf("%s.timezone %q is not a known time zone", field, b.Timezone))
	}
	if err := errors.Join(errs...); err != nil {
		return time.Time{}, err
	}
	month, day := 1, 1
	if b.Month != nil {
		month = *b.Month
		if b.Day != nil {
			day = *b.Day
		}
	}
	if month < 1 || month > 12 || day < 1 || day > 31 {
		return time.Time{}, fmt.Errorf("%s is not a date: %d-%d-%d", field, *b.Year, month, day)
	}
	t := time.Date(*b.Year, time.Month(month), day, 0, 0, 0, 0, time.UTC)
	if t.Day() != day {
		return time.Time{}, fmt.Errorf("%s is not a date: %d-%02d-%02d", field, *b.Year, month, day)
	}
	return t, nil
}

// Cost is the privacy cost of a /metrics/local_date query: the sum, over the
// modes of offset, of −ln(alpha[m])·(days·Δf[m])/offset[m]. Nothing is free:
// unlike the original, a mode DeltaF does not know (which the original
// answered for nothing), a range of no whole day (which made every mode cost
// nothing), a negative range, an alpha outside (0, 1) and an offset ≤ 0 are
// errors.
func Cost(metric string, start, end DateBound, offset, alpha map[string]float64) (float64, error) {
	table, ok := DeltaF[metric]
	if !ok {
		return 0, fmt.Errorf("metric %q has no sensitivity (Δf) defined; the service answers count, distance or duration", metric)
	}
	days, err := NumDays(start, end)
	if err != nil {
		return 0, err
	}
	switch {
	case days < 0:
		return 0, fmt.Errorf("end_time is %g days before start_time", -days)
	case days == 0:
		return 0, errors.New("end_time must be at least a day after start_time: a range of no whole day would cost nothing")
	}
	modes := make([]string, 0, len(offset))
	for m := range offset {
		modes = append(modes, m)
	}
	sort.Strings(modes)
	var errs []error
	cost := 0.0
	for _, m := range modes {
		df, ok := table[m]
		if !ok {
			errs = append(errs, fmt.Errorf("mode %s has no sensitivity for %s (known: %s)", m, metric, knownModes(table)))
			continue
		}
		a, ok := alpha[m]
		if !ok {
			errs = append(errs, fmt.Errorf("alpha has no value for mode %s", m))
			continue
		}
		eps, err := dp.Epsilon(a, days*df, offset[m])
		if err != nil {
			errs = append(errs, fmt.Errorf("mode %s: %w", m, err))
			continue
		}
		cost += eps
	}
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return cost, nil
}

func knownModes(table map[string]float64) string {
	ms := make([]string, 0, len(table))
	for m := range table {
		ms = append(ms, m)
	}
	sort.Strings(ms)
	return strings.Join(ms, ", ")
}
