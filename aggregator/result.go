package aggregator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/e-mission/upc/internal/plot"
)

// Result is a run's published outcome. NumberParticipants and NoisyTotal are
// the original's output; nothing here reveals one user's answer.
type Result struct {
	Query string `json:"query"`
	// NumberParticipants counts the users who answered.
	NumberParticipants int `json:"number_participants"`
	// NoisyTotal is an integer for count, a value by mode for metrics.
	NoisyTotal any `json:"noisy_total"`
	// ActualTotal is the exact total, only with RevealTrueTotal (experiments).
	ActualTotal   any    `json:"actual_total,omitempty"`
	TrueTotalNote string `json:"actual_total_note,omitempty"`
	// Epsilon is what the query costs each participant; EpsilonByMode its
	// parts for metrics.
	Epsilon       float64            `json:"epsilon"`
	EpsilonByMode map[string]float64 `json:"epsilon_by_mode,omitempty"`
	Noise         string             `json:"noise"`
	// Seed is set in experiment mode (reproducible noise and keys).
	Seed     *uint64 `json:"experiment_seed,omitempty"`
	Users    int     `json:"users"`
	NoBudget int     `json:"no_budget"`
	Failed   int     `json:"failed"`
	Parallel int     `json:"parallel"`
	Upload   string  `json:"upload"`
	// SharedServices: one pipeline and one query instance served every user.
	SharedServices  bool   `json:"shared_services,omitempty"`
	SharedPipelines int    `json:"shared_pipelines,omitempty"`
	Run             string `json:"run"`
	// Command and LoadAverage are filled by the caller for the record.
	Command     string `json:"command,omitempty"`
	LoadAverage string `json:"load_average,omitempty"`
	// LoadAverageBefore is the load average before the router started.
	LoadAverageBefore string    `json:"load_average_before,omitempty"`
	Started           time.Time `json:"started"`
	WallMS            float64   `json:"wall_ms"`
	// NetworkMode is the local router's docker.network_mode (--local only).
	NetworkMode string `json:"network_mode,omitempty"`
	// Label, when set, names the run in a comparison instead of its path
	// (Path); it is given when comparing, never stored.
	Label string `json:"-"`
	// CPU is where the CPU went during the run (WallMS), filled by the
	// caller where it can read the counters.
	CPU *CPU `json:"cpu,omitempty"`
	// PoolFill is the warm pool's fill before the run (--warm-pool),
	// filled by the caller: not part of WallMS.
	PoolFill *PoolFill    `json:"pool_fill,omitempty"`
	Phases   []PhaseStat  `json:"phases"`
	PerUser  []UserResult `json:"per_user"`
}

// PoolFill is the filling of the router's warm pool before a run, and
// what the run took from it.
type PoolFill struct {
	Size int `json:"size"`
	// FillMS is from the router's start to a full pool.
	FillMS float64 `json:"fill_ms"`
	// CPU used meanwhile, in CPU-seconds (CPU's fields).
	CPU CPU `json:"cpu"`
	// Claimed is how many pooled PMs the run's launches took (the pool is
	// not refilled during the run), Left how many were still unclaimed at
	// its end (drained with the router).
	Claimed int `json:"claimed"`
	Left    int `json:"left"`
}

// CPU is where a stretch's CPU went, in CPU-seconds: the machine's busy
// CPU (meaningful on an otherwise idle machine only), this process (the
// aggregator and the in-process router), the engine's daemons with the
// children they reaped (dockerd's re-executions, iptables, docker-proxy),
// and the containers (Docker's cgroup), as scripts/cpu-split.sh counts.
type CPU struct {
	Busy       float64 `json:"busy_s"`
	Command    float64 `json:"command_s"`
	Dockerd    float64 `json:"dockerd_s"`
	Containerd float64 `json:"containerd_s"`
	Containers float64 `json:"containers_s"`
}

