package plot

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Series is a named set of values.
type Series struct {
	Name   string
	Values []float64
}

// CDF draws the empirical cumulative distribution of each series as a step
// line: at x, the fraction of the series' values at most x. The legend gives
// each series' count and median in unit.
func CDF(title, unit string, series []Series) (*Figure, error) {
	f := newFigure(title, unit, "fraction of values <= x")
	drawn := 0
	for i, s := range series {
		if len(s.Values) == 0 {
			continue
		}
		vs := slices.Clone(s.Values)
		if !finite(vs...) {
			return nil, fmt.Errorf("cdf %q: series %q has a value that is not a finite number", title, s.Name)
		}
		slices.Sort(vs)
		n := float64(len(vs))
		pts := make(plotter.XYs, 0, len(vs)+1)
		pts = append(pts, plotter.XY{X: vs[0], Y: 0})
		for j, v := range vs {
			pts = append(pts, plotter.XY{X: v, Y: float64(j+1) / n})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("cdf %q: %w", title, err)
		}
		l.StepStyle = plotter.PostStep
		l.Color, l.Width, l.Dashes = colour(i), vg.Points(1.5), dash(i)
		f.p.Add(l)
		f.legend.Add(fmt.Sprintf("%s (n=%d, median %s)", s.Name, len(vs), num(median(vs))), l)
		drawn++
	}
	if drawn == 0 {
		f.noData("no values")
		return f, nil
	}
	f.p.Y.Min, f.p.Y.Max = 0, 1
	return f, nil
}

// BarSeries is one bar per group: Mid sets its length, Low and High its
// whisker (NaN where there is none). Low and High may be nil.
type BarSeries struct {
	Name           string
	Mid, Low, High []float64
}

// Bars draws horizontal bars, one row per group (the first at the top), one
// bar per series in each row, with whiskers from Low to High. whisker says
// in the axis label what bars and whiskers are ("bar: median, whisker:
// 10th–90th percentile").
func Bars(title, unit, whisker string, groups []string, series []BarSeries) (*Figure, error) {
	label := unit
	if whisker != "" {
		label += " (" + whisker + ")"
	}
	f := newFigure(title, label, "")
	if len(groups) == 0 || len(series) == 0 {
		f.noData("no values")
		return f, nil
	}
	ns := len(series)
	barW := vg.Points(10)
	if ns == 1 {
		barW = vg.Points(14)
	}
	f.h = max(minHeight, vg.Length(len(groups))*(vg.Length(ns)*barW+vg.Points(10))+1.5*vg.Inch)
	rowOf := func(g int) float64 { return float64(len(groups) - 1 - g) }
	for j, s := range series {
		if len(s.Mid) != len(groups) || (s.Low != nil && len(s.Low) != len(groups)) || (s.High != nil && len(s.High) != len(groups)) {
			return nil, fmt.Errorf("bars %q: series %q does not have one value per group (%d)", title, s.Name, len(groups))
		}
		vals := make(plotter.Values, len(groups))
		for g := range groups {
			v := s.Mid[len(groups)-1-g] // rows run bottom up
			if !finite(v) || v < 0 {
				v = 0
			}
			vals[g] = v
		}
		b, err := plotter.NewBarChart(vals, barW)
		if err != nil {
			return nil, fmt.Errorf("bars %q: %w", title, err)
		}
		b.Horizontal = true
		b.Color = colour(j)
		b.LineStyle.Width = 0
		// Series top down inside a row, as in the legend.
		b.Offset = (vg.Length(ns-1)/2 - vg.Length(j)) * barW
		f.p.Add(b)
		f.legend.Add(s.Name, b)
		if s.Low != nil && s.High != nil {
			w := &whiskers{offset: b.Offset, cap: barW / 2}
			for g := range groups {
				lo, hi := s.Low[g], s.High[g]
				if finite(lo, hi) {
					w.rows = append(w.rows, rowOf(g))
					w.lo, w.hi = append(w.lo, lo), append(w.hi, hi)
				}
			}
			w.style = draw.LineStyle{Color: colourDark, Width: vg.Points(1)}
			f.p.Add(w)
		}
	}
	if ns == 1 {
		f.legend = gplot.NewLegend() // the title names the only series
	}
	names := slices.Clone(groups)
	slices.Reverse(names)
	f.p.NominalY(names...)
	rowsAxis(f.p, len(groups))
	f.p.X.Min = 0
	return f, nil
}

// minHeight is the least height of a figure of rows.
const minHeight = 2.5 * vg.Inch

var colourDark = rgb(0x33, 0x33, 0x33)

// whiskers draws, for each row, a horizontal line from lo to hi with end
// caps, offset within the row like its bar.
type whiskers struct {
	rows, lo, hi []float64
	offset, cap  vg.Length
	style        draw.LineStyle
}

