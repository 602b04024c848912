package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/e-mission/upc/internal/plot"
)

// Load reads a run's report.json from its results folder (or the file).
func Load(path string) (*Report, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, JSONFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	if r.Run == "" {
		return nil, fmt.Errorf("report %s: no run id: not a report of upc scenario run", path)
	}
	return &r, nil
}

// Compare writes a before/after table of two runs: what each recorded
// (commit, scenario, seeds), the median time of every phase with the
// ratio after/before, and every aggregate's answers.
func Compare(out io.Writer, a, b *Report) {
	fmt.Fprintf(out, "before: %s (%s, commit %s)\nafter:  %s (%s, commit %s)\n\n",
		a.Run, a.Scenario, short(a.Environment.Commit), b.Run, b.Scenario, short(b.Environment.Commit))
	if a.Environment.ScenarioSHA256 != b.Environment.ScenarioSHA256 {
		fmt.Fprintln(out, "note: the two runs ran different scenario files")
	}
	if !slices.Equal(a.Environment.Seeds, b.Environment.Seeds) {
		fmt.Fprintf(out, "note: the two runs had different seeds (%s, then %s): their noise differs\n", seeds(a), seeds(b))
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tbefore ms\tafter ms\tafter/before\t")
	for _, p := range comparePhases(a, b) {
		x, y := medianOf(p.before), medianOf(p.after)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", p.name, msOrDash(x), msOrDash(y), ratio(x, y))
	}
	fmt.Fprintf(tw, "wall\t%s\t%s\t%s\t\n", ms(a.WallMS), ms(b.WallMS), ratio(a.WallMS, b.WallMS))
	tw.Flush()
	if len(a.Aggregates)+len(b.Aggregates) > 0 {
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "aggregate\tpart\tnoisy before\tnoisy after\ttrue before\ttrue after\tsame answer\t")
		for i := range max(len(a.Aggregates), len(b.Aggregates)) {
			var x, y Aggregate
			if i < len(a.Aggregates) {
				x = a.Aggregates[i]
			}
			if i < len(b.Aggregates) {
				y = b.Aggregates[i]
			}
			name := fmt.Sprintf("%s %s", cmpOr(x.Step, y.Step), cmpOr(x.Query, y.Query))
			keys := sortedParts(x.Noisy)
			for _, k := range sortedParts(y.Noisy) {
				if !slices.Contains(keys, k) {
					keys = append(keys, k)
				}
			}
			if len(keys) == 0 {
				fmt.Fprintf(tw, "%s\t–\t%s\t%s\t\t\t\t\n", name, cmpOr(x.Error, "no answer"), cmpOr(y.Error, "no answer"))
			}
			for _, k := range keys {
				same := "yes"
				if !equalAt(x.Noisy, y.Noisy, k) || !equalAt(x.True, y.True, k) {
					same = "NO"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, k, valueAt(x.Noisy, k), valueAt(y.Noisy, k), valueAt(x.True, k), valueAt(y.True, k), same)
			}
		}
		tw.Flush()
	}
}

// ComparePlot draws the two runs' phases side by side: the median of each
// phase as a bar, the 10th to 90th percentile as a whisker. Aggregate
// phases count as "aggregate#N <phase>".
func ComparePlot(a, b *Report) (*plot.Figure, error) {
	ps := comparePhases(a, b)
	groups := make([]string, len(ps))
	for i, p := range ps {
		groups[i] = p.name
	}
	var series []plot.BarSeries
	for _, side := range []struct {
		name string
		get  func(phaseSamples) []float64
	}{{"before: " + a.Run, func(p phaseSamples) []float64 { return p.before }}, {"after: " + b.Run, func(p phaseSamples) []float64 { return p.after }}} {
		s := plot.BarSeries{Name: side.name}
		for _, p := range ps {
			d := side.get(p)
			if len(d) == 0 {
				s.Mid, s.Low, s.High = append(s.Mid, 0), append(s.Low, math.NaN()), append(s.High, math.NaN())
				continue
			}
			s.Mid, s.Low, s.High = append(s.Mid, quantile(d, 0.5)), append(s.Low, quantile(d, 0.1)), append(s.High, quantile(d, 0.9))
		}
		series = append(series, s)
	}
	return plot.Bars(fmt.Sprintf("Before and after: %s", a.Scenario), "ms", "bar: median, whisker: 10th to 90th percentile", groups, series)
}

