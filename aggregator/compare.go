package aggregator

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/e-mission/upc/internal/plot"
)

// Path names how a run's users got their instances: the local router's
// network mode, and "+pool" when their PMs came from a warm pool. A run
// without a recorded mode is "router" (a deployed router's). A run given a
// Label (upc aggregate figure's LABEL=RESULT.json: a version, a setting)
// is compared under that name instead.
func (r *Result) Path() string {
	if r.Label != "" {
		return r.Label
	}
	p := r.NetworkMode
	if p == "" {
		p = "router"
	}
	if r.PoolFill != nil && r.PoolFill.Size > 0 {
		p += "+pool"
	}
	return p
}

// Baseline is the path the others are compared with by default: today's,
// Docker's bridge network without a pool.
const Baseline = "bridge"

// Compared is a run beside its baseline: the baseline path's run of the
// same number of users started nearest to it (its neighbour, so both ran under
// about the same load). Ratio is its wall time over the baseline's (NaN
// without one; 1 for a baseline run).
type Compared struct {
	*Result
	Ratio float64
}

// Compare orders runs by users, path and start, each with its ratio to
// the nearest run of the baseline path with as many users.
func Compare(runs []*Result, baseline string) []Compared {
	out := make([]Compared, len(runs))
	for i, r := range runs {
		out[i] = Compared{Result: r, Ratio: math.NaN()}
		var best *Result
		for _, b := range runs {
			if b.Users != r.Users || b.Path() != baseline {
				continue
			}
			if best == nil || absDur(b.Started.Sub(r.Started)) < absDur(best.Started.Sub(r.Started)) {
				best = b
			}
		}
		if best != nil && best.WallMS > 0 {
			out[i].Ratio = r.WallMS / best.WallMS
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Users != b.Users {
			return a.Users < b.Users
		}
		if pa, pb := pathRank(a.Path(), baseline), pathRank(b.Path(), baseline); pa != pb {
			return pa < pb
		}
		return a.Started.Before(b.Started)
	})
	return out
}

func absDur(d time.Duration) time.Duration { return max(d, -d) }

// pathRank puts the baseline first, then the rest by name.
func pathRank(p, baseline string) string {
	if p == baseline {
		return ""
	}
	return p
}

// CompareMarkdown is the runs as one table: users × path, the wall time,
// who answered, each phase's median / p95 per user, the run's CPU, the
// ratio to the nearest baseline run, the pool's fill and the load averages.
func CompareMarkdown(runs []*Result, baseline string) []byte {
	var b bytes.Buffer
	b.WriteString("| users | path | started (UTC) | wall | answered |")
	for _, p := range Phases {
		fmt.Fprintf(&b, " %s |", p)
	}
	fmt.Fprintf(&b, " busy CPU | dockerd | containers | this process | wall / %s | pool fill (apart) | load average before → after |\n", baseline)
	b.WriteString("|---:|---|---|---:|---:|" + stringsRepeat("---|", len(Phases)) + "---:|---:|---:|---:|---:|---|---|\n")
	for _, c := range Compare(runs, baseline) {
		fmt.Fprintf(&b, "| %d | %s | %s | **%.1f s** | %d / %d |", c.Users, c.Path(), c.Started.UTC().Format("15:04"), c.WallMS/1000, c.NumberParticipants, c.Users)
		for _, p := range Phases {
			if s, ok := c.phase(p); ok {
				fmt.Fprintf(&b, " %s / %s |", msCell(s.MedianMS), msCell(s.P95MS))
			} else {
				b.WriteString(" – |")
			}
		}
		if c.CPU != nil {
			fmt.Fprintf(&b, " %.1f s | %.1f s | %.1f s | %.1f s |", c.CPU.Busy, c.CPU.Dockerd, c.CPU.Containers, c.CPU.Command)
		} else {
			b.WriteString(" – | – | – | – |")
		}
		switch {
		case math.IsNaN(c.Ratio):
			b.WriteString(" – |")
		case c.Path() == baseline:
			b.WriteString(" 1 |")
		default:
			fmt.Fprintf(&b, " **%.2f** |", c.Ratio)
		}
		if p := c.PoolFill; p != nil {
			fmt.Fprintf(&b, " %.1f s, busy %.1f s, dockerd %.1f s (%d of %d claimed) |", p.FillMS/1000, p.CPU.Busy, p.CPU.Dockerd, p.Claimed, p.Size)
		} else {
			b.WriteString(" – |")
		}
		fmt.Fprintf(&b, " %s → %s |\n", orDash(c.LoadAverageBefore), orDash(c.LoadAverage))
	}
	return b.Bytes()
}

