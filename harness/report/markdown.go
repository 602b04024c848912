package report

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Markdown renders the report for people.
func Markdown(r *Report) []byte {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	verdict := "PASSED"
	if !r.Passed {
		verdict = "FAILED"
	}
	w("# UPC e2e: %s\n\n", r.Scenario)
	if r.Description != "" {
		w("%s\n\n", r.Description)
	}
	ok := 0
	for _, u := range r.Users {
		if u.Status == OK {
			ok++
		}
	}
	who := fmt.Sprintf("%d/%d users ok", ok, len(r.Users))
	if len(r.Users) == 0 && len(r.Aggregates) > 0 {
		who = fmt.Sprintf("%d aggregate queries", len(r.Aggregates))
	}
	w("**%s**: %s; wall time %s (stand-up %s, tear-down %s); run `%s`, started %s.\n\n",
		verdict, who, secs(r.WallMS), secs(r.StandupMS), secs(r.TeardownMS), r.Run, r.Started.UTC().Format("2006-01-02 15:04:05 UTC"))
	if r.Error != "" {
		w("The run stopped early: %s\n\n", mdCell(r.Error))
	}

	if len(r.Aggregates) > 0 {
		aggregatesMarkdown(w, r.Aggregates)
	}
	w("## Users\n\n")
	if len(r.Users) == 0 {
		w("No user ran steps of their own.\n\n")
	} else {
		phases := r.Phases()
		trips := r.hasTrips()
		w("| user | status | placed on |")
		for _, p := range phases {
			w(" %s |", p)
		}
		w(" total |")
		if trips {
			w(" trips found / expected (ground truth) |")
		}
		w("\n|---|---|---|%s---:|", strings.Repeat("---:|", len(phases)))
		if trips {
			w("---:|")
		}
		w("\n")
		for _, u := range r.Users {
			w("| %s | %s | %s |", mdCell(u.Name), statusMark(u.Status), mdCell(dash(u.Placement)))
			for _, p := range phases {
				w(" %s |", stepCell(u, p))
			}
			w(" %s |", ms(u.TotalMS))
			if trips {
				w(" %s |", tripsCell(u))
			}
			w("\n")
		}
		w("\nTimes are milliseconds; ✗ marks a failed step, – a skipped one.\n\n")
		w("| phase | n | median ms | p90 ms | max ms |\n|---|---:|---:|---:|---:|\n")
		for _, p := range phases {
			d := r.durations(p)
			if len(d) == 0 {
				w("| %s | 0 | – | – | – |\n", p)
				continue
			}
			w("| %s | %d | %s | %s | %s |\n", p, len(d), ms(quantile(d, 0.5)), ms(quantile(d, 0.9)), ms(slices.Max(d)))
		}
		w("\n")
	}

	var fails []string
	for _, u := range r.Users {
		for _, s := range u.Steps {
			if s.Status == Failed {
				fails = append(fails, fmt.Sprintf("- **%s**, %s: %s", mdCell(u.Name), s.Name, mdCell(s.Error)))
			}
		}
	}
	if len(fails) > 0 {
		w("## Failures\n\n%s\n\n", strings.Join(fails, "\n"))
	}

	var trips []string
	for _, u := range r.Users {
		if c := u.GroundTruth; c != nil && !c.Exact {
			line := fmt.Sprintf("- **%s**, %s: %s", mdCell(u.Name), c.Date, c.Verdict())
			for _, f := range c.Failed {
				line += "\n  - " + mdCell(f)
			}
			trips = append(trips, line)
		}
	}
	if len(trips) > 0 {
		w("## Trips that differ from the ground truth\n\nCompared trip by trip as `upc pipeline check` does; the first failed checks:\n\n%s\n\n", strings.Join(trips, "\n"))
	}

	if len(r.Faults) > 0 {
		w("## Faults\n\n")
		for _, f := range r.Faults {
			w("### %s: %s %s\n\n%s\n\n", f.Step, f.Kind, f.Target, dash(f.Did))
			if len(f.Affected) == 0 {
				w("No user affected.\n\n")
			} else {
				w("| affected user | out of the run | why |\n|---|---|---|\n")
				for _, a := range f.Affected {
					out := "no"
					if a.Out {
						out = "yes"
					}
					w("| %s | %s | %s |\n", a.User, out, mdCell(a.Reason))
				}
				w("\n")
			}
			w("| expectation | held | detail |\n|---|---|---|\n")
			for _, c := range f.Checks {
				mark := "yes"
				if !c.Held {
					mark = "**no**"
				}
				w("| %s | %s | %s |\n", c.Name, mark, mdCell(c.Detail))
			}
			w("\n")
		}
	}

	w("## Expectations\n\n")
	if len(r.Expectations) == 0 {
		w("The scenario sets none.\n\n")
	} else {
		w("| expectation | held | detail |\n|---|---|---|\n")
		for _, c := range r.Expectations {
			mark := "yes"
			if !c.Held {
				mark = "**no**"
			}
			w("| %s | %s | %s |\n", c.Name, mark, mdCell(c.Detail))
		}
		w("\n")
	}

	w("## Figures\n\nEach figure is beside this report as SVG (shown here) and as PDF (fonts embedded, for a paper).\n\n")
	for _, f := range figures {
		if !f.applies(r) {
			continue
		}
		w("![%s](%s) ([PDF](%s))\n\n", f.caption, f.name+".svg", f.name+".pdf")
	}

	d := r.Deployment
	w("## Deployment\n\n- backend: %s\n", d.Backend)
	if d.Network != "" {
		w("- network: `%s` (gateway %s; instance ports are published on the gateway address)\n", d.Network, dash(d.Gateway))
	}
	if d.Router != "" {
		w("- router: %s\n", d.Router)
	}
	access := d.Access
	if access == "" {
		access = "off"
	}
	w("- access control: %s\n", access)
	w("- TLS: %s\n", cmp.Or(d.TLS, "off"))
	if d.ConfigFile != "" {
		w("- configuration the router and agents read: [%s](%s)\n", d.ConfigFile, d.ConfigFile)
	}
	if len(d.Agents) > 0 {
		w("\n| agent | weight | address | PMs placed |\n|---|---:|---|---:|\n")
		for _, a := range d.Agents {
			w("| %s | %d | %s | %d |\n", a.Name, a.Weight, dash(a.Address), a.Placed)
		}
	}
	w("\n## Tear-down\n\n")
	l := r.Leftovers
	switch {
	case !l.Checked:
		w("Leftovers were not checked.\n\n")
	case l.Empty():
		w("Nothing left running: no container, network or volume carries the run's labels.\n\n")
	default:
		w("**Left behind**: containers %s; networks %s; volumes %s.\n\n", list(l.Containers), list(l.Networks), list(l.Volumes))
	}

	e := r.Environment
	w("## Environment\n\n| | |\n|---|---|\n")
	w("| upc | %s |\n| go | %s |\n| platform | %s, %d CPUs |\n", e.UPCVersion, e.GoVersion, e.Platform, e.CPUs)
	if e.DockerVersion != "" {
		w("| docker engine | %s (API %s) |\n", e.DockerVersion, e.DockerAPI)
	}
	if e.Commit != "" {
		dirty := ""
		if e.Dirty {
			dirty = " (with uncommitted changes)"
		}
		w("| commit | `%s`%s |\n", e.Commit, dirty)
	}
	if m := e.Machine; m.OS != "" {
		w("| machine | %s, kernel %s, %d CPUs, %d MiB memory |\n", m.OS, dash(m.Kernel), m.CPUs, m.MemoryMB)
	}
	if e.ScenarioFile != "" {
		w("| scenario file | [%s](%s) (sha256 `%s`) |\n", e.ScenarioFile, e.ScenarioFile, e.ScenarioSHA256)
	}
	for _, s := range e.Seeds {
		w("| seed %s | %d: %s |\n", s.Name, s.Value, s.Seeds)
	}
	if len(e.Seeds) == 0 {
		w("| seed | %d |\n", e.Seed)
	}
	w("| parallel | %d |\n| data | `%s` |\n\n", e.Parallel, e.DataDir)
	if len(e.Images) > 0 {
		w("| image | ref | id |\n|---|---|---|\n")
		for _, im := range e.Images {
			w("| %s | `%s` | `%s` |\n", im.Name, im.Ref, im.ID)
		}
		w("\n")
	}
	w("Command:\n\n```\n%s\n```\n\n", e.Command)
	if len(r.ScenarioConfig) > 0 {
		w("Scenario as run (defaults filled):\n\n```json\n%s\n```\n", indentJSON(r.ScenarioConfig))
	}
	return b.Bytes()
}