// UserResult is one user's outcome: no answer, only whether they took part.
type UserResult struct {
	File   string `json:"file"`
	ID     string `json:"id"`
	Status string `json:"status"`
	// Phase and Error say where and why a user did not answer.
	Phase string `json:"phase,omitempty"`
	Error string `json:"error,omitempty"`
	// CleanupError is a failed delete of the user's instances.
	CleanupError string             `json:"cleanup_error,omitempty"`
	Entries      int                `json:"entries,omitempty"`
	Trips        int                `json:"trips,omitempty"`
	PrivacyCost  float64            `json:"privacy_cost,omitempty"`
	PhasesMS     map[string]float64 `json:"phases_ms"`
	// LaunchMS are the router launches (they overlap the phases).
	LaunchMS map[string]float64 `json:"launch_ms,omitempty"`
	// EndMS is when the user finished, from the start of the run.
	EndMS float64 `json:"end_ms"`
}

// PhaseStat summarises one phase over the users that reached it.
type PhaseStat struct {
	Phase    string  `json:"phase"`
	N        int     `json:"n"`
	MinMS    float64 `json:"min_ms"`
	MedianMS float64 `json:"median_ms"`
	P95MS    float64 `json:"p95_ms"`
	MaxMS    float64 `json:"max_ms"`
	MeanMS   float64 `json:"mean_ms"`
}

func phaseStats(users []UserResult) []PhaseStat {
	var out []PhaseStat
	names := append(append([]string{}, Phases...), "launch:pm", "launch:pipeline", "launch:count", "launch:metrics")
	for _, p := range names {
		var v []float64
		for _, u := range users {
			m, key := u.PhasesMS, p
			if strings.HasPrefix(p, "launch:") {
				m, key = u.LaunchMS, strings.TrimPrefix(p, "launch:")
			}
			if d, ok := m[key]; ok {
				v = append(v, d)
			}
		}
		if len(v) == 0 {
			continue
		}
		sort.Float64s(v)
		sum := 0.0
		for _, d := range v {
			sum += d
		}
		out = append(out, PhaseStat{Phase: p, N: len(v), MinMS: v[0], MedianMS: quantile(v, 0.5), P95MS: quantile(v, 0.95),
			MaxMS: v[len(v)-1], MeanMS: round3(sum / float64(len(v)))})
	}
	return out
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[min(i, len(sorted)-1)]
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// JSON is the result as indented JSON.
func (r *Result) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Markdown is the result for people: the published answer, who took part,
// the phases' times and every user's status.
func (r *Result) Markdown() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Aggregate %s query\n\n", r.Query)
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| number_participants | **%d** of %d users |\n", r.NumberParticipants, r.Users)
	fmt.Fprintf(&b, "| noisy_total | **%s** |\n", totalCell(r.NoisyTotal))
	if r.ActualTotal != nil {
		fmt.Fprintf(&b, "| actual_total (experiment only) | %s |\n", totalCell(r.ActualTotal))
	}
	if r.TrueTotalNote != "" {
		fmt.Fprintf(&b, "| actual_total | %s |\n", r.TrueTotalNote)
	}
	fmt.Fprintf(&b, "| ε per participant | %.6g |\n", r.Epsilon)
	if len(r.EpsilonByMode) > 0 {
		fmt.Fprintf(&b, "| ε by mode | %s |\n", totalCell(r.EpsilonByMode))
	}
	fmt.Fprintf(&b, "| noise | %s%s |\n", r.Noise, seedNote(r.Seed))
	fmt.Fprintf(&b, "| no budget left / failed | %d / %d |\n", r.NoBudget, r.Failed)
	services := "per user"
	if r.SharedServices {
		services = fmt.Sprintf("shared by all users, %d pipeline instance(s)", max(r.SharedPipelines, 1))
	}
	fmt.Fprintf(&b, "| wall time | %.1f s (parallel %d, upload %s, services %s) |\n", r.WallMS/1000, r.Parallel, r.Upload, services)
	if c := r.CPU; c != nil {
		fmt.Fprintf(&b, "| CPU during the run | busy %.1f s (the machine's), this process %.1f s, dockerd %.1f s, containerd %.1f s, containers %.1f s |\n",
			c.Busy, c.Command, c.Dockerd, c.Containerd, c.Containers)
	}
	if p := r.PoolFill; p != nil {
		fmt.Fprintf(&b, "| pool fill (before the run, not in its wall time) | %.1f s for %d PMs; CPU: busy %.1f s, this process %.1f s, dockerd %.1f s, containerd %.1f s, containers %.1f s; %d claimed by the run, %d left and drained |\n",
			p.FillMS/1000, p.Size, p.CPU.Busy, p.CPU.Command, p.CPU.Dockerd, p.CPU.Containerd, p.CPU.Containers, p.Claimed, p.Left)
	}
	if r.LoadAverage != "" {
		fmt.Fprintf(&b, "| load average (before → after) | %s → %s |\n", orDash(r.LoadAverageBefore), r.LoadAverage)
	}
	fmt.Fprintf(&b, "| run | %s, started %s |\n", r.Run, r.Started.Format(time.RFC3339))
	if r.Command != "" {
		fmt.Fprintf(&b, "\n```sh\n%s\n```\n", r.Command)
	}
	fmt.Fprintf(&b, "\n## Phases (ms per user)\n\n| phase | users | min | median | p95 | max | mean |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.0f | %.0f | %.0f | %.0f |\n", p.Phase, p.N, p.MinMS, p.MedianMS, p.P95MS, p.MaxMS, p.MeanMS)
	}
	fmt.Fprintf(&b, "\nLaunches overlap the phases: a user's pipeline and query services are launched while its PM starts.\n")
	fmt.Fprintf(&b, "\n![phases](phases.svg) ([PDF](phases.pdf))\n\n## Users\n\n| file | status | why | ")
	fmt.Fprintf(&b, "%s | done at |\n|---|---|---|%s---:|\n", strings.Join(Phases, " | "), strings.Repeat("---:|", len(Phases)))
	for _, u := range r.PerUser {
		why := u.Error
		if u.Phase != "" && why != "" {
			why = u.Phase + ": " + why
		}
		if u.CleanupError != "" {
			why = strings.TrimPrefix(why+"; cleanup: "+u.CleanupError, "; ")
		}
		fmt.Fprintf(&b, "| %s | %s | %s |", md(u.File), u.Status, md(why))
		for _, p := range Phases {
			if d, ok := u.PhasesMS[p]; ok {
				fmt.Fprintf(&b, " %.0f |", d)
			} else {
				b.WriteString(" – |")
			}
		}
		fmt.Fprintf(&b, " %.1f s |\n", u.EndMS/1000)
	}
	return b.Bytes()
}

func seedNote(seed *uint64) string {
	if seed == nil {
		return " (crypto/rand)"
	}
	return fmt.Sprintf(" (experiment mode: seeded with %d, not for publication)", *seed)
}

func totalCell(v any) string {
	switch x := v.(type) {
	case map[string]float64:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s %.6g", k, x[k])
		}
		return strings.Join(parts, ", ")
	case *int64:
		return fmt.Sprint(*x)
	}
	return fmt.Sprint(v)
}

func md(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// PhasesFigure plots each user's phases as stacked bars (at most the first
// 64 users, so the figure stays readable).
func (r *Result) PhasesFigure() (*plot.Figure, error) {
	var rows []string
	var vals [][]float64
	for i, u := range r.PerUser {
		if i == 64 {
			break
		}
		rows = append(rows, u.File)
		row := make([]float64, len(Phases))
		for j, p := range Phases {
			row[j] = u.PhasesMS[p]
		}
		vals = append(vals, row)
	}
	return plot.StackedBars(fmt.Sprintf("Per-user phases (%d users, parallel %d)", r.Users, r.Parallel), "ms", rows, Phases, vals)
}

// Write puts result.json, result.md and the phases figure (phases.svg, and
// phases.pdf beside it) in dir.
func (r *Result) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	j, err := r.JSON()
	if err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	files := map[string][]byte{"result.json": j, "result.md": r.Markdown()}
	fig, err := r.PhasesFigure()
	if err == nil {
		files["phases.svg"], err = fig.SVG()
	}
	if err == nil {
		files["phases.pdf"], err = fig.PDF()
	}
	if err != nil {
		return fmt.Errorf("write result: phases figure: %w", err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
	}
	return nil
}
