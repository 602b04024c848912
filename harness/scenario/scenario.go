// Package scenario reads and checks the scenario files the e2e harness runs:
// which backend to stand up, which users (real e-mission days or a seeded
// generator), which steps each user goes through, and what must hold after.
// Decoding is strict and validation reports every problem at once.
package scenario

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Scenario is one scenario file.
type Scenario struct {
	// Name labels the run in the report.
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Backend is where the users' clouds run: "docker" or "kubernetes".
	Backend string `json:"backend"`
	// Seed makes user ids, keys and generated data reproducible.
	Seed int64 `json:"seed"`
	// Parallel bounds how many users run at once (the command line may override it).
	Parallel int `json:"parallel,omitempty"`
	// Deployment describes what the harness stands up.
	Deployment Deployment `json:"deployment"`
	// Population is the users and their data.
	Population Population `json:"population"`
	// Steps run in order for every user.
	Steps []Step `json:"steps"`
	// Timeouts bound each step and the stand-up.
	Timeouts Timeouts `json:"timeouts,omitempty"`
	// Expectations must hold after the run, or the run fails.
	Expectations Expectations `json:"expectations"`
}

// Deployment is the machines the harness starts: one agent each, with its
// placement weight.
type Deployment struct {
	Agents []Agent `json:"agents"`
	// Nodes is, in Kubernetes mode, which of the local cluster's nodes the
	// router places pods on: "real" (the default: the real node, where
	// pods run) or "fake" (kwok's simulated nodes: pods become Ready but
	// run nothing, so only launch, pause and delete steps, which need no
	// answer from a PM; resume checks the PM answers).
	Nodes string `json:"nodes,omitempty"`
}

// Node tiers of the local cluster (Deployment.Nodes).
const (
	NodesReal = "real"
	NodesFake = "fake"
)

// stepsOnFakeNodes are the steps a run on kwok's simulated nodes can take:
// those only the router and the API server carry out.
var stepsOnFakeNodes = []string{Launch, Pause, Delete}

// Agent is one machine agent.
type Agent struct {
	Name   string `json:"name"`
	Weight int    `json:"weight"`
}

// Population is the users of a run: real days, synthetic users made from
// them, or both (the synthetic users first).
type Population struct {
	// RealDays gives each listed e-mission day file its own users.
	RealDays *RealDays `json:"real_days,omitempty"`
	// Synthetic makes users from real days moved in time and space
	// (harness/synth), each with its own ground truth.
	Synthetic *Synthetic `json:"synthetic,omitempty"`
}

// Synthetic is a seeded population of made-up users.
type Synthetic struct {
	// Users is how many (1-100000).
	Users int `json:"users"`
	// Seed makes the users reproducible.
	Seed uint64 `json:"seed"`
	// Days are the real days used, round robin; empty means all of Dir.
	Days []string `json:"days,omitempty"`
	// Dir holds the real days, as RealDays.Dir.
	Dir string `json:"dir,omitempty"`
	// MaxOffset bounds the spatial shift in degrees (default 0.05).
	MaxOffset float64 `json:"max_offset,omitempty"`
}

// SourceDir is the population's configured folder of real days ("" if unset).
func (p Population) SourceDir() string {
	switch {
	case p.RealDays != nil:
		return p.RealDays.Dir
	case p.Synthetic != nil:
		return p.Synthetic.Dir
	}
	return ""
}

// RealDays names day files from the real_examples folder.
type RealDays struct {
	// Dir holds the day files; empty means "find real_examples relative to the
	// repository" (see Locate). A relative Dir is relative to the scenario file.
	Dir string `json:"dir,omitempty"`
	// Days are file names in Dir; each must have a NAME.ground_truth beside it.
	Days []string `json:"days"`
	// UsersPerDay is how many users upload each day (default 1).
	UsersPerDay int `json:"users_per_day,omitempty"`
}

// Timeouts bound the run. Durations are Go durations ("90s", "2m").
type Timeouts struct {
	Standup Duration `json:"standup,omitempty"`
	Step    Duration `json:"step,omitempty"`
}

// Expectations are checked after every user has finished.
type Expectations struct {
	// EveryStepSucceeds: no step of any user failed or was skipped.
	EveryStepSucceeds bool `json:"every_step_succeeds,omitempty"`
	// Lossless: every compare step found the download equal to the upload.
	Lossless bool `json:"lossless,omitempty"`
	// TripsMatchGroundTruth: the trips the pipeline wrote to each user's PM
	// for the ground truth's day match the ground truth, trip by trip, as
	// `upc pipeline check` compares them.
	TripsMatchGroundTruth bool `json:"trips_match_ground_truth,omitempty"`
	// TripsComparison is the comparison that must pass: TripsExact
	// (e-mission's exact one, the default) or TripsApprox (its approximate
	// one, as `upc pipeline check --approx`), for days moved in time and
	// space, whose float results cannot match to the last bit.
	TripsComparison string `json:"trips_comparison,omitempty"`
	// MaxLaunch bounds every launch step's duration (zero: unchecked).
	MaxLaunch Duration `json:"max_launch,omitempty"`
	// NothingLeftRunning: after tear-down no labelled container, network or volume remains.
	NothingLeftRunning bool `json:"nothing_left_running,omitempty"`
}

