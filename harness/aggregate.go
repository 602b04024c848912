package harness

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/e-mission/upc/aggregator"
	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/harness/standup"
	"github.com/e-mission/upc/harness/synth"
	"github.com/e-mission/upc/internal/realdata"
)

// Default queries of aggregate steps that name no query file. The count
// query asks who was in north Mountain View (where five of the six real days
// travel) at any time from 2014 to 2018, a window that holds every synthetic
// user too (they are moved by whole weeks); ε = ln(20)/10 ≈ 0.30 per user.
// The metrics query asks the trips per mode and year over the same years
// (e-mission filters each date component on its own: months 1-12, days
// 1-31): its sensitivity is 55 trips a day for every day of the range, so
// its noise is large next to a few hundred trips; ε = ln(20)·1825·55/1e6 ≈
// 0.30 for each of three modes, 0.90 in all (a new PM holds 1.0).
var defaultQueries = map[string]string{
	scenario.QueryCount: `{"offset": 10, "alpha": 0.05, "start_ts": 1388534400, "end_ts": 1546300800,
 "sel_region": {"geometry": {"type": "Polygon", "coordinates": [[[-122.12, 37.37], [-122.06, 37.37], [-122.06, 37.43], [-122.12, 37.43], [-122.12, 37.37]]]}}}`,
	scenario.QueryMetrics: `{"start_time": {"year": 2014, "month": 1, "day": 1, "timezone": "America/Los_Angeles"}, "end_time": {"year": 2018, "month": 12, "day": 31, "timezone": "America/Los_Angeles"},
 "freq": "YEARLY", "metric": "count",
 "offset": {"IN_VEHICLE": 1000000, "ON_FOOT": 1000000, "BICYCLING": 1000000},
 "alpha": {"IN_VEHICLE": 0.05, "ON_FOOT": 0.05, "BICYCLING": 0.05}}`,
}

// sharedPipelines is the pool of pipeline instances an aggregate step's
// users share (docs/BENCHMARKS.md: 4 took 64 users' pipeline phase from
// 43 s to 15 s on two cores).
const sharedPipelines = 4

// Paths inside the aggregator's container.
const (
	aggIn     = "/etc/upc-aggregate"
	aggData   = "/data/in"
	aggOut    = "/tmp/out"
	aggResult = aggOut + "/result.json"
)

// aggregateRun is what every aggregate step of a run shares.
type aggregateRun struct {
	sc          *scenario.Scenario
	scenarioDir string
	users       []scenario.User
	scope       standup.Scope
	network     string
	// hostNetwork runs the aggregator on the host's network instead
	// (Kubernetes mode: the router listens on the host's loopback, the
	// instances at the node's address).
	hostNetwork bool
	routerURL   string // as the aggregator's container reaches it
	// forget, when set, removes what a step's users keep after the step
	// (Kubernetes mode: their claims, which no run label removes), before
	// the step and after it, so a rerun with the seed starts as fresh as
	// the first run.
	forget func(ctx context.Context, userIDs []string)
	image  string
	// files are copied into the container: CA, token, image manifest.
	ca, token, imagesJSON []byte
	progress              io.Writer
	start                 time.Time
	logs                  func(name string, b []byte)
}

// Query reads an aggregate step's query: its file (relative to the
// scenario's folder) or the default of its kind. It is checked as the
// aggregator checks it, so a bad file fails before anything starts.
func Query(st scenario.Step, scenarioDir string) ([]byte, aggregator.Query, error) {
	b := []byte(defaultQueries[st.Query])
	if st.QueryFile != "" {
		var err error
		if b, err = os.ReadFile(filepath.Join(scenarioDir, st.QueryFile)); err != nil {
			return nil, aggregator.Query{}, fmt.Errorf("%s query_file: %w", st, err)
		}
	}
	q, err := aggregator.ParseQuery(st.Query, b)
	if err != nil {
		return nil, aggregator.Query{}, fmt.Errorf("%s query %s: %w", st, cmpOr(st.QueryFile, "(default)"), err)
	}
	return b, q, nil
}

// AggregateSeed is the experiment seed of the i-th aggregate step: the
// scenario's seed plus i, so each step has users (and volumes) of its own
// and a rerun with the seed draws the same noise.
func AggregateSeed(sc *scenario.Scenario, i int) uint64 { return uint64(sc.Seed) + uint64(i) }

// runAggregates runs the scenario's aggregate steps in order, each as one
// aggregator container over the whole population.
func (a *aggregateRun) runAggregates(ctx context.Context) []report.Aggregate {
	var out []report.Aggregate
	staged, cleanup, err := a.stage()
	defer cleanup()
	for i, st := range a.sc.AggregateSteps() {
		name := fmt.Sprintf("aggregate#%d", i+1)
		r := report.Aggregate{Step: name, Query: st.Query, QueryFile: st.QueryFile, Seed: AggregateSeed(a.sc, i),
			StartMS: ms(time.Since(a.start))}
		t0 := time.Now()
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			r.Error = err.Error()
		} else {
			if a.forget != nil {
				a.forget(ctx, a.userIDs(r.Seed))
			}
			if e := a.runOne(ctx, st, name, staged, &r); e != nil {
				r.Error = e.Error()
			}
			if a.forget != nil {
				a.forget(context.WithoutCancel(ctx), a.userIDs(r.Seed))
			}
		}
		r.WallMS = ms(time.Since(t0))
		status := "ok"
		if r.Error != "" {
			status = "failed: " + r.Error
		}
		fmt.Fprintf(a.progress, "[%6.1fs] %s %s: %s\n", time.Since(a.start).Seconds(), name, st.Query, status)
		out = append(out, r)
	}
	return out
}

// stage copies every user's day file into one folder the aggregator's
// container mounts read-only: file names keep the users' order and names.
func (a *aggregateRun) stage() (string, func(), error) {
	dir, err := os.MkdirTemp("", "upc-e2e-aggregate-")
	if err != nil {
		return "", func() {}, fmt.Errorf("stage day files: %w", err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	// The aggregator runs as an unprivileged user: it must read them.
	if err := os.Chmod(dir, 0o755); err != nil {
		return dir, cleanup, fmt.Errorf("stage day files: %w", err)
	}
	for i, u := range a.users {
		b, err := os.ReadFile(u.DayPath)
		if err != nil {
			return dir, cleanup, fmt.Errorf("stage day files: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, stagedName(i, u)), b, 0o644); err != nil {
			return dir, cleanup, fmt.Errorf("stage day files: %w", err)
		}
	}
	return dir, cleanup, nil
}

// stagedName is the file name of the i-th user's day in the staged folder:
// it keeps the users' order and names, and is what the aggregator derives
// the user's id from.
func stagedName(i int, u scenario.User) string {
	name := fmt.Sprintf("%04d-%s", i+1, strings.NewReplacer("#", "-", "/", "-").Replace(u.Name))
	if strings.HasSuffix(u.DayPath, ".gz") {
		name += ".gz"
	}
	return name
}

// userIDs are the ids the aggregator gives the population's users in a step
// seeded with seed (it is told no run id nor user ids).
func (a *aggregateRun) userIDs(seed uint64) []string {
	ids := make([]string, len(a.users))
	for i, u := range a.users {
		ids[i] = aggregator.UserIDFor(aggregator.SeedRunID(seed), stagedName(i, u))
	}
	return ids
}

func (a *aggregateRun) runOne(ctx context.Context, st scenario.Step, name, staged string, r *report.Aggregate) error {
	qb, q, err := Query(st, a.scenarioDir)
	if err != nil {
		return err
	}
	eps, err := q.Epsilon()
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	r.Sensitivity = eps.Sensitivity
	if q.Kind == aggregator.Count {
		r.Sensitivity = map[string]float64{"count": 1}
	}
	// A user's run spans four phases, each bounded as a step is; the
	// container gets every round of users, and some slack for its start.
	userTimeout := 4 * time.Duration(a.sc.Timeouts.Step)
	rounds := (len(a.users) + a.sc.Parallel - 1) / a.sc.Parallel
	bound := time.Duration(rounds)*userTimeout + 5*time.Minute
	cmd := []string{"-kind", st.Query, "-query", aggIn + "/query.json", "-data", aggData, "-out", aggOut,
		"-router", a.routerURL, "-token-file", aggIn + "/token", "-ca", aggIn + "/ca.crt", "-images", aggIn + "/images.json",
		"-parallel", fmt.Sprint(a.sc.Parallel), "-user-timeout", userTimeout.String(),
		"-experiment-seed", fmt.Sprint(r.Seed), "-reveal-true-total",
		// One pipeline pool and one query instance serve every user: a
		// third of the launches, which dominate a run on a small machine.
		"-shared-services", "-shared-pipelines", fmt.Sprint(cmp.Or(st.Pipelines, sharedPipelines))}
	r.Command = "upc-aggregator " + strings.Join(cmd, " ")
	c, err := testcontainers.GenericContainer(ctx, a.request(name, staged, cmd, qb, bound))
	if c != nil {
		defer func() {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if rc, err := c.Logs(tctx); err == nil {
				b, _ := io.ReadAll(io.LimitReader(rc, 8<<20))
				rc.Close()
				a.logs(strings.ReplaceAll(name, "#", "-"), b)
			}
			c.Terminate(tctx)
		}()
	}
	if err != nil {
		return fmt.Errorf("run the aggregator: %w", err)
	}
	state, err := c.State(ctx)
	if err != nil {
		return fmt.Errorf("aggregator state: %w", err)
	}
	if state.ExitCode != 0 {
		return fmt.Errorf("the aggregator exited with %d (its log is in logs/)", state.ExitCode)
	}
	rc, err := c.CopyFileFromContainer(ctx, aggResult)
	if err != nil {
		return fmt.Errorf("read the aggregator's result: %w", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	if err != nil {
		return fmt.Errorf("read the aggregator's result: %w", err)
	}
	var res aggregator.Result
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("decode the aggregator's result: %w", err)
	}
	fill(r, &res, a.users)
	if q.Kind == aggregator.Count {
		// The count's answer once more, from the users' ground truths
		// rather than from their PMs: what the data says, read apart from
		// the upload, pipeline and count code.
		if n, err := groundTruthCount(a.users, q); err != nil {
			r.GroundTruthNote = err.Error()
		} else {
			r.GroundTruth = map[string]float64{"count": float64(n)}
		}
	}
	return nil
}

// request is the aggregator's container for step name: cmd over the staged
// day files, the query qb and the run's CA, token and image manifest, on
// the deployment's network or the host's; bound limits its run.
func (a *aggregateRun) request(name, staged string, cmd []string, qb []byte, bound time.Duration) testcontainers.GenericContainerRequest {
	file := func(path string, b []byte) testcontainers.ContainerFile {
		return testcontainers.ContainerFile{Reader: strings.NewReader(string(b)), ContainerFilePath: path, FileMode: 0o644}
	}
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:  a.image,
			Name:   "upc-" + a.scope.Run + "-" + strings.ReplaceAll(name, "#", "-"),
			Cmd:    cmd,
			Labels: map[string]string{standup.LabelRun: a.scope.Run, standup.LabelDeployment: a.scope.Deployment, standup.LabelRole: "aggregator"},
			Files: []testcontainers.ContainerFile{file(aggIn+"/query.json", qb), file(aggIn+"/token", a.token),
				file(aggIn+"/ca.crt", a.ca), file(aggIn+"/images.json", a.imagesJSON)},
			HostConfigModifier: func(hc *container.HostConfig) {
				hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: staged, Target: aggData, ReadOnly: true})
				if a.hostNetwork {
					hc.NetworkMode = "host"
				}
			},
			WaitingFor: wait.ForExit().WithExitTimeout(bound).WithPollInterval(500 * time.Millisecond),
		},
		Started: true,
	}
	if !a.hostNetwork {
		// The researcher's machine reaches the router by its name on the
		// deployment's network and the instances at their published
		// addresses, as any client does.
		req.Networks = []string{a.network}
	}
	return req
}

