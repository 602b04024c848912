// Package report holds the result of an e2e run and writes it for machines
// (report.json), for people (report.md with figures drawn by gonum/plot, each
// as SVG and PDF) and to the terminal (a summary table). Everything needed to
// reproduce the run is recorded: versions, image ids, seeds, the scenario and
// the exact command.
package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Step statuses.
const (
	OK      = "ok"
	Failed  = "failed"
	Skipped = "skipped"
)

// Report is one run.
type Report struct {
	Scenario    string    `json:"scenario"`
	Description string    `json:"description,omitempty"`
	Run         string    `json:"run"`
	Started     time.Time `json:"started"`
	// WallMS is the whole run, stand-up to tear-down; StandupMS and
	// TeardownMS are its first and last parts.
	WallMS     float64 `json:"wall_ms"`
	StandupMS  float64 `json:"standup_ms"`
	TeardownMS float64 `json:"teardown_ms"`
	Passed     bool    `json:"passed"`
	// Error is set when the run could not proceed (stand-up failed, ...).
	Error string `json:"error,omitempty"`
	Users []User `json:"users"`
	// Aggregates are the aggregate steps: the researcher's queries over
	// the whole population, after every user's steps.
	Aggregates   []Aggregate `json:"aggregates,omitempty"`
	Expectations []Check     `json:"expectations"`
	// Faults are the scenario's fault steps: what each broke, whom it
	// affected and why, and whether its expectations held (each of which is
	// also in Expectations).
	Faults      []Fault     `json:"faults,omitempty"`
	Deployment  Deployment  `json:"deployment"`
	Leftovers   Leftovers   `json:"leftovers"`
	Environment Environment `json:"environment"`
	// Scenario file as run (defaults filled), for reproduction.
	ScenarioConfig json.RawMessage `json:"scenario_config,omitempty"`
}

// User is one user's run.
type User struct {
	Name   string `json:"name"`
	ID     string `json:"id"`
	Day    string `json:"day"`
	Status string `json:"status"`
	// Error is why the user failed (the first failing step's error).
	Error string `json:"error,omitempty"`
	// Placement is where the user's PM ran (the agent or machine).
	Placement     string `json:"placement,omitempty"`
	ExpectedTrips int    `json:"expected_trips"`
	// TripsFound is set once a pipeline step ran: the trips of the ground
	// truth's day that the pipeline wrote to the user's PM.
	TripsFound *int `json:"trips_found,omitempty"`
	// GroundTruth is how those trips compared with the ground truth's.
	GroundTruth *TripCheck `json:"ground_truth,omitempty"`
	Steps       []Step     `json:"steps"`
	TotalMS     float64    `json:"total_ms"`
}

// TripCheck is how the trips the pipeline found compared with the day's
// ground truth, trip by trip, by the two comparisons `upc pipeline check`
// makes (services/pipeline/groundtruth): e-mission's exact one, and its
// approximate one (60 s, 100 m, ±2 resampled points).
type TripCheck struct {
	// Date is the day compared (YYYY-MM-DD), the ground truth's.
	Date string `json:"date"`
	Want int    `json:"want"`
	Got  int    `json:"got"`
	// Exact and Approx say whether each comparison passed; the failures
	// count their failed checks (a trip count that differs is one).
	Exact          bool `json:"exact"`
	ExactFailures  int  `json:"exact_failures"`
	Approx         bool `json:"approx"`
	ApproxFailures int  `json:"approx_failures"`
	// Failed names the first failed checks: the exact comparison's, or the
	// approximate one's when that failed too.
	Failed []string `json:"failed,omitempty"`
}

// Holds says whether the trips match as `upc pipeline check` decides: the
// exact comparison passed, or, when approx accepts it as --approx does, the
// approximate one.
func (c *TripCheck) Holds(approx bool) bool {
	return c != nil && (c.Exact || (approx && c.Approx))
}

// Verdict is a short account: "exact", "approx (exact: 3 failed checks)",
// "no match (exact: 5, approx: 2 failed checks)".
func (c *TripCheck) Verdict() string {
	switch {
	case c == nil:
		return "not compared"
	case c.Exact:
		return "exact"
	case c.Approx:
		return fmt.Sprintf("approx (exact: %d failed checks)", c.ExactFailures)
	}
	return fmt.Sprintf("no match (exact: %d, approx: %d failed checks)", c.ExactFailures, c.ApproxFailures)
}

// Step is one step of one user.
type Step struct {
	// Name is the step kind, numbered when a kind repeats ("launch#2").
	Name   string `json:"name"`
	Status string `json:"status"`
	// StartMS is the offset from the start of the user's run.
	StartMS    float64 `json:"start_ms"`
	DurationMS float64 `json:"duration_ms"`
	Error      string  `json:"error,omitempty"`
	// Note is a short human summary ("1482 entries").
	Note string `json:"note,omitempty"`
	// Values are what the step measured or found ("entries", "trips").
	Values map[string]float64 `json:"values,omitempty"`
	// Fault is what a fault step did to this user.
	Fault *FaultEffect `json:"fault,omitempty"`
}

