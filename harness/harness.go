// Package harness runs UPC end to end: it reads a scenario, stands the system
// up (router and machine agents as containers on the local Docker engine,
// with testcontainers-go), carries every user through the scenario's steps,
// tears everything down, checks the scenario's expectations and writes a
// report (results/<run>/report.json, report.md, figures as SVG and PDF;
// results/latest).
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/client"

	userclient "github.com/e-mission/upc/client"
	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/harness/flow"
	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/harness/runner"
	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/harness/standup"
	"github.com/e-mission/upc/internal/atomicfile"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/internal/tcsetup"
	"github.com/e-mission/upc/internal/version"
	routerapi "github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/routerclient"
)

// Options say what to run and where to write.
type Options struct {
	// ScenarioPath is the scenario file.
	ScenarioPath string
	// Mode overrides the scenario's backend when set ("docker", "kubernetes").
	Mode string
	// ImagesPath is the manifest `make images` wrote (build/images.json).
	ImagesPath string
	// ResultsDir receives results/<run>/ and results/latest.
	ResultsDir string
	// Parallel overrides the scenario's bound on concurrent users when > 0.
	Parallel int
	// Seed, when set, overrides the scenario's seed (and so its aggregate
	// steps' seeds): repeated runs over other seeds measure the noise.
	Seed *int64
	// Command is the exact command line, recorded in the report.
	Command string
	// Progress receives a line per user and step; Logger the harness's events.
	Progress io.Writer
	Logger   *slog.Logger
}

// Result is a finished run: its report and the folder it was written to.
type Result struct {
	Report *report.Report
	Dir    string
}

// Failed reports whether the run must exit non-zero.
func (r *Result) Failed() bool { return r.Report == nil || !r.Report.Passed }