// Table prints the per-user summary for the terminal.
func Table(out io.Writer, r *Report) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	if len(r.Users) == 0 {
		tw = tabwriter.NewWriter(io.Discard, 0, 0, 2, ' ', 0)
	}
	phases := r.Phases()
	trips := r.hasTrips()
	head := []string{"user", "status", "placed"}
	head = append(head, phases...)
	head = append(head, "total")
	if trips {
		head = append(head, "trips")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, u := range r.Users {
		row := []string{u.Name, u.Status, dash(u.Placement)}
		for _, p := range phases {
			row = append(row, stepCell(u, p))
		}
		row = append(row, ms(u.TotalMS))
		if trips {
			row = append(row, tripsCell(u))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	for _, a := range r.Aggregates {
		if a.Error != "" {
			fmt.Fprintf(out, "%s %s: failed: %s\n", a.Step, a.Query, a.Error)
			continue
		}
		fmt.Fprintf(out, "%s %s: noisy %s; true %s; error %s; ε %s per user; %d/%d answered; seed %d; %s\n", a.Step, a.Query,
			parts(a.Noisy), parts(a.True), parts(a.AbsError), num(a.Epsilon), a.Participants, a.Users, a.Seed, secs(a.WallMS))
	}
	for _, c := range r.Expectations {
		mark := "ok  "
		if !c.Held {
			mark = "FAIL"
		}
		fmt.Fprintf(out, "%s %s: %s\n", mark, c.Name, c.Detail)
	}
	verdict := "PASSED"
	if !r.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(out, "%s in %s (times in ms)\n", verdict, secs(r.WallMS))
}

// durations lists the successful durations of a phase over users.
func (r *Report) durations(phase string) []float64 {
	var d []float64
	for _, u := range r.Users {
		if s, ok := u.Step(phase); ok && s.Status == OK {
			d = append(d, s.DurationMS)
		}
	}
	return d
}

func (r *Report) hasTrips() bool {
	return slices.ContainsFunc(r.Users, func(u User) bool { return u.TripsFound != nil })
}

func quantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	// nearest rank
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func stepCell(u User, p string) string {
	s, ok := u.Step(p)
	switch {
	case !ok || s.Status == Skipped:
		return "–"
	case s.Status == Failed:
		return "✗ " + ms(s.DurationMS)
	}
	return ms(s.DurationMS)
}

func tripsCell(u User) string {
	if u.TripsFound == nil {
		return fmt.Sprintf("– / %d", u.ExpectedTrips)
	}
	cell := fmt.Sprintf("%d / %d", *u.TripsFound, u.ExpectedTrips)
	switch c := u.GroundTruth; {
	case c == nil:
	case c.Exact:
		cell += " (exact)"
	case c.Approx:
		cell += " (approx)"
	default:
		cell += " (no match)"
	}
	return cell
}

func statusMark(s string) string {
	if s == OK {
		return "ok"
	}
	return "**" + s + "**"
}

func ms(v float64) string   { return fmt.Sprintf("%.0f", v) }
func secs(v float64) string { return fmt.Sprintf("%.1f s", v/1000) }

func dash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return "`" + strings.Join(s, "`, `") + "`"
}

// mdCell keeps a value on one table line.
func mdCell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

func indentJSON(b []byte) string {
	var out bytes.Buffer
	if err := jsonIndent(&out, b); err != nil {
		return string(b)
	}
	return out.String()
}

// aggregatesMarkdown is the aggregate steps: the published answer beside
// the true one, what each user paid, and every user's outcome.
func aggregatesMarkdown(w func(string, ...any), aggs []Aggregate) {
	w("## Aggregate queries\n\nRun by the researcher's aggregator (a container of its own) over the whole population, in experiment mode: the noise is seeded and the true answer revealed, to measure the error.\n\n")
	w("| step | query | answered | noisy | true | abs. error | ε per user | seed | wall |\n|---|---|---:|---|---|---|---:|---:|---:|\n")
	for _, a := range aggs {
		if a.Error != "" {
			w("| %s | %s | – | **failed**: %s | | | | %d | %s |\n", a.Step, a.Query, mdCell(a.Error), a.Seed, secs(a.WallMS))
			continue
		}
		w("| %s | %s | %d/%d | %s | %s | %s | %s | %d | %s |\n", a.Step, a.Query, a.Participants, a.Users,
			parts(a.Noisy), parts(a.True), parts(a.AbsError), num(a.Epsilon), a.Seed, secs(a.WallMS))
	}
	w("\n")
	for _, a := range aggs {
		switch {
		case a.GroundTruth != nil:
			w("%s: the same count from the users' ground-truth trips (read apart from the upload, pipeline and count code): %s.\n\n", a.Step, parts(a.GroundTruth))
		case a.GroundTruthNote != "":
			w("%s: no count from the ground truths: %s.\n\n", a.Step, mdCell(a.GroundTruthNote))
		}
	}
	for _, a := range aggs {
		if len(a.PerUser) == 0 {
			continue
		}
		w("### %s (%s): every user\n\n", a.Step, a.Query)
		if len(a.Phases) > 0 {
			w("| phase | users | median | p95 | max |\n|---|---:|---:|---:|---:|\n")
			for _, p := range a.Phases {
				w("| %s | %d | %s | %s | %s |\n", p.Phase, p.N, ms(p.MedianMS), ms(p.P95MS), ms(p.MaxMS))
			}
			w("\n(ms)\n\n")
		}
		w("| user | status | ε spent | trips | finished | why |\n|---|---|---:|---:|---:|---|\n")
		for _, u := range a.PerUser {
			why := ""
			if u.Error != "" {
				why = u.Phase + ": " + mdCell(u.Error)
			}
			w("| %s | %s | %s | %d | %s | %s |\n", cmp.Or(u.User, u.File), u.Status, num(u.Epsilon), u.Trips, secs(u.EndMS), why)
		}
		w("\n")
	}
}

// parts writes values by part: a count alone, modes as "MODE: v".
func parts(m map[string]float64) string {
	if m == nil {
		return "–"
	}
	if v, ok := m["count"]; ok && len(m) == 1 {
		return num(v)
	}
	var out []string
	for _, k := range sortedParts(m) {
		out = append(out, k+": "+num(m[k]))
	}
	return strings.Join(out, ", ")
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }
