package report

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/e-mission/upc/internal/plot"
)

// Figure names: each is written as NAME.svg, which report.md shows, and
// NAME.pdf beside it.
const (
	LaunchFigure = "launch"
	PhasesFigure = "phases"
	UsersFigure  = "users"
	// ErrorFigure and BudgetFigure are drawn for runs with aggregate steps.
	ErrorFigure  = "error"
	BudgetFigure = "budget"
)

// figures are the report's figures in the order report.md shows them; each
// is drawn for the reports it applies to.
var figures = []struct {
	name, caption string
	draw          func(r *Report) (*plot.Figure, error)
	applies       func(r *Report) bool
}{
	{LaunchFigure, "Launch latency CDF", func(r *Report) (*plot.Figure, error) { return LaunchPlot(r) }, hasUsers},
	{PhasesFigure, "Time per phase", func(r *Report) (*plot.Figure, error) { return PhasesPlot(r) }, hasUsers},
	{UsersFigure, "Per-user phase timings", UsersPlot, hasUsers},
	{ErrorFigure, "Error of the noisy answers against epsilon", func(r *Report) (*plot.Figure, error) { return ErrorPlot(r) }, hasAnswers},
	{BudgetFigure, "Privacy budget over time", BudgetPlot, hasAnswers},
}

func hasUsers(r *Report) bool { return len(r.Users) > 0 }

func hasAnswers(r *Report) bool {
	return slices.ContainsFunc(r.Aggregates, func(a Aggregate) bool { return a.True != nil })
}

// FigureFiles are the files Write creates for r's figures.
func FigureFiles(r *Report) []string {
	var out []string
	for _, f := range figures {
		if f.applies(r) {
			out = append(out, f.name+".svg", f.name+".pdf")
		}
	}
	return out
}

// ErrorPlot is the absolute error of every aggregate answer (each part of
// it: the count, or each mode of a metrics total) against the ε it cost,
// over every report given: the runs of one scenario with its seeds, or with
// others, pool into one figure. The dashed line is the mechanism's mean
// absolute error, Δ/ε.
func ErrorPlot(rs ...*Report) (*plot.Figure, error) {
	var names []string
	by := map[string]*plot.EpsilonSeries{}
	for _, r := range rs {
		for _, a := range r.Aggregates {
			if a.True == nil {
				continue
			}
			for _, part := range sortedParts(a.True) {
				name := a.Query
				if a.Query != "count" {
					name = a.Query + ": " + part
				}
				s, ok := by[name]
				if !ok {
					delta := a.Sensitivity[part]
					s = &plot.EpsilonSeries{Name: name}
					if delta > 0 {
						s.Expected = func(eps float64) float64 { return delta / eps }
					}
					by[name] = s
					names = append(names, name)
				}
				s.Runs = append(s.Runs, plot.EpsilonRun{Epsilon: a.EpsilonByPart[part], Seed: a.Seed, Exact: a.True[part], Noisy: a.Noisy[part]})
			}
		}
	}
	var series []plot.EpsilonSeries
	for _, n := range names {
		series = append(series, *by[n])
	}
	return plot.ErrorVsEpsilon("Aggregate answers: error against epsilon", series)
}

// BudgetPlot is each aggregate step's population budget over the run: the
// mean privacy budget its users hold, from a new user's initial budget,
// less each charge when its user finished (users are charged once each).
func BudgetPlot(r *Report) (*plot.Figure, error) {
	var series []plot.BudgetSeries
	for _, a := range r.Aggregates {
		if a.Users == 0 {
			continue
		}
		s := plot.BudgetSeries{Name: fmt.Sprintf("%s %s (mean of %d users)", a.Step, a.Query, a.Users), Initial: a.InitialBudget}
		us := slices.Clone(a.PerUser)
		slices.SortFunc(us, func(x, y AggregateUser) int { return cmp.Compare(x.EndMS, y.EndMS) })
		left := a.InitialBudget * float64(a.Users)
		s.Points = append(s.Points, plot.BudgetPoint{At: msDuration(a.StartMS), Remaining: a.InitialBudget})
		for _, u := range us {
			if u.Epsilon == 0 {
				continue
			}
			left -= u.Epsilon
			s.Points = append(s.Points, plot.BudgetPoint{At: msDuration(a.StartMS + u.EndMS), Remaining: left / float64(a.Users)})
		}
		series = append(series, s)
	}
	return plot.BudgetOverTime("Privacy budget left, mean per user", series)
}

func msDuration(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

func sortedParts(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
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