// Run runs the scenario end to end. It returns an error only when there is no
// report to write (bad scenario, no images); a run that stood up and ran
// always writes its report, whatever failed, and Passed says how it went.
// Everything the run started is removed before Run returns, also when ctx is
// cancelled (Ctrl-C) part-way.
func Run(ctx context.Context, o Options) (*Result, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	started := time.Now()
	// Before any container: the aggregator's runs through testcontainers-go
	// in either mode, and must not start its reaper (its image cannot be
	// pulled here).
	if err := tcsetup.Configure(); err != nil {
		return nil, err
	}
	sc, err := scenario.Load(o.ScenarioPath)
	if err != nil {
		return nil, err
	}
	if o.Mode != "" {
		sc.Backend = o.Mode
	}
	if o.Parallel > 0 {
		sc.Parallel = o.Parallel
	}
	if o.Seed != nil {
		sc.Seed = *o.Seed
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("scenario %s: %w", o.ScenarioPath, err)
	}
	if sc.Backend != "docker" && sc.Backend != "kubernetes" {
		return nil, fmt.Errorf("backend %q: this harness stands up docker or kubernetes", sc.Backend)
	}
	if sc.Backend == "kubernetes" {
		if err := refuseKubernetesFaults(sc); err != nil {
			return nil, fmt.Errorf("scenario %s: %w", o.ScenarioPath, err)
		}
	}
	// A bad query file fails the run before anything starts.
	for _, st := range sc.AggregateSteps() {
		if _, _, err := Query(st, filepath.Dir(o.ScenarioPath)); err != nil {
			return nil, fmt.Errorf("scenario %s: %w", o.ScenarioPath, err)
		}
	}
	scenarioFile, err := os.ReadFile(o.ScenarioPath)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	wd, _ := os.Getwd()
	dataDir, err := scenario.Locate(sc.Population.SourceDir(), filepath.Dir(o.ScenarioPath), wd)
	if err != nil {
		return nil, err
	}
	run := RunID(started)
	var users []scenario.User
	if sc.Population.Synthetic != nil && !sc.NeedsDays() {
		// No step reads a day: the users alone, no files (a thousand
		// users' days would cost a minute of CPU).
		if users, err = sc.PlanSynthetic(dataDir, run); err != nil {
			return nil, fmt.Errorf("population: %w", err)
		}
	} else if sc.Population.Synthetic != nil {
		// Made-up users are written to a temporary folder: the seed, not
		// the files, is what the report keeps to reproduce them.
		tmp, err := os.MkdirTemp("", "upc-e2e-synth-")
		if err != nil {
			return nil, fmt.Errorf("population: %w", err)
		}
		defer os.RemoveAll(tmp)
		users, err = sc.Synthesize(ctx, dataDir, tmp, run)
		if err != nil {
			return nil, fmt.Errorf("population: %w", err)
		}
	}
	if sc.Population.RealDays != nil {
		real, err := sc.Users(dataDir, run)
		if err != nil {
			return nil, fmt.Errorf("population: %w", err)
		}
		users = append(users, real...)
	}
	// Every user meets at a deployment-wide fault, so all run at once
	// (as the runner does): say so in the report.
	if slices.ContainsFunc(sc.Steps, scenario.Step.Global) {
		sc.Parallel = len(users)
	}
	manifest, err := images.LoadManifest(o.ImagesPath)
	if err != nil {
		return nil, fmt.Errorf("%w (run `make images` first)", err)
	}
	var missing []string
	for _, n := range NeededImages(sc) {
		if _, ok := manifest.Images[n]; !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("image manifest %s lacks %s (run `make images`)", o.ImagesPath, strings.Join(missing, ", "))
	}
	imagesJSON, err := os.ReadFile(o.ImagesPath)
	if err != nil {
		return nil, fmt.Errorf("read image manifest: %w", err)
	}
	cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("connect to docker: %w", err)
	}
	defer cli.Close()
	standup.QuietTestcontainers(logger)

	scope := standup.Scope{Run: run, Deployment: "e2e-" + run}
	// The router asks clients, and each agent the router, for a bearer
	// token: fresh ones per run.
	token, agentToken := newToken(), newToken()
	scJSON, _ := json.Marshal(sc)
	rep := &report.Report{
		Scenario: sc.Name, Description: sc.Description, Run: run, Started: started.UTC(),
		ScenarioConfig: scJSON,
		Deployment:     report.Deployment{Backend: sc.Backend},
		Environment:    environment(ctx, cli, o, sc, dataDir, manifest),
	}
	dir := filepath.Join(o.ResultsDir, run)
	provenance(ctx, &rep.Environment, sc, o.ScenarioPath, scenarioFile)
	// The scenario file as given, beside the report, written first: a run
	// that fails part-way still says what it ran.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("results folder: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, ScenarioCopy), scenarioFile, 0o644); err != nil {
		return nil, fmt.Errorf("copy scenario: %w", err)
	}

	if sc.Backend == "kubernetes" {
		return runKubernetes(ctx, kubeRun{o: o, sc: sc, cli: cli, scope: scope, manifest: manifest, imagesJSON: imagesJSON,
			token: token, users: users, rep: rep, dir: dir, started: started, progress: progress, logger: logger})
	}

	// TLS on every hop, with a CA of the run's own.
	agentHosts := []string{}
	for _, a := range sc.Deployment.Agents {
		agentHosts = append(agentHosts, a.Name)
	}
	pki, err := newRunPKI([]string{"router", "127.0.0.1", "localhost"}, append(agentHosts, "127.0.0.1", "localhost"))
	if err != nil {
		return nil, fmt.Errorf("run CA: %w", err)
	}

	// Stand up. The tear-down below runs whatever happens from here on.
	var deployCfg []byte // the configuration the router and agents read, kept with the report
	var faults *dockerFaults
	fmt.Fprintf(progress, "run %s: %d users, parallel %d; standing up %d agents and the router\n", run, len(users), sc.Parallel, len(sc.Deployment.Agents))
	t0 := time.Now()
	upCtx, cancelUp := context.WithTimeout(ctx, time.Duration(sc.Timeouts.Standup))
	dep, upErr := standup.Up(upCtx, cli, standup.Options{
		Scope:       scope,
		RouterImage: manifest.Images["router"].ID,
		AgentImage:  manifest.Images["agent"].ID,
		Agents:      sc.Deployment.Agents,
		Timeout:     time.Duration(sc.Timeouts.Standup),
		Logger:      logger,
		TLS:         pki.probe,
		FilesFor: func(d *standup.Deployment) (map[string][]byte, error) {
			cfg, err := deploymentConfig(d, pki)
			if err != nil {
				return nil, err
			}
			deployCfg = cfg
			rep.Deployment.ConfigFile = "deployment.json"
			files := map[string][]byte{standup.ConfigPath: cfg, standup.ImagesPath: imagesJSON, standup.TokenPath: []byte(token + "\n"),
				standup.AgentTokenPath: []byte(agentToken + "\n")}
			maps.Copy(files, pki.files)
			return files, nil
		},
	})
	cancelUp()
	rep.StandupMS = ms(time.Since(t0))
	if upErr != nil {
		rep.Error = "stand-up: " + upErr.Error()
		fmt.Fprintf(progress, "stand-up failed: %v\n", upErr)
	} else {
		fmt.Fprintf(progress, "[%6.1fs] stood up: router %s, network %s (gateway %s)\n", time.Since(started).Seconds(), dep.RouterURL, dep.Network, dep.Gateway)
		rep.Deployment.Network, rep.Deployment.Gateway, rep.Deployment.Router = dep.Network, dep.Gateway, dep.RouterURL
		for _, a := range dep.Agents {
			rep.Deployment.Agents = append(rep.Deployment.Agents, report.AgentInfo{Name: a.Name, Weight: a.Weight, Address: a.Address})
		}
		// Every router client follows the router when a fault step
		// restarts it on another port.
		ra, err := newRouterAddr(dep.RouterURL)
		var rc *routerclient.Client
		if err == nil {
			rc, err = routerclient.New(dep.RouterURL, routerclient.WithToken(token),
				routerclient.WithHTTPClient(ra.follow(pki.routerHTTP(time.Duration(sc.Timeouts.Step)))))
		}
		if err != nil {
			rep.Error = "router client: " + err.Error()
		} else {
			// Each simulated user signs in as a router identity of their
			// own, made by the admin: the run exercises access control as
			// a city's users would meet it.
			f := &flow.Flow{SignIn: signIn(rc, dep.RouterURL, ra.follow(pki.routerHTTP(time.Duration(sc.Timeouts.Step))), manifest.Digests()),
				HTTP: pki.instanceHTTP(time.Duration(sc.Timeouts.Step))}
			if sc.Has(scenario.Fault) {
				faults = newDockerFaults(cli, scope, dep, rc, ra, pki.routerHTTP(10*time.Second))
				f.Faults = faults
			}
			rep.Deployment.Access = accessOn
			rep.Deployment.TLS = tlsOn
			if steps := sc.UserSteps(); len(steps) > 0 {
				rep.Users = runner.Run(ctx, users, steps, f.New, runner.Options{
					Parallel: sc.Parallel, StepTimeout: time.Duration(sc.Timeouts.Step), Progress: progress, Start: started,
				})
			}
			if len(sc.AggregateSteps()) > 0 {
				ar := &aggregateRun{sc: sc, scenarioDir: filepath.Dir(o.ScenarioPath), users: users, scope: scope,
					network: dep.Network, routerURL: dep.RouterInternal, image: manifest.Images["aggregator"].ID,
					ca: pki.files[caCertPath], token: []byte(token + "\n"), imagesJSON: imagesJSON,
					progress: progress, start: started, logs: func(name string, b []byte) {
						if os.MkdirAll(filepath.Join(dir, "logs"), 0o755) == nil {
							os.WriteFile(filepath.Join(dir, "logs", name+".log"), b, 0o644)
						}
					}}
				rep.Aggregates = ar.runAggregates(ctx)
			}
		}
		for i := range rep.Deployment.Agents {
			for _, u := range rep.Users {
				if u.Placement == rep.Deployment.Agents[i].Name {
					rep.Deployment.Agents[i].Placed++
				}
			}
		}
	}

	// Tear down, even after Ctrl-C: with a context of its own.
	t1 := time.Now()
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if dep != nil && upErr == nil {
		if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err == nil {
			for name, b := range dep.Logs(tctx) {
				os.WriteFile(filepath.Join(dir, "logs", name+".log"), b, 0o644)
			}
		}
		if err := dep.Down(tctx); err != nil {
			logger.Warn("tear-down", "err", err)
		}
	}
	// Whatever Down missed (or a failed stand-up left), by label.
	if err := standup.Cleanup(tctx, cli, scope); err != nil {
		logger.Warn("clean-up", "err", err)
	}
	left, err := standup.Leftovers(tctx, cli, scope)
	if err != nil {
		logger.Warn("list leftovers", "err", err)
	}
	rep.Leftovers = left
	rep.TeardownMS = ms(time.Since(t1))
	if ctx.Err() != nil && rep.Error == "" {
		rep.Error = "interrupted: " + context.Cause(ctx).Error()
	}

	var did map[int]string
	if faults != nil {
		did = faults.Did()
	}
	rep.Faults = EvaluateFaults(sc.Steps, rep.Users, rep.Leftovers, did)
	return conclude(sc, rep, started, o.ResultsDir, dir, deployCfg)
}