// FaultEffect is what a fault step did to one user.
type FaultEffect struct {
	// Affected: the fault hit this user (their PM, or the machine it runs on).
	Affected bool `json:"affected"`
	// Out: the user could not go on (the step failed).
	Out bool `json:"out,omitempty"`
	// Reason says how the fault showed to this user.
	Reason string `json:"reason,omitempty"`
}

// Fault is one fault step of a run.
type Fault struct {
	// Step is the step's name ("fault#2").
	Step   string `json:"step"`
	Kind   string `json:"kind"`
	Target string `json:"target"`
	// Did says what was broken (deployment-wide faults), or how many PMs.
	Did      string     `json:"did"`
	Affected []Affected `json:"affected"`
	Checks   []Check    `json:"checks"`
}

// Affected is one user a fault hit.
type Affected struct {
	User   string `json:"user"`
	Out    bool   `json:"out"`
	Reason string `json:"reason"`
}

// Aggregate is one aggregate step: the aggregator's answer, the true one
// (experiment mode: the aggregator revealed it), their difference, what it
// cost each user and every user's outcome.
type Aggregate struct {
	// Step is "aggregate#N"; Query is count or metrics.
	Step      string `json:"step"`
	Query     string `json:"query"`
	QueryFile string `json:"query_file,omitempty"`
	// Seed is the aggregator's experiment seed (noise and users' keys).
	Seed uint64 `json:"seed"`
	// Run is the aggregator's own run id (its users' ids derive from it).
	Run     string  `json:"run,omitempty"`
	Command string  `json:"command,omitempty"`
	StartMS float64 `json:"start_ms"`
	WallMS  float64 `json:"wall_ms"`
	// Error is why the step gave no answer.
	Error string `json:"error,omitempty"`
	// Noisy, True and AbsError are by part: "count" for a count query,
	// modes for metrics.
	Noisy    map[string]float64 `json:"noisy,omitempty"`
	True     map[string]float64 `json:"true,omitempty"`
	AbsError map[string]float64 `json:"abs_error,omitempty"`
	// GroundTruth is the count's answer read from the users' ground-truth
	// trips instead of their PMs (count queries; GroundTruthNote says why
	// it is missing).
	GroundTruth     map[string]float64 `json:"ground_truth,omitempty"`
	GroundTruthNote string             `json:"ground_truth_note,omitempty"`
	// Epsilon is what the query cost each participant; EpsilonByPart its
	// parts, Sensitivity each part's Δ (the noise's scale is Δ/ε).
	Epsilon       float64            `json:"epsilon"`
	EpsilonByPart map[string]float64 `json:"epsilon_by_part,omitempty"`
	Sensitivity   map[string]float64 `json:"sensitivity,omitempty"`
	// InitialBudget is a new user's privacy budget.
	InitialBudget float64          `json:"initial_budget,omitempty"`
	Participants  int              `json:"participants"`
	Users         int              `json:"users"`
	NoBudget      int              `json:"no_budget"`
	Failed        int              `json:"failed"`
	Phases        []AggregatePhase `json:"phases,omitempty"`
	PerUser       []AggregateUser  `json:"per_user,omitempty"`
}

// AggregatePhase is one phase of the aggregator's users.
type AggregatePhase struct {
	Phase    string  `json:"phase"`
	N        int     `json:"n"`
	MedianMS float64 `json:"median_ms"`
	P95MS    float64 `json:"p95_ms"`
	MaxMS    float64 `json:"max_ms"`
}

// AggregateUser is one user's outcome in an aggregate step: answered,
// no_budget or failed (with the phase and why), and the ε charged.
type AggregateUser struct {
	User    string  `json:"user"`
	File    string  `json:"file"`
	ID      string  `json:"id"`
	Status  string  `json:"status"`
	Phase   string  `json:"phase,omitempty"`
	Error   string  `json:"error,omitempty"`
	Epsilon float64 `json:"epsilon"`
	Trips   int     `json:"trips,omitempty"`
	// EndMS is when the user finished, from the step's start.
	EndMS float64 `json:"end_ms"`
}

// Check is one expectation and whether it held.
type Check struct {
	Name   string `json:"name"`
	Held   bool   `json:"held"`
	Detail string `json:"detail"`
}

// Deployment is what the harness stood up.
type Deployment struct {
	Backend string      `json:"backend"`
	Network string      `json:"network,omitempty"`
	Gateway string      `json:"gateway,omitempty"`
	Router  string      `json:"router,omitempty"`
	Agents  []AgentInfo `json:"agents,omitempty"`
	// ConfigFile names the configuration the router and agents read, saved
	// beside the report.
	ConfigFile string `json:"config_file,omitempty"`
	// Access says whether the run had access control on, and how.
	Access string `json:"access,omitempty"`
	// TLS says whether the run's hops were encrypted, and how.
	TLS string `json:"tls,omitempty"`
}

// AgentInfo is one machine agent.
type AgentInfo struct {
	Name    string `json:"name"`
	Weight  int    `json:"weight"`
	Address string `json:"address,omitempty"`
	// Placed counts the users whose PM ran there.
	Placed int `json:"placed"`
}