// Trip comparisons (Expectations.TripsComparison).
const (
	TripsExact  = "exact"
	TripsApprox = "approx"
)

// Step kinds, in the order a user's cloud can take them.
const (
	Launch   = "launch"   // launch the user's PM through the router
	Unseal   = "unseal"   // give the PM the user's key
	Upload   = "upload"   // upload the user's day file to the PM
	Download = "download" // read the user's data back from the PM
	Compare  = "compare"  // check the download holds the day file (lossless)
	Pipeline = "pipeline" // run the intake pipeline on the user's data
	Metrics  = "metrics"  // ask the metrics service for the user's day
	Count    = "count"    // ask the count service whether the user was somewhere
	Pause    = "pause"    // pause the user's PM
	Resume   = "resume"   // resume it
	Delete   = "delete"   // delete the user's instances
	Fault    = "fault"    // break something on purpose (faults.go)
	// Aggregate runs the researcher's aggregator (upc aggregate) once over
	// the whole population, after every user's own steps.
	Aggregate = "aggregate"
)

// Aggregate queries (Step.Query).
const (
	QueryCount   = "count"
	QueryMetrics = "metrics"
)

// Kinds lists every step kind.
var Kinds = []string{Launch, Unseal, Upload, Download, Compare, Pipeline, Metrics, Count, Pause, Resume, Delete, Fault, Aggregate}

// needs says which step must come earlier for a step to make sense.
var needs = map[string]string{
	Unseal:   Launch,
	Upload:   Unseal,
	Download: Upload,
	Compare:  Download,
	Pipeline: Upload,
	Metrics:  Pipeline,
	Count:    Pipeline,
	Pause:    Launch,
	Resume:   Pause,
	Delete:   Launch,
}

// Step is one step of every user's run. In YAML a step is either its kind
// ("- upload") or an object ("- {do: metrics, metric: count, freq: DAILY}").
type Step struct {
	Do string `json:"do"`
	// Metric and Freq parameterise a metrics step.
	Metric string `json:"metric,omitempty"`
	Freq   string `json:"freq,omitempty"`
	// FaultSpec parameterises a fault step (faults.go).
	FaultSpec
	// Query (count or metrics) and QueryFile (the original's query file
	// format, relative to the scenario file; empty: the harness's default
	// query of that kind) parameterise an aggregate step.
	Query     string `json:"query,omitempty"`
	QueryFile string `json:"query_file,omitempty"`
	// Pipelines is an aggregate step's pool of shared pipeline instances
	// (the aggregator's --shared-pipelines, 1-MaxPipelines; 0: the
	// harness's default, 4).
	Pipelines int `json:"pipelines,omitempty"`
}

// MaxPipelines bounds an aggregate step's shared pipeline instances.
const MaxPipelines = 64

// UnmarshalJSON accepts a bare kind or a strict object.
func (s *Step) UnmarshalJSON(b []byte) error {
	var kind string
	if err := json.Unmarshal(b, &kind); err == nil {
		*s = Step{Do: kind}
		return nil
	}
	type plain Step
	var p plain
	if err := strictJSON(b, &p); err != nil {
		return fmt.Errorf("step: %w", err)
	}
	*s = Step(p)
	return nil
}

// MarshalJSON writes a step without parameters as its bare kind.
func (s Step) MarshalJSON() ([]byte, error) {
	if s.Metric == "" && s.Freq == "" && s.Query == "" && s.QueryFile == "" && s.Pipelines == 0 && s.FaultSpec.IsZero() {
		return json.Marshal(s.Do)
	}
	type plain Step
	return json.Marshal(plain(s))
}

func (s Step) String() string {
	if s.Do == Fault {
		return fmt.Sprintf("fault(%s,%s)", s.Kind, s.Target)
	}
	if s.Do == Aggregate {
		return fmt.Sprintf("%s(%s)", s.Do, s.Query)
	}
	if s.Metric == "" && s.Freq == "" {
		return s.Do
	}
	return fmt.Sprintf("%s(%s,%s)", s.Do, s.Metric, s.Freq)
}