// groundTruthCount is how many users' ground-truth trips pass through the
// count query's region in its window (synth.CountAnswers, per user: they
// may lie in several folders).
func groundTruthCount(users []scenario.User, q aggregator.Query) (int64, error) {
	var n int64
	for _, u := range users {
		name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(u.GroundTruthPath), ".gz"), realdata.GroundTruthSuffix)
		got, err := synth.CountAnswers(filepath.Dir(u.GroundTruthPath), &synth.Manifest{Users: []synth.User{{Name: name}}}, q.Count)
		if err != nil {
			return 0, fmt.Errorf("ground truth of %s: %w", u.Name, err)
		}
		n += got[name]
	}
	return n, nil
}

// fill copies the aggregator's result into the report, with the error of
// the noisy answer against the true one (both known in experiment mode).
func fill(r *report.Aggregate, res *aggregator.Result, users []scenario.User) {
	r.Noisy, r.True = totals(res.NoisyTotal), totals(res.ActualTotal)
	if r.True != nil {
		r.AbsError = map[string]float64{}
		for k, t := range r.True {
			r.AbsError[k] = math.Abs(r.Noisy[k] - t)
		}
	}
	r.Epsilon, r.EpsilonByPart = res.Epsilon, res.EpsilonByMode
	if res.Query == aggregator.Count {
		r.EpsilonByPart = map[string]float64{"count": res.Epsilon}
	}
	r.Participants, r.Users, r.NoBudget, r.Failed = res.NumberParticipants, res.Users, res.NoBudget, res.Failed
	r.Run = res.Run
	r.InitialBudget = initialBudget()
	for i, u := range res.PerUser {
		au := report.AggregateUser{File: u.File, ID: u.ID, Status: u.Status, Phase: u.Phase, Error: u.Error,
			Epsilon: u.PrivacyCost, Trips: u.Trips, EndMS: u.EndMS}
		// Files are staged in the users' order (stage).
		if i < len(users) {
			au.User = users[i].Name
		}
		r.PerUser = append(r.PerUser, au)
	}
	for _, p := range res.Phases {
		r.Phases = append(r.Phases, report.AggregatePhase{Phase: p.Phase, N: p.N, MedianMS: p.MedianMS, P95MS: p.P95MS, MaxMS: p.MaxMS})
	}
}

// totals turns a count (a number) or metrics (a number by mode) total into
// values by part: "count" for a count.
func totals(v any) map[string]float64 {
	switch t := v.(type) {
	case float64:
		return map[string]float64{"count": t}
	case map[string]any:
		out := map[string]float64{}
		for k, x := range t {
			if f, ok := x.(float64); ok {
				out[k] = f
			}
		}
		return out
	}
	return nil
}

// initialBudget is what a new user's PM starts with (the catalog's
// UPC_PM_BUDGET), for the budget figure; 0 when the catalog says nothing.
func initialBudget() float64 {
	cat, err := conf.DefaultCatalog()
	if err != nil {
		return 0
	}
	for _, e := range cat.Services {
		if e.Name == "pm" {
			var f float64
			if _, err := fmt.Sscan(e.Env["UPC_PM_BUDGET"], &f); err == nil {
				return f
			}
		}
	}
	return 0
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// aggregateChecks are what a run with aggregate steps must show: each
// step published an answer that every user of the population took part in.
func aggregateChecks(aggs []report.Aggregate) []report.Check {
	if len(aggs) == 0 {
		return nil
	}
	c := report.Check{Name: "every_user_answers_every_aggregate", Held: true}
	var bad []string
	for _, a := range aggs {
		switch {
		case a.Error != "":
			bad = append(bad, fmt.Sprintf("%s (%s): %s", a.Step, a.Query, a.Error))
		case a.Participants != a.Users || a.Users == 0:
			why := ""
			for _, u := range a.PerUser {
				if u.Status != aggregator.Answered {
					why = fmt.Sprintf("; first: %s %s at %s: %s", u.User, u.Status, u.Phase, u.Error)
					break
				}
			}
			bad = append(bad, fmt.Sprintf("%s (%s): %d of %d users answered%s", a.Step, a.Query, a.Participants, a.Users, why))
		}
	}
	if len(bad) > 0 {
		c.Held, c.Detail = false, strings.Join(bad, "; ")
	} else {
		c.Detail = fmt.Sprintf("%d aggregate steps, each answered by all %d users", len(aggs), aggs[0].Users)
	}
	return []report.Check{c}
}