func (r *Result) phase(name string) (PhaseStat, bool) {
	for _, p := range r.Phases {
		if p.Phase == name {
			return p, true
		}
	}
	return PhaseStat{}, false
}

// msCell writes ms with thin groups of thousands, as the other tables.
func msCell(ms float64) string {
	n := int64(math.Round(ms))
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + " " + s[i:]
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func stringsRepeat(s string, n int) string { return string(bytes.Repeat([]byte(s), n)) }

// CompareFigures draws the runs: wall time per number of users and path
// (bar: the median of the runs, whisker: their least and greatest), and
// each phase's time per user (bar: the median of the runs' medians,
// whisker: of their p95s) per number of users and path.
func CompareFigures(runs []*Result, baseline string) (wall, phases *plot.Figure, err error) {
	type key struct {
		users int
		path  string
	}
	by := map[key][]*Result{}
	var sizes []int
	var paths []string
	for _, c := range Compare(runs, baseline) {
		k := key{c.Users, c.Path()}
		by[k] = append(by[k], c.Result)
		if !slices.Contains(sizes, c.Users) {
			sizes = append(sizes, c.Users)
		}
		if !slices.Contains(paths, c.Path()) {
			paths = append(paths, c.Path())
		}
	}
	sort.Ints(sizes)
	sort.SliceStable(paths, func(i, j int) bool { return pathRank(paths[i], baseline) < pathRank(paths[j], baseline) })
	var groups []string
	for _, n := range sizes {
		groups = append(groups, fmt.Sprintf("%d users", n))
	}
	var ws []plot.BarSeries
	for _, p := range paths {
		s := plot.BarSeries{Name: p}
		for _, n := range sizes {
			var v []float64
			for _, r := range by[key{n, p}] {
				v = append(v, r.WallMS/1000)
			}
			mid, lo, hi := math.NaN(), math.NaN(), math.NaN()
			if len(v) > 0 {
				sort.Float64s(v)
				mid, lo, hi = medianOf(v), v[0], v[len(v)-1]
			}
			s.Mid, s.Low, s.High = append(s.Mid, mid), append(s.Low, lo), append(s.High, hi)
		}
		ws = append(ws, s)
	}
	wall, err = plot.Bars("Aggregate flow: wall time by path", "s", "bar: median of the runs, whisker: least–greatest", groups, ws)
	if err != nil {
		return nil, nil, err
	}
	var rows []string
	var keys []key
	for _, n := range sizes {
		for _, p := range paths {
			if len(by[key{n, p}]) > 0 {
				rows = append(rows, fmt.Sprintf("%d users, %s", n, p))
				keys = append(keys, key{n, p})
			}
		}
	}
	var ps []plot.BarSeries
	for _, ph := range Phases {
		s := plot.BarSeries{Name: ph}
		for _, k := range keys {
			var med, p95 []float64
			for _, r := range by[k] {
				if st, ok := r.phase(ph); ok {
					med, p95 = append(med, st.MedianMS/1000), append(p95, st.P95MS/1000)
				}
			}
			sort.Float64s(med)
			sort.Float64s(p95)
			m, h := math.NaN(), math.NaN()
			if len(med) > 0 {
				m, h = medianOf(med), medianOf(p95)
			}
			s.Mid, s.Low, s.High = append(s.Mid, m), append(s.Low, m), append(s.High, h)
		}
		ps = append(ps, s)
	}
	phases, err = plot.Bars("Aggregate flow: time per user in each phase", "s", "bar: median per user, whisker: to the p95", rows, ps)
	if err != nil {
		return nil, nil, err
	}
	return wall, phases, nil
}

func medianOf(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}