func (w *whiskers) Plot(c draw.Canvas, p *gplot.Plot) {
	trX, trY := p.Transforms(&c)
	for i, r := range w.rows {
		y := trY(r) + w.offset
		x0, x1 := trX(w.lo[i]), trX(w.hi[i])
		c.StrokeLine2(w.style, x0, y, x1, y)
		c.StrokeLine2(w.style, x0, y-w.cap/2, x0, y+w.cap/2)
		c.StrokeLine2(w.style, x1, y-w.cap/2, x1, y+w.cap/2)
	}
}

func (w *whiskers) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax, ymin, ymax = math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for i, r := range w.rows {
		xmin, xmax = math.Min(xmin, w.lo[i]), math.Max(xmax, w.hi[i])
		ymin, ymax = math.Min(ymin, r), math.Max(ymax, r)
	}
	return xmin, xmax, ymin, ymax
}

// StackedBars draws one horizontal bar per row (the first at the top), split
// into one segment per series: values[row][series], in unit; a negative or
// missing value draws nothing.
func StackedBars(title, unit string, rows, series []string, values [][]float64) (*Figure, error) {
	f := newFigure(title, unit, "")
	if len(rows) == 0 || len(series) == 0 {
		f.noData("no values")
		return f, nil
	}
	if len(values) != len(rows) {
		return nil, fmt.Errorf("stacked bars %q: %d rows of values for %d rows", title, len(values), len(rows))
	}
	const rowPts = 13
	f.h = max(minHeight, vg.Points(rowPts*float64(len(rows)))+1.5*vg.Inch)
	var below *plotter.BarChart
	for j, s := range series {
		vals := make(plotter.Values, len(rows))
		for r := range rows {
			row := values[len(rows)-1-r]
			if j < len(row) && finite(row[j]) && row[j] > 0 {
				vals[r] = row[j]
			}
		}
		b, err := plotter.NewBarChart(vals, vg.Points(rowPts*0.75))
		if err != nil {
			return nil, fmt.Errorf("stacked bars %q: %w", title, err)
		}
		b.Horizontal = true
		b.Color = colour(j)
		b.LineStyle.Width = 0
		if below != nil {
			b.StackOn(below)
		}
		below = b
		f.p.Add(b)
		f.legend.Add(s, b)
	}
	names := slices.Clone(rows)
	slices.Reverse(names)
	f.p.NominalY(names...)
	rowsAxis(f.p, len(rows))
	f.p.Y.Tick.Label.Font.Size = vg.Points(min(10, max(6, 600/float64(len(rows)))))
	f.p.X.Min = 0
	return f, nil
}

// EpsilonRun is one seeded run of a noisy query: the ε it spent, the exact
// answer and the published noisy one.
type EpsilonRun struct {
	Epsilon      float64
	Seed         uint64
	Exact, Noisy float64
}

// EpsilonSeries is a set of runs of one query or mechanism. Expected, when
// set, is the error the mechanism promises at ε (the Laplace mechanism's
// mean absolute error is Δf/ε), drawn as a dashed reference.
type EpsilonSeries struct {
	Name     string
	Runs     []EpsilonRun
	Expected func(epsilon float64) float64
}

