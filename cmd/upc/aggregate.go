package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	moby "github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/e-mission/upc/aggregator"
	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/gctune"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/internal/plot"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routerclient"
)

func newAggregateCmd(g *globals) *cobra.Command {
	cf := &clientFlags{}
	var (
		data, queryFile, out string
		seed                 uint64
		local                bool
		imagesPath           string
		netMode, hostPorts   string
		warmPool             int
		o                    aggregator.Options
	)
	cmd := &cobra.Command{
		Use:   "aggregate count|metrics --data DIR --query FILE",
		Short: "Ask every user of a folder of day files a count or metrics query; publish the noisy total",
		Long: `The researcher's aggregator (the original aggregator_scripts/count_aggregator.py
and metric_aggregator.py). For every day file of --data (ground truths, .json,
.md and hidden files are skipped), the user's client launches their PM through
the router, unseals it with the user's key, uploads the day, runs the pipeline
service and the count or metrics service (which charges the user's privacy
budget), and deletes its instances. Users run --parallel at a time; each one's
outcome is reported (answered, no_budget, failed with the phase and why), and
no user's failure stops the run.

The output is the original's number_participants and noisy_total, plus ε, each
user's status and the phases' times, as JSON on stdout (and result.json,
result.md, phases.svg and phases.pdf in --out). Count totals get exact discrete Laplace noise
(central) or, with --noise distributed, each user's count service adds its share
so the aggregator never sees one user's exact answer; metrics totals get Laplace
noise. Noise comes from crypto/rand; --experiment-seed makes noise and keys
reproducible (never for published figures). The exact total is printed only
with --reveal-true-total, for experiments.

The router is the configuration's (or --router), or with --local one started in
this process over the local Docker engine on a network of its own, with the
images of --images (make images), removed with everything it made at the end.
With --warm-pool N that router keeps a warm pool of N sealed PMs: the run
starts once the pool is full, the users' PM launches claim pooled PMs (a user
beyond N gets the usual launch), the pool is not refilled during the run, and
the fill's time and CPU are reported apart (result.json's pool_fill), not in
the run's wall time.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{aggregator.Count, aggregator.Metrics},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var (
				errs []error
				lr   *localRouter
				pool *aggregator.PoolFill
			)
			if data == "" {
				errs = append(errs, errors.New("--data is required"))
			}
			if queryFile == "" {
				errs = append(errs, errors.New("--query is required"))
			}
			if args[0] != aggregator.Count && args[0] != aggregator.Metrics {
				errs = append(errs, fmt.Errorf("query kind %q is not count or metrics", args[0]))
			}
			if err := errors.Join(errs...); err != nil {
				return fmt.Errorf("aggregate: %w", err)
			}
			q, err := aggregator.LoadQuery(args[0], queryFile)
			if err != nil {
				return err
			}
			// A run reads and sends hundreds of MiB of days over a heap of
			// a few: at least 64 MiB between collections.
			gctune.Tune(os.Getenv, gctune.ReadMemoryMax(), gctune.Settings{MinPercent: 100, Headroom: 64 << 20})
			files, err := aggregator.DayFiles(data)
			if err != nil {
				return err
			}
			o.Query = q
			if cmd.Flags().Changed("experiment-seed") {
				o.Seed = &seed
			}
			o.Progress = g.stderr
			o.Logger = g.logger()
			if err := o.ValidateSettings(); err != nil {
				return fmt.Errorf("aggregate: %w", err)
			}
			if (cmd.Flags().Changed("network-mode") || cmd.Flags().Changed("host-ports")) && !local {
				return errors.New("aggregate: --network-mode and --host-ports go with --local (a deployed router's agents read docker.network_mode)")
			}
			if warmPool < 0 || warmPool > maxWarmPool {
				return fmt.Errorf("aggregate: --warm-pool %d is not in 0..%d", warmPool, maxWarmPool)
			}
			if cmd.Flags().Changed("warm-pool") && !local {
				return errors.New("aggregate: --warm-pool goes with --local (a deployed router's pool is docker.warm_pool)")
			}
			loadBefore := loadAverage()
			if local {
				mode, ports, err := conf.Docker{}.With(netMode, hostPorts)
				if err != nil {
					return fmt.Errorf("aggregate: %w", err)
				}
				if warmPool > 0 && mode == conf.NetworkHost {
					if n := ports[1] - ports[0] + 1; warmPool > n {
						return fmt.Errorf("aggregate: --warm-pool %d is more than the %d ports of --host-ports %s", warmPool, n, hostPorts)
					}
				}
				lr, err = startLocalRouter(ctx, imagesPath, agent.Options{NetworkMode: mode, HostPorts: ports}, warmPool, o.Logger)
				if err != nil {
					return err
				}
				defer lr.close(o.Logger)
				o.Router, o.HTTP = lr.router, lr.http
				if warmPool > 0 {
					if pool, err = lr.fillPool(ctx, g.stderr); err != nil {
						return fmt.Errorf("aggregate: %w", err)
					}
				}
			} else {
				if cmd.Flags().Changed("images") {
					cf.images = imagesPath
				}
				c, err := cf.userClient(false)
				if err != nil {
					return err
				}
				o.Router, o.HTTP = c.Router, c.HTTP
			}
			cpu0 := takeCPU()
			res, err := aggregator.Run(ctx, files, o)
			if err != nil {
				return err
			}
			if local {
				// The engine's CPU is this run's only on the local engine.
				c := takeCPU().since(cpu0)
				res.CPU, res.NetworkMode = &c, netMode
			}
			if pool != nil {
				pool.Left, _ = lr.core.PoolReady()
				pool.Claimed = pool.Size - pool.Left
				res.PoolFill = pool
			}
			res.Command = shellQuote(append([]string{"upc"}, os.Args[1:]...))
			res.LoadAverage, res.LoadAverageBefore = loadAverage(), loadBefore
			if out != "" {
				if err := res.Write(out); err != nil {
					return err
				}
			}
			j, err := res.JSON()
			if err != nil {
				return err
			}
			_, err = g.stdout.Write(j)
			return err
		},
	}
	cmd.AddCommand(newAggregateFigureCmd(g))
	f := cmd.Flags()
	f.StringVar(&cf.config, "config", "", "UPC configuration file (default: built-in defaults)")
	f.StringVar(&cf.routerURL, "router", "", "router base URL (default: from the configuration)")
	f.StringVar(&cf.tokenFile, "token-file", "", "file holding the caller's router token (default: router.admin_token_file)")
	f.StringVar(&cf.caFile, "ca", "", "the operator's CA certificate to verify the router and the instances with (default: certificate_bundle_path)")
	f.BoolVar(&cf.plainHTTP, "plain-http", false, "INSECURE: allow plain HTTP to instances (a legacy deployment without TLS)")
	f.StringVar(&data, "data", "", "folder of user day files (one user each)")
	f.StringVar(&queryFile, "query", "", "query file (the original's example_count_query.json / example_metric_query.json format)")
	f.StringVar(&out, "out", "", "folder receiving result.json, result.md, phases.svg and phases.pdf")
	f.IntVar(&o.Parallel, "parallel", 8, "users run at once")
	f.StringVar(&o.Noise, "noise", aggregator.Central, "central (the aggregator adds the noise) or distributed (each user's count service adds its share)")
	f.StringVar(&o.Upload, "upload", aggregator.UploadBatch, "batch (one insert for a new user) or upsert (one request per entry, as the original)")
	f.Uint64Var(&seed, "experiment-seed", 0, "experiment mode: seed the noise and the users' keys (never for published figures)")
	f.BoolVar(&o.RevealTrueTotal, "reveal-true-total", false, "also print the exact total (experiments only)")
	f.BoolVar(&o.SharedServices, "shared-services", false, "launch one pipeline and one query service for the whole run instead of one per user (a third of the launches; one instance then serves every user)")
	f.IntVar(&o.SharedPipelines, "shared-pipelines", 0, "with --shared-services: pipeline instances serving the users round robin (default 1)")
	f.DurationVar(&o.Timeout, "user-timeout", 10*time.Minute, "bound on one user's whole run")
	f.BoolVar(&local, "local", false, "start a router in this process over the local Docker engine (removed at the end)")
	f.StringVar(&netMode, "network-mode", conf.NetworkBridge, `with --local: "bridge" (each instance on the run's network, its port published by Docker) or "host" (the host's network, ports allocated by the agent from --host-ports)`)
	f.StringVar(&hostPorts, "host-ports", conf.DefaultHostPorts, "with --local --network-mode host: LOW-HIGH, the ports allocated")
	f.IntVar(&warmPool, "warm-pool", 0, fmt.Sprintf("with --local: keep a warm pool of N sealed PMs (0..%d), filled before the run starts (its time reported apart) and not refilled during it", maxWarmPool))
	f.StringVar(&imagesPath, "images", "build/images.json", "image manifest (make images): --local runs its images; every launched instance must run them (with --local, or when given), else it is deleted and that user fails")
	f.StringArrayVar(&cf.requireDigests, "require-digest", nil, "service=sha256:...: a launched instance of service must run that image (repeatable)")
	return cmd
}

// loadAverage is /proc/loadavg's first three figures, for the record.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// maxWarmPool bounds --warm-pool: a thousand sealed PMs already hold far
// more than a one-machine engine runs well.
const maxWarmPool = 1000

// poolFillParallel is how many pooled PMs the fill starts at once: the
// engine overlaps one container's start with another's health wait.
const poolFillParallel = 4

// poolFillBound is how long fillPool waits for a full pool: the filler
// retries a failed start with backoff, forever.
const poolFillBound = 30 * time.Minute

// localRouter is a router core over the local engine, served on loopback,
// on a network of its own; close removes all it made.
type localRouter struct {
	router  client.Router
	http    *http.Client // the instances, over TLS, verified by the run's CA
	core    *router.Router
	cli     *moby.Client
	srv     *httptest.Server
	name    string
	network string
	// The warm pool's filler (RunPool) and when it started; stopPool
	// ends it and returns once it has drained the pool.
	poolStart time.Time
	poolCPU   cpuSnapshot
	stopPool  func()
}

func startLocalRouter(ctx context.Context, imagesPath string, netOpts agent.Options, warmPool int, logger *slog.Logger) (*localRouter, error) {
	m, err := images.LoadManifest(imagesPath)
	if err != nil {
		return nil, fmt.Errorf("%w (run `make images` first)", err)
	}
	cat, err := conf.DefaultCatalog()
	if err != nil {
		return nil, err
	}
	if missing := m.Pin(cat); len(missing) > 0 {
		return nil, fmt.Errorf("image manifest %s lacks %s (run `make images`)", imagesPath, strings.Join(missing, ", "))
	}
	cli, err := agent.NewClientFromEnv()
	if err != nil {
		return nil, err
	}
	var b [4]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	lr := &localRouter{cli: cli, name: "agg" + id, network: "upc-agg-" + id}
	labels := map[string]string{"upc.aggregate": id}
	eng, err := agent.NewEngine(cli, agent.Options{Network: lr.network, Name: lr.name, NetworkLabels: labels, Labels: labels,
		NetworkMode: netOpts.NetworkMode, HostPorts: netOpts.HostPorts}, logger)
	if err != nil {
		cli.Close()
		return nil, err
	}
	be, err := docker.New([]docker.Machine{{Name: conf.LocalMachine, Weight: 1, Driver: eng}}, docker.Options{Labels: labels}, logger)
	if err != nil {
		lr.close(logger)
		return nil, err
	}
	// The aggregator plays every user's device here, so it is the local
	// router's admin (a token that lives only in this process).
	admin := access.NewToken(access.PrefixUser)
	users, err := router.OpenUsers("", admin)
	if err != nil {
		lr.close(logger)
		return nil, err
	}
	// A CA for this run alone: every instance serves TLS with a
	// certificate from it, and this process is all that trusts it.
	ca, err := certs.NewCA("upc aggregate --local "+id, 24*time.Hour)
	if err != nil {
		lr.close(logger)
		return nil, err
	}
	roots, err := certs.Pool(ca.CertPEM)
	if err != nil {
		lr.close(logger)
		return nil, err
	}
	lr.http = certs.InstanceClient(roots, 0)
	// A warm pool here is filled once, before the run (poolFillParallel
	// PMs at a time): its refill would compete with the run for the
	// engine, and its fill is measured apart.
	core, err := router.New(router.Options{Backend: be, Catalog: cat, Logger: logger, HealthTimeout: 2 * time.Minute, Users: users, CA: ca,
		WarmPool: warmPool, PoolFillOnce: true, PoolFillParallel: poolFillParallel})
	if err != nil {
		lr.close(logger)
		return nil, err
	}
	lr.core = core
	if warmPool > 0 {
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		lr.poolStart, lr.poolCPU = time.Now(), takeCPU()
		go func() {
			defer close(done)
			core.RunPool(pctx)
		}()
		lr.stopPool = func() { cancel(); <-done }
	}
	// The router itself is in process, reached over loopback only.
	lr.srv = httptest.NewServer(router.Handler(core, logger))
	rc, err := routerclient.New(lr.srv.URL, routerclient.WithToken(admin))
	if err != nil {
		lr.close(logger)
		return nil, err
	}
	// The instances must run the manifest's images, not whatever a tag
	// names by the time they start.
	lr.router = client.RequireDigests(client.NewRouter(rc), m.Digests())
	return lr, nil
}

// fillPool waits until the warm pool is full, saying how full on progress,
// and reports the fill: its time from the router's start and its CPU.
func (lr *localRouter) fillPool(ctx context.Context, progress io.Writer) (*aggregator.PoolFill, error) {
	_, size := lr.core.PoolReady()
	deadline := lr.poolStart.Add(poolFillBound)
	last, said := -1, time.Time{}
	for {
		ready, _ := lr.core.PoolReady()
		if ready != last && (ready == size || time.Since(said) >= time.Second) {
			fmt.Fprintf(progress, "[%6.1fs] warm pool %d/%d ready\n", time.Since(lr.poolStart).Seconds(), ready, size)
			last, said = ready, time.Now()
		}
		if ready >= size {
			return &aggregator.PoolFill{Size: size, FillMS: float64(time.Since(lr.poolStart).Microseconds()) / 1000,
				CPU: takeCPU().since(lr.poolCPU)}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the warm pool holds %d of %d ready PMs after %s (see the log for why pooled PMs fail to start)", ready, size, poolFillBound)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the warm pool (%d of %d ready): %w", ready, size, context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// close drains the warm pool, then removes the containers and volumes of
// the local agent and its network.
func (lr *localRouter) close(logger *slog.Logger) {
	if lr.stopPool != nil {
		lr.stopPool()
	}
	if lr.srv != nil {
		lr.srv.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := make(moby.Filters).Add("label", agent.LabelAgent+"="+lr.name)
	if cs, err := lr.cli.ContainerList(ctx, moby.ContainerListOptions{All: true, Filters: f}); err == nil {
		for _, c := range cs.Items {
			if _, err := lr.cli.ContainerRemove(ctx, c.ID, moby.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
				logger.Warn("remove container", "id", c.ID, "err", err)
			}
		}
	}
	if vs, err := lr.cli.VolumeList(ctx, moby.VolumeListOptions{Filters: f}); err == nil {
		for _, v := range vs.Items {
			if _, err := lr.cli.VolumeRemove(ctx, v.Name, moby.VolumeRemoveOptions{Force: true}); err != nil {
				logger.Warn("remove volume", "name", v.Name, "err", err)
			}
		}
	}
	if ns, err := lr.cli.NetworkList(ctx, moby.NetworkListOptions{Filters: make(moby.Filters).Add("name", lr.network)}); err == nil {
		for _, n := range ns.Items {
			if n.Name == lr.network {
				if _, err := lr.cli.NetworkRemove(ctx, n.ID, moby.NetworkRemoveOptions{}); err != nil {
					logger.Warn("remove network", "name", n.Name, "err", err)
				}
			}
		}
	}
	lr.cli.Close()
}

func newAggregateFigureCmd(g *globals) *cobra.Command {
	var out, baseline string
	cmd := &cobra.Command{
		Use:   "figure --out DIR [LABEL=]RESULT.json...",
		Short: "Compare aggregate runs by path: a table and the wall-time and phase figures",
		Long: `Reads the result.json of aggregate runs (upc aggregate --out) and compares
them by number of users and path (the local router's network mode, +pool with
--warm-pool), or by LABEL for a file given as LABEL=RESULT.json (two versions
on one path, say): writes paths.md (one row per run: wall time, users
answered, each phase's median / p95 per user, the run's CPU, its wall time
over the --baseline run of as many users started nearest to it, the pool's
fill, the load averages), and the figures wall.svg / wall.pdf (wall time per
path and number of users) and phases.svg / phases.pdf (each phase's time per
user) in --out.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("aggregate figure: --out is required")
			}
			if baseline == "" {
				return errors.New("aggregate figure: --baseline must name a path or a label")
			}
			var runs []*aggregator.Result
			for _, a := range args {
				label := ""
				if l, f, ok := strings.Cut(a, "="); ok {
					if l == "" || f == "" {
						return fmt.Errorf("aggregate figure: %q: want LABEL=RESULT.json with both parts", a)
					}
					label, a = l, f
				}
				b, err := os.ReadFile(a)
				if err != nil {
					return fmt.Errorf("aggregate figure: %w", err)
				}
				var r aggregator.Result
				if err := json.Unmarshal(b, &r); err != nil {
					return fmt.Errorf("aggregate figure: %s: %w", a, err)
				}
				if r.Users == 0 {
					return fmt.Errorf("aggregate figure: %s is not an aggregate result (no users)", a)
				}
				r.Label = label
				runs = append(runs, &r)
			}
			wall, phases, err := aggregator.CompareFigures(runs, baseline)
			if err != nil {
				return fmt.Errorf("aggregate figure: %w", err)
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return fmt.Errorf("aggregate figure: %w", err)
			}
			files := map[string][]byte{"paths.md": aggregator.CompareMarkdown(runs, baseline)}
			for name, f := range map[string]*plot.Figure{"wall": wall, "phases": phases} {
				svg, err := f.SVG()
				if err != nil {
					return fmt.Errorf("aggregate figure: %w", err)
				}
				pdf, err := f.PDF()
				if err != nil {
					return fmt.Errorf("aggregate figure: %w", err)
				}
				files[name+".svg"], files[name+".pdf"] = svg, pdf
			}
			for name, b := range files {
				if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
					return fmt.Errorf("aggregate figure: %w", err)
				}
			}
			_, err = g.stdout.Write(files["paths.md"])
			return err
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "folder receiving paths.md, wall.svg, wall.pdf, phases.svg and phases.pdf")
	cmd.Flags().StringVar(&baseline, "baseline", aggregator.Baseline, "the path (or LABEL) every run is compared with: its run of as many users started nearest")
	return cmd
}
