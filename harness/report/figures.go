package report

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/e-mission/upc/internal/plot"
)

// Figure names: each is written as NAME.svg, which report.md shows, and
// NAME.pdf beside it.
const (
	LaunchFigure = "launch"
	PhasesFigure = "phases"
	UsersFigure  = "users"
)

// figures are the report's figures in the order report.md shows them.
var figures = []struct {
	name, caption string
	draw          func(r *Report) (*plot.Figure, error)
}{
	{LaunchFigure, "Launch latency CDF", func(r *Report) (*plot.Figure, error) { return LaunchPlot(r) }},
	{PhasesFigure, "Time per phase", func(r *Report) (*plot.Figure, error) { return PhasesPlot(r) }},
	{UsersFigure, "Per-user phase timings", UsersPlot},
}

// FigureFiles are the files Write creates for the figures.
func FigureFiles() []string {
	var out []string
	for _, f := range figures {
		out = append(out, f.name+".svg", f.name+".pdf")
	}
	return out
}

// serviceSteps are the steps that launch a service instance of their own
// and record its launch in the launch_ms value.
var serviceSteps = []string{"pipeline", "metrics", "count"}

// kind is a step name without its repeat number: "launch#2" is a launch.
func kind(step string) string {
	k, _, _ := strings.Cut(step, "#")
	return k
}

func backend(r *Report) string { return cmp.Or(r.Deployment.Backend, "unknown backend") }

// backends groups reports by backend, in the order backends first appear.
func backends(rs []*Report) (names []string, by map[string][]*Report) {
	by = map[string][]*Report{}
	for _, r := range rs {
		b := backend(r)
		if _, ok := by[b]; !ok {
			names = append(names, b)
		}
		by[b] = append(by[b], r)
	}
	return names, by
}

// LaunchPlot is the launch latency CDF per backend, over every report given
// (one run, or runs on several backends): for each backend, the PM launches
// that succeeded (launch → the PM answers) and the service instances the
// pipeline, metrics and count steps launched (launch → the service answers).
func LaunchPlot(rs ...*Report) (*plot.Figure, error) {
	names, by := backends(rs)
	var series []plot.Series
	for _, b := range names {
		var pm, svc []float64
		for _, r := range by[b] {
			for _, u := range r.Users {
				for _, s := range u.Steps {
					k := kind(s.Name)
					if k == "launch" && s.Status == OK {
						pm = append(pm, s.DurationMS)
					}
					if v, ok := s.Values["launch_ms"]; ok && slices.Contains(serviceSteps, k) {
						svc = append(svc, v)
					}
				}
			}
		}
		series = append(series, plot.Series{Name: b + ": PM", Values: pm}, plot.Series{Name: b + ": services", Values: svc})
	}
	return plot.CDF("Launch latency: request to an answering instance", "ms", series)
}

// PhasesPlot is the time each phase took per user, one bar per backend over
// every report given: the median of the users' successful steps, and a
// whisker from the 10th to the 90th percentile.
func PhasesPlot(rs ...*Report) (*plot.Figure, error) {
	names, by := backends(rs)
	var phases []string
	for _, r := range rs {
		for _, p := range r.Phases() {
			if !slices.Contains(phases, p) {
				phases = append(phases, p)
			}
		}
	}
	var series []plot.BarSeries
	users := 0
	for _, b := range names {
		s := plot.BarSeries{Name: b}
		for _, p := range phases {
			var d []float64
			for _, r := range by[b] {
				d = append(d, r.durations(p)...)
			}
			if len(d) == 0 {
				s.Mid, s.Low, s.High = append(s.Mid, 0), append(s.Low, math.NaN()), append(s.High, math.NaN())
				continue
			}
			s.Mid = append(s.Mid, quantile(d, 0.5))
			s.Low, s.High = append(s.Low, quantile(d, 0.1)), append(s.High, quantile(d, 0.9))
		}
		series = append(series, s)
		for _, r := range by[b] {
			users += len(r.Users)
		}
	}
	title := fmt.Sprintf("Time per phase (%d users)", users)
	if len(names) == 1 {
		title = fmt.Sprintf("Time per phase (%s, %d users)", names[0], users)
	}
	return plot.Bars(title, "ms", "bar: median, whisker: 10th to 90th percentile", phases, series)
}

// UsersPlot is a stacked bar per user, one segment per phase.
func UsersPlot(r *Report) (*plot.Figure, error) {
	phases := r.Phases()
	rows := make([]string, len(r.Users))
	vals := make([][]float64, len(r.Users))
	for i, u := range r.Users {
		rows[i] = u.Name
		vals[i] = make([]float64, len(phases))
		for j, p := range phases {
			if s, ok := u.Step(p); ok && s.Status != Skipped {
				vals[i][j] = s.DurationMS
			}
		}
	}
	return plot.StackedBars("Per-user phase timings", "ms", rows, phases, vals)
}
