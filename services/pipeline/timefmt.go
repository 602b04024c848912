package pipeline

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // the service runs FROM scratch, with no zoneinfo on disk
)

// DefaultTimeZone is e-mission's default when an entry names none.
const DefaultTimeZone = "America/Los_Angeles"

var zones sync.Map // name → *time.Location

func loadZone(name string) (*time.Location, error) {
	if name == "" {
		name = DefaultTimeZone
	}
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("load time zone %q: %w", name, err)
	}
	zones.Store(name, l)
	return l, nil
}

// pyTime splits ts as CPython's datetime.fromtimestamp does: whole seconds
// and microseconds rounded half to even.
func pyTime(ts float64) (sec int64, us int64) {
	ip, fp := math.Modf(ts)
	fp = math.RoundToEven(fp * 1e6)
	if fp >= 1e6 {
		fp -= 1e6
		ip++
	} else if fp < 0 {
		fp += 1e6
		ip--
	}
	return int64(ip), int64(fp)
}

// LocalTime returns ts in zone tz as e-mission's LocalDate and fmt_time
// (Python's isoformat: microseconds only when non-zero, ±HH:MM offset).
func LocalTime(ts float64, tz string) (LocalDate, string, error) {
	loc, err := loadZone(tz)
	if err != nil {
		return LocalDate{}, "", err
	}
	if tz == "" {
		tz = DefaultTimeZone
	}
	sec, us := pyTime(ts)
	t := time.Unix(sec, 0).In(loc)
	ld := LocalDate{Year: t.Year(), Month: int(t.Month()), Day: t.Day(), Hour: t.Hour(), Minute: t.Minute(),
		Second: t.Second(), Weekday: (int(t.Weekday()) + 6) % 7, Timezone: tz}
	var b strings.Builder
	b.Grow(32)
	fmt.Fprintf(&b, "%04d-%02d-%02dT%02d:%02d:%02d", ld.Year, ld.Month, ld.Day, ld.Hour, ld.Minute, ld.Second)
	if us != 0 {
		fmt.Fprintf(&b, ".%06d", us)
	}
	_, off := t.Zone()
	sign := byte('+')
	if off < 0 {
		sign, off = '-', -off
	}
	fmt.Fprintf(&b, "%c%02d:%02d", sign, off/3600, off/60%60)
	if off%60 != 0 {
		fmt.Fprintf(&b, ":%02d", off%60)
	}
	return ld, b.String(), nil
}

// mustLocalTime is LocalTime for zones already validated on input.
func mustLocalTime(ts float64, tz string) (LocalDate, string) {
	ld, s, err := LocalTime(ts, tz)
	if err != nil {
		ld, s, _ = LocalTime(ts, DefaultTimeZone)
	}
	return ld, s
}