// Duration is a time.Duration written as a Go duration string.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"90s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Defaults used when a scenario leaves them out.
const (
	DefaultParallel = 3
	DefaultStandup  = 2 * time.Minute
	DefaultStep     = 2 * time.Minute
)

// SetDefaults fills what the file left out.
func (s *Scenario) SetDefaults() {
	if s.Parallel == 0 {
		s.Parallel = DefaultParallel
	}
	if s.Timeouts.Standup == 0 {
		s.Timeouts.Standup = Duration(DefaultStandup)
	}
	if s.Timeouts.Step == 0 {
		s.Timeouts.Step = Duration(DefaultStep)
	}
	if r := s.Population.RealDays; r != nil && r.UsersPerDay == 0 {
		r.UsersPerDay = 1
	}
	if s.Expectations.TripsMatchGroundTruth && s.Expectations.TripsComparison == "" {
		s.Expectations.TripsComparison = TripsExact
	}
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,40}$`)
	// Agent names become part of Docker names and labels, with a run prefix.
	agentRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,19}$`)
	dayRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	freqs   = []string{"DAILY", "WEEKLY", "MONTHLY", "YEARLY"}
	metric  = []string{"count", "distance", "duration"}
)

// Validate reports every problem at once, each naming its field.
func (s *Scenario) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !nameRE.MatchString(s.Name) {
		bad("name: %q must be lowercase letters, digits and dashes (1-41)", s.Name)
	}
	switch s.Backend {
	case "docker", "kubernetes":
	case "":
		bad("backend: required (docker or kubernetes)")
	default:
		bad("backend: %q is not docker or kubernetes", s.Backend)
	}
	if s.Parallel < 0 || s.Parallel > 256 {
		bad("parallel: %d is not within 1-256", s.Parallel)
	}
	if len(s.Deployment.Agents) == 0 {
		bad("deployment.agents: at least one agent is needed")
	}
	switch s.Deployment.Nodes {
	case "", NodesReal:
	case NodesFake:
		if s.Backend != "kubernetes" {
			bad("deployment.nodes: fake (kwok's simulated nodes) needs backend kubernetes, not %q", s.Backend)
		}
		for i, st := range s.Steps {
			if !slices.Contains(stepsOnFakeNodes, st.Do) {
				bad("steps[%d]: %s cannot run on fake nodes, where pods run nothing (only %s)", i, st.Do, strings.Join(stepsOnFakeNodes, ", "))
			}
		}
	default:
		bad("deployment.nodes: %q is not real or fake", s.Deployment.Nodes)
	}
	agents := map[string]bool{}
	for i, a := range s.Deployment.Agents {
		if !agentRE.MatchString(a.Name) {
			bad("deployment.agents[%d].name: %q must be 1-20 lowercase letters, digits and dashes, starting with a letter", i, a.Name)
		}
		if agents[a.Name] {
			bad("deployment.agents[%d].name: %q is used twice", i, a.Name)
		}
		agents[a.Name] = true
		if a.Weight < 1 || a.Weight > 1000 {
			bad("deployment.agents[%d].weight: %d is not within 1-1000", i, a.Weight)
		}
	}
	if syn := s.Population.Synthetic; syn != nil {
		if syn.Users < 1 || syn.Users > 100000 {
			bad("population.synthetic.users: %d is not within 1-100000", syn.Users)
		}
		if syn.MaxOffset < 0 || syn.MaxOffset > 1 {
			bad("population.synthetic.max_offset: %v is not within (0, 1] degrees", syn.MaxOffset)
		}
		for i, d := range syn.Days {
			if !dayRE.MatchString(d) || strings.HasSuffix(d, ".ground_truth") {
				bad("population.synthetic.days[%d]: %q is not a day file name", i, d)
			}
		}
	}
	if r, syn := s.Population.RealDays, s.Population.Synthetic; r != nil && syn != nil && r.Dir != syn.Dir {
		bad("population: real_days.dir %q and synthetic.dir %q differ; the synthetic users are made from the real days", r.Dir, syn.Dir)
	}
	if r := s.Population.RealDays; r == nil {
		if s.Population.Synthetic == nil {
			bad("population: real_days or synthetic is required")
		}
	} else {
		if len(r.Days) == 0 {
			bad("population.real_days.days: at least one day is needed")
		}
		seen := map[string]bool{}
		for i, d := range r.Days {
			if !dayRE.MatchString(d) || strings.HasSuffix(d, ".ground_truth") {
				bad("population.real_days.days[%d]: %q is not a day file name", i, d)
			}
			if seen[d] {
				bad("population.real_days.days[%d]: %q is listed twice", i, d)
			}
			seen[d] = true
		}
		if r.UsersPerDay < 0 || r.UsersPerDay > 1000 {
			bad("population.real_days.users_per_day: %d is not within 1-1000", r.UsersPerDay)
		}
	}
	if len(s.Steps) == 0 {
		bad("steps: at least one step is needed")
	}
	done := map[string]bool{}
	for i, st := range s.Steps {
		at := fmt.Sprintf("steps[%d]", i)
		if !slices.Contains(Kinds, st.Do) {
			bad("%s: unknown step %q (want one of %s)", at, st.Do, strings.Join(Kinds, ", "))
			continue
		}
		if need, ok := needs[st.Do]; ok && !done[need] {
			bad("%s: %s needs an earlier %s step", at, st.Do, need)
		}
		if st.Do == Metrics {
			if !slices.Contains(metric, st.Metric) {
				bad("%s.metric: %q is not one of %s", at, st.Metric, strings.Join(metric, ", "))
			}
			if !slices.Contains(freqs, st.Freq) {
				bad("%s.freq: %q is not one of %s", at, st.Freq, strings.Join(freqs, ", "))
			}
		} else if st.Metric != "" || st.Freq != "" {
			bad("%s: metric and freq belong to metrics steps only", at)
		}
		s.validateFault(at, st, done, bad)
		if st.Do == Aggregate {
			switch st.Query {
			case QueryCount, QueryMetrics:
			case "":
				bad("%s.query: required (count or metrics)", at)
			default:
				bad("%s.query: %q is not count or metrics", at, st.Query)
			}
			if st.QueryFile != "" && (filepath.IsAbs(st.QueryFile) || strings.Contains(st.QueryFile, "..")) {
				bad("%s.query_file: %q must be a path inside the scenario's folder", at, st.QueryFile)
			}
			if st.Pipelines < 0 || st.Pipelines > MaxPipelines {
				bad("%s.pipelines: %d is not a pool size (1-%d; leave it out for the default)", at, st.Pipelines, MaxPipelines)
			}
		} else {
			if st.Query != "" || st.QueryFile != "" || st.Pipelines != 0 {
				bad("%s: query, query_file and pipelines belong to aggregate steps only", at)
			}
			// The aggregator runs once every user is done with their own
			// steps: a user step listed after it would read as if it ran later.
			if done[Aggregate] {
				bad("%s: %s comes after an aggregate step; aggregate steps run over the whole population after every user's steps, so list them last", at, st.Do)
			}
		}
		if done[Delete] && st.Do != Launch && st.Do != Aggregate {
			bad("%s: %s comes after delete; launch again first", at, st.Do)
		}
		if st.Do == Launch {
			delete(done, Delete)
		}
		done[st.Do] = true
	}
	if s.Timeouts.Standup < 0 {
		bad("timeouts.standup: %s is negative", time.Duration(s.Timeouts.Standup))
	}
	if s.Timeouts.Step < 0 {
		bad("timeouts.step: %s is negative", time.Duration(s.Timeouts.Step))
	}
	e := s.Expectations
	if e.MaxLaunch < 0 {
		bad("expectations.max_launch: %s is negative", time.Duration(e.MaxLaunch))
	}
	if e.Lossless && !done[Compare] {
		bad("expectations.lossless: the steps have no compare")
	}
	if e.TripsMatchGroundTruth && !done[Pipeline] {
		bad("expectations.trips_match_ground_truth: the steps have no pipeline")
	}
	switch c := e.TripsComparison; {
	case c != "" && c != TripsExact && c != TripsApprox:
		bad("expectations.trips_comparison: %q is not %s or %s", c, TripsExact, TripsApprox)
	case c != "" && !e.TripsMatchGroundTruth:
		bad("expectations.trips_comparison: set without trips_match_ground_truth")
	}
	return errors.Join(errs...)
}

// UserSteps are the steps each user takes (all but aggregate steps).
func (s *Scenario) UserSteps() []Step {
	return slices.DeleteFunc(slices.Clone(s.Steps), func(st Step) bool { return st.Do == Aggregate })
}

// AggregateSteps are the population-wide steps, in order.
func (s *Scenario) AggregateSteps() []Step {
	return slices.DeleteFunc(slices.Clone(s.Steps), func(st Step) bool { return st.Do != Aggregate })
}

// Has reports whether the scenario's steps include kind.
func (s *Scenario) Has(kind string) bool {
	return slices.ContainsFunc(s.Steps, func(st Step) bool { return st.Do == kind })
}

// Parse decodes a scenario strictly, sets defaults and validates it.
func Parse(b []byte) (*Scenario, error) {
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	var s Scenario
	if err := strictJSON(j, &s); err != nil {
		return nil, err
	}
	s.SetDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Load reads and checks a scenario file.
func Load(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	return s, nil
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("field %q: want %s, got %s", te.Field, te.Type, te.Value)
		}
		return err
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the document")
	}
	return nil
}