// ErrorVsEpsilon draws, for every series, the absolute error |noisy −
// exact| of each run against its ε (points) and the mean absolute error at
// each ε (a line), with the expected error beside it. ε is on a log scale,
// and so is the error when every error drawn is positive (a run can
// publish the exact answer: zero has no place on a log scale).
func ErrorVsEpsilon(title string, series []EpsilonSeries) (*Figure, error) {
	f := newFigure(title, "epsilon (privacy cost per query)", "absolute error |noisy - exact|")
	logY, drawn := true, 0
	type layer struct {
		runs, mean, expected plotter.XYs
	}
	layers := make([]layer, len(series))
	for i, s := range series {
		byEps := map[float64][]float64{}
		var eps []float64
		for _, r := range s.Runs {
			if !finite(r.Epsilon, r.Exact, r.Noisy) || r.Epsilon <= 0 {
				return nil, fmt.Errorf("error vs ε %q: series %q: a run has ε %v, exact %v, noisy %v (want finite numbers, ε > 0)", title, s.Name, r.Epsilon, r.Exact, r.Noisy)
			}
			e := math.Abs(r.Noisy - r.Exact)
			if _, ok := byEps[r.Epsilon]; !ok {
				eps = append(eps, r.Epsilon)
			}
			byEps[r.Epsilon] = append(byEps[r.Epsilon], e)
			layers[i].runs = append(layers[i].runs, plotter.XY{X: r.Epsilon, Y: e})
			logY = logY && e > 0
		}
		slices.Sort(eps)
		for _, x := range eps {
			layers[i].mean = append(layers[i].mean, plotter.XY{X: x, Y: mean(byEps[x])})
			if s.Expected != nil {
				y := s.Expected(x)
				if !finite(y) {
					return nil, fmt.Errorf("error vs ε %q: series %q: expected error at ε %v is %v", title, s.Name, x, y)
				}
				layers[i].expected = append(layers[i].expected, plotter.XY{X: x, Y: y})
				logY = logY && y > 0
			}
		}
		drawn += len(s.Runs)
	}
	if drawn == 0 {
		f.noData("no runs")
		return f, nil
	}
	for i, s := range series {
		ly := layers[i]
		if len(ly.runs) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(ly.runs)
		if err != nil {
			return nil, fmt.Errorf("error vs ε %q: %w", title, err)
		}
		sc.GlyphStyle = draw.GlyphStyle{Color: colour(i), Radius: vg.Points(1.5), Shape: draw.CircleGlyph{}}
		ml, mp, err := plotter.NewLinePoints(ly.mean)
		if err != nil {
			return nil, fmt.Errorf("error vs ε %q: %w", title, err)
		}
		ml.Color, ml.Width = colour(i), vg.Points(1.5)
		mp.GlyphStyle = draw.GlyphStyle{Color: colour(i), Radius: vg.Points(3), Shape: draw.BoxGlyph{}}
		f.p.Add(sc, ml, mp)
		f.legend.Add(fmt.Sprintf("%s: runs (n=%d)", s.Name, len(ly.runs)), sc)
		f.legend.Add(s.Name+": mean error", ml, mp)
		if len(ly.expected) > 0 {
			el, err := plotter.NewLine(ly.expected)
			if err != nil {
				return nil, fmt.Errorf("error vs ε %q: %w", title, err)
			}
			el.Color, el.Width, el.Dashes = colour(i), vg.Points(1), dashes[1]
			f.p.Add(el)
			f.legend.Add(s.Name+": expected error", el)
		}
	}
	xlo, xhi, ylo, yhi := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, ly := range layers {
		for _, pts := range []plotter.XYs{ly.runs, ly.expected} {
			for _, p := range pts {
				xlo, xhi, ylo, yhi = math.Min(xlo, p.X), math.Max(xhi, p.X), math.Min(ylo, p.Y), math.Max(yhi, p.Y)
			}
		}
	}
	logAxis(&f.p.X, xlo, xhi)
	if logY {
		logAxis(&f.p.Y, ylo, yhi)
	} else {
		f.p.Y.Min = 0
	}
	return f, nil
}

// BudgetPoint is what a privacy budget held after an event (a charge, a
// refund, a renewal), At after the series' start.
type BudgetPoint struct {
	At        time.Duration
	Remaining float64
}

// BudgetSeries is one budget over time; Initial is what it held at 0.
type BudgetSeries struct {
	Name    string
	Initial float64
	Points  []BudgetPoint
}

// BudgetOverTime draws each budget as a step line that holds its value
// until the next event, from its initial value at time 0.
func BudgetOverTime(title string, series []BudgetSeries) (*Figure, error) {
	f := newFigure(title, "time since start (s)", "privacy budget left (epsilon)")
	drawn := 0
	for i, s := range series {
		pts := plotter.XYs{{X: 0, Y: s.Initial}}
		for _, p := range s.Points {
			if p.At < 0 || !finite(p.Remaining) {
				return nil, fmt.Errorf("budget %q: series %q has a point at %s holding %v", title, s.Name, p.At, p.Remaining)
			}
			pts = append(pts, plotter.XY{X: p.At.Seconds(), Y: p.Remaining})
		}
		if !finite(s.Initial) {
			return nil, fmt.Errorf("budget %q: series %q starts at %v", title, s.Name, s.Initial)
		}
		if !slices.IsSortedFunc(s.Points, func(a, b BudgetPoint) int { return cmp.Compare(a.At, b.At) }) {
			return nil, fmt.Errorf("budget %q: series %q is not in time order", title, s.Name)
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, fmt.Errorf("budget %q: %w", title, err)
		}
		l.StepStyle = plotter.PostStep
		l.Color, l.Width, l.Dashes = colour(i), vg.Points(1.5), dash(i)
		f.p.Add(l)
		f.legend.Add(s.Name, l)
		drawn++
	}
	if drawn == 0 {
		f.noData("no budget")
		return f, nil
	}
	f.p.X.Min, f.p.Y.Min = 0, 0
	return f, nil
}

func mean(vs []float64) float64 {
	t := 0.0
	for _, v := range vs {
		t += v
	}
	return t / float64(len(vs))
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// num prints a value compactly: integers without decimals, others with one.
func num(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}