// CompareFigure is the name of the comparison's figure (SVG and PDF).
const CompareFigure = "compare"

// WriteCompare writes the comparison's table (compare.txt) and figure
// (compare.svg, compare.pdf) into dir.
func WriteCompare(dir string, a, b *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write comparison: %w", err)
	}
	var sb strings.Builder
	Compare(&sb, a, b)
	files := map[string][]byte{CompareFigure + ".txt": []byte(sb.String())}
	fig, err := ComparePlot(a, b)
	if err != nil {
		return fmt.Errorf("comparison figure: %w", err)
	}
	if files[CompareFigure+".svg"], err = fig.SVG(); err != nil {
		return fmt.Errorf("comparison figure: %w", err)
	}
	if files[CompareFigure+".pdf"], err = fig.PDF(); err != nil {
		return fmt.Errorf("comparison figure: %w", err)
	}
	if hasAnswers(a) || hasAnswers(b) {
		if fig, err := ErrorPlot(a, b); err == nil {
			if svg, err := fig.SVG(); err == nil {
				files[ErrorFigure+".svg"] = svg
			}
			if pdf, err := fig.PDF(); err == nil {
				files[ErrorFigure+".pdf"] = pdf
			}
		}
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p+".tmp", data, 0o644); err != nil {
			return fmt.Errorf("write comparison: %w", err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			return fmt.Errorf("write comparison: %w", err)
		}
	}
	return nil
}

type phaseSamples struct {
	name          string
	before, after []float64
}

// comparePhases are the phases of either run, in order of first
// appearance: the users' steps, then each aggregate's phases.
func comparePhases(a, b *Report) []phaseSamples {
	var out []phaseSamples
	idx := map[string]int{}
	add := func(name string, after bool, v ...float64) {
		i, ok := idx[name]
		if !ok {
			i = len(out)
			idx[name] = i
			out = append(out, phaseSamples{name: name})
		}
		if after {
			out[i].after = append(out[i].after, v...)
		} else {
			out[i].before = append(out[i].before, v...)
		}
	}
	for _, side := range []struct {
		r     *Report
		after bool
	}{{a, false}, {b, true}} {
		for _, p := range side.r.Phases() {
			add(p, side.after, side.r.durations(p)...)
		}
		for _, g := range side.r.Aggregates {
			for _, p := range g.Phases {
				if strings.HasPrefix(p.Phase, "launch:") {
					continue
				}
				// Only the median is kept per aggregate phase.
				add(g.Step+" "+p.Phase, side.after, p.MedianMS)
			}
		}
	}
	return out
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	return quantile(v, 0.5)
}

func msOrDash(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return ms(v)
}

func ratio(before, after float64) string {
	if math.IsNaN(before) || math.IsNaN(after) || before == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", after/before)
}

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return cmpOr(c, "unknown")
}

func valueAt(m map[string]float64, k string) string {
	v, ok := m[k]
	if !ok {
		return "–"
	}
	return num(v)
}

func equalAt(x, y map[string]float64, k string) bool {
	a, okA := x[k]
	b, okB := y[k]
	return okA == okB && a == b
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func seeds(r *Report) string {
	var out []string
	for _, s := range r.Environment.Seeds {
		out = append(out, fmt.Sprintf("%s %d", s.Name, s.Value))
	}
	return cmpOr(strings.Join(out, ", "), "none recorded")
}