// accessOn is what a report says of access control in a run.
const accessOn = "on: a router identity per user, owner checks, instance secrets, grants"

// signIn makes each user a router identity with admin (a client bearing
// the admin token) and returns their client of the router at base, which
// requires launched instances to run the images of digests (the run's
// manifest): a user's device refuses any other.
func signIn(admin *routerclient.Client, base string, hc *http.Client, digests map[string]string) func(ctx context.Context, user string) (userclient.Router, error) {
	return func(ctx context.Context, user string) (userclient.Router, error) {
		u, err := admin.AddUser(ctx, user, routerapi.RoleUser)
		if err != nil {
			return nil, err
		}
		rc, err := routerclient.New(base, routerclient.WithToken(u.Token), routerclient.WithHTTPClient(hc))
		if err != nil {
			return nil, err
		}
		return userclient.RequireDigests(userclient.NewRouter(rc), digests), nil
	}
}

// conclude judges a finished run of either mode (its expectations, then
// passed or not), writes its report to dir (with the deployment's config,
// when there is one) and points the results folder's latest at it.
func conclude(sc *scenario.Scenario, rep *report.Report, started time.Time, resultsDir, dir string, deployCfg []byte) (*Result, error) {
	rep.Expectations = Evaluate(sc.Expectations, rep.Users, rep.Leftovers)
	for _, f := range rep.Faults {
		for _, c := range f.Checks {
			c.Name = fmt.Sprintf("%s %s %s: %s", f.Step, f.Kind, f.Target, c.Name)
			rep.Expectations = append(rep.Expectations, c)
		}
	}
	rep.Expectations = append(rep.Expectations, aggregateChecks(rep.Aggregates)...)
	rep.Passed = rep.Error == "" && (len(rep.Users) > 0 || len(rep.Aggregates) > 0)
	for _, c := range rep.Expectations {
		rep.Passed = rep.Passed && c.Held
	}
	rep.WallMS = ms(time.Since(started))
	if err := report.Write(dir, rep); err != nil {
		return &Result{Report: rep}, err
	}
	if deployCfg != nil {
		if err := os.WriteFile(filepath.Join(dir, "deployment.json"), append(deployCfg, '\n'), 0o644); err != nil {
			return &Result{Report: rep, Dir: dir}, fmt.Errorf("write deployment config: %w", err)
		}
	}
	if err := report.Latest(resultsDir, dir); err != nil {
		return &Result{Report: rep, Dir: dir}, err
	}
	return &Result{Report: rep, Dir: dir}, nil
}

func newToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NeededImages lists the images a scenario's run needs.
func NeededImages(sc *scenario.Scenario) []string {
	need := []string{"router", "agent", "pm"}
	for _, k := range []string{scenario.Pipeline, scenario.Metrics, scenario.Count} {
		if sc.Has(k) {
			need = append(need, k)
		}
	}
	for _, st := range sc.AggregateSteps() {
		need = append(need, "aggregator", scenario.Pipeline, st.Query)
	}
	slices.Sort(need)
	return slices.Compact(need)
}

// RunID names a run: its UTC start and a random suffix, so two runs started
// in the same second on one engine never share labels.
func RunID(t time.Time) string {
	b := make([]byte, 3)
	rand.Read(b)
	return t.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b)
}

// deploymentConfig is the conf.Config the router and the agents read: one
// machine per agent with its weight, the run's network, instance ports
// published on the network's gateway address, TLS on every hop with pki.
func deploymentConfig(d *standup.Deployment, pki *runPKI) ([]byte, error) {
	c := conf.Default()
	c.UPCMode = conf.ModeDocker
	c.ServiceRouterIP = "router"
	c.ServiceRouterPort = standup.RouterPort
	c.SwarmPort = standup.AgentPort
	c.Machines = map[string]float64{}
	for _, a := range d.Agents {
		c.Machines[a.Address] = float64(a.Weight)
	}
	c.Network = d.Network
	c.Images = standup.ImagesPath
	c.Router.Listen = fmt.Sprintf(":%d", standup.RouterPort)
	c.Router.AdminTokenFile = standup.TokenPath
	// Users kept in the router's own writable folder, so a restarted
	// router still knows them.
	c.Router.UsersFile = "/data/users.json"
	// Generous bounds: an e2e run may share a busy engine, and a slow answer
	// should show in the timings, not fail the launch.
	c.Router.AgentTimeout = conf.Duration(2 * time.Minute)
	c.Router.LaunchTimeout = conf.Duration(2 * time.Minute)
	c.Agent.TokenFile = standup.AgentTokenPath
	c.Agent.Listen = fmt.Sprintf(":%d", standup.AgentPort)
	c.Agent.PublishIP = d.Gateway
	c.Agent.Advertise = d.Gateway
	pki.configure(c, true)
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("deployment config: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("deployment config: %w", err)
	}
	return b, nil
}

func environment(ctx context.Context, cli *client.Client, o Options, sc *scenario.Scenario, dataDir string, m *images.Manifest) report.Environment {
	e := report.Environment{
		Command: o.Command, UPCVersion: version.Version, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, CPUs: runtime.NumCPU(),
		Seed: sc.Seed, Parallel: sc.Parallel, DataDir: dataDir,
	}
	if v, err := cli.ServerVersion(ctx, client.ServerVersionOptions{}); err == nil {
		e.DockerVersion, e.DockerAPI = v.Version, v.APIVersion
	}
	for _, n := range sortedKeys(m.Images) {
		im := m.Images[n]
		e.Images = append(e.Images, report.Image{Name: n, Ref: im.Ref, ID: im.ID})
	}
	return e
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