// Leftovers is what still carried the run's labels after tear-down.
type Leftovers struct {
	Checked    bool     `json:"checked"`
	Containers []string `json:"containers"`
	Networks   []string `json:"networks"`
	Volumes    []string `json:"volumes"`
}

// Empty reports whether nothing was left.
func (l Leftovers) Empty() bool {
	return len(l.Containers)+len(l.Networks)+len(l.Volumes) == 0
}

// Environment is what reproduces the run.
type Environment struct {
	Command       string  `json:"command"`
	UPCVersion    string  `json:"upc_version"`
	GoVersion     string  `json:"go_version"`
	Platform      string  `json:"platform"`
	CPUs          int     `json:"cpus"`
	DockerVersion string  `json:"docker_version,omitempty"`
	DockerAPI     string  `json:"docker_api,omitempty"`
	Seed          int64   `json:"seed"`
	Parallel      int     `json:"parallel"`
	DataDir       string  `json:"data_dir"`
	Images        []Image `json:"images"`
	// Commit is the repository's HEAD where the scenario file lies, with
	// Dirty set when its working tree had changes.
	Commit string `json:"commit,omitempty"`
	Dirty  bool   `json:"dirty,omitempty"`
	// Machine is where the run ran.
	Machine Machine `json:"machine"`
	// Seeds are every seed the run used, by what it seeds.
	Seeds []Seed `json:"seeds,omitempty"`
	// ScenarioFile is the scenario file as given, copied beside the report
	// (scenario.yaml), and its SHA-256.
	ScenarioFile   string `json:"scenario_file,omitempty"`
	ScenarioSHA256 string `json:"scenario_sha256,omitempty"`
}

// Machine is the host a run ran on.
type Machine struct {
	OS       string `json:"os,omitempty"`
	Kernel   string `json:"kernel,omitempty"`
	CPUs     int    `json:"cpus"`
	MemoryMB int    `json:"memory_mb,omitempty"`
}

// Seed is one seed and what it makes reproducible.
type Seed struct {
	Name  string `json:"name"`
	Value uint64 `json:"value"`
	Seeds string `json:"seeds"`
}

// Image is one image the run used.
type Image struct {
	Name string `json:"name"`
	Ref  string `json:"ref"`
	ID   string `json:"id"`
}

// Phases lists step names in the order they first appear across users.
func (r *Report) Phases() []string {
	var out []string
	for _, u := range r.Users {
		for _, s := range u.Steps {
			if !slices.Contains(out, s.Name) {
				out = append(out, s.Name)
			}
		}
	}
	return out
}

// Step finds a user's step by name.
func (u *User) Step(name string) (Step, bool) {
	for _, s := range u.Steps {
		if s.Name == name {
			return s, true
		}
	}
	return Step{}, false
}

// Files Write creates in the report folder, besides the figures
// (FigureFiles).
const (
	JSONFile     = "report.json"
	MarkdownFile = "report.md"
)

// Write creates dir and writes the report and its figures into it. Each file
// is written to a temporary name and renamed, so a reader never sees half a
// report. A figure that cannot be drawn does not stop the others or the
// report: Write names it in its error.
func Write(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	type file struct {
		name string
		data []byte
	}
	files := []file{{JSONFile, append(js, '\n')}, {MarkdownFile, Markdown(r)}}
	var errs []error
	for _, f := range figures {
		if !f.applies(r) {
			continue
		}
		fig, err := f.draw(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("figure %s: %w", f.name, err))
			continue
		}
		svg, err := fig.SVG()
		if err != nil {
			errs = append(errs, fmt.Errorf("figure %s: %w", f.name, err))
			continue
		}
		pdf, err := fig.PDF()
		if err != nil {
			errs = append(errs, fmt.Errorf("figure %s: %w", f.name, err))
			continue
		}
		files = append(files, file{f.name + ".svg", svg}, file{f.name + ".pdf", pdf})
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p+".tmp", f.data, 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// Latest points results/latest at dir: a symlink, or a copy where links fail.
func Latest(results, dir string) error {
	link := filepath.Join(results, "latest")
	if fi, err := os.Lstat(link); err == nil {
		if fi.Mode()&os.ModeSymlink == 0 && fi.IsDir() {
			if err := os.RemoveAll(link); err != nil {
				return fmt.Errorf("replace %s: %w", link, err)
			}
		} else if err := os.Remove(link); err != nil {
			return fmt.Errorf("replace %s: %w", link, err)
		}
	}
	rel, err := filepath.Rel(results, dir)
	if err != nil {
		rel = dir
	}
	if err := os.Symlink(rel, link); err == nil {
		return nil
	}
	// No symlinks here (some file systems): copy the files instead.
	if err := os.MkdirAll(link, 0o755); err != nil {
		return fmt.Errorf("copy report to %s: %w", link, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("copy report: %w", err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("copy report: %w", err)
		}
		if err := os.WriteFile(filepath.Join(link, e.Name()), b, 0o644); err != nil {
			return fmt.Errorf("copy report: %w", err)
		}
	}
	return nil
}

func jsonIndent(out *bytes.Buffer, b []byte) error { return json.Indent(out, b, "", "  ") }
