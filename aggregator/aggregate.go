// Package aggregator is the researcher's side of UPC (the original
// aggregator_scripts/count_aggregator.py and metric_aggregator.py): over a
// folder of user day files, each user's client launches their PM through the
// router, unseals it, uploads the day, has the pipeline service turn it into
// trips, asks the count or metrics service (which charges the user's privacy
// budget), and deletes its instances. Users run in parallel with a bound;
// one user's failure is reported with its reason and never stops the run.
// Only the noisy total is published: the true total only on explicit
// request, for experiments.
package aggregator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/internal/dp"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/metrics"
	pipeapi "github.com/e-mission/upc/services/pipeline/api"
	pmapi "github.com/e-mission/upc/services/pm/api"
)

// User statuses.
const (
	Answered = "answered"  // the service answered; the user is a participant
	NoBudget = "no_budget" // the user's budget could not pay for the query
	Failed   = "failed"    // something failed; Error says what
)

// Phases of a user's run, in order.
const (
	PhasePM       = "pm"       // launch the PM and unseal it
	PhaseUpload   = "upload"   // upload the day file
	PhasePipeline = "pipeline" // run the pipeline service (launch included)
	PhaseQuery    = "query"    // ask the count or metrics service (launch included)
	PhaseCleanup  = "cleanup"  // delete the user's instances
)

// Phases lists them in order.
var Phases = []string{PhasePM, PhaseUpload, PhasePipeline, PhaseQuery, PhaseCleanup}

// Upload modes.
const (
	// UploadBatch sends a new user's day as one insert of the documents the
	// original's upserts would leave (duplicates merged); a user whose PM
	// already holds entries gets the original's upserts.
	UploadBatch = "batch"
	// UploadUpsert is the original upload_data.py: one upsert per entry.
	UploadUpsert = "upsert"
)

// Options configure a run.
type Options struct {
	// Router launches and deletes the users' instances.
	Router client.Router
	// HTTP reaches the instances (required): over TLS, verifying them
	// against the operator's CA (certs.InstanceClient).
	HTTP *http.Client
	// Query is what to ask.
	Query Query
	// Parallel bounds the users run at once (default 8).
	Parallel int
	// Noise is Central (default) or Distributed (count only).
	Noise string
	// Seed, when set, makes the noise and the users' keys reproducible: an
	// experiment mode, never for published figures.
	Seed *uint64
	// RevealTrueTotal puts the exact total in the result (experiments only).
	RevealTrueTotal bool
	// Upload is UploadBatch (default) or UploadUpsert.
	Upload string
	// RunID tags the users' ids (default: a random id, or "seed-<seed>").
	RunID string
	// UserID and Key give a file's user id and PM key; nil derives them from
	// RunID (ids) and crypto/rand (keys; from the seed in experiment mode).
	UserID func(file string) string
	Key    func(file string) string
	// SharedServices launches one pipeline and one query service for the
	// whole run instead of one of each per user (the original's way): a
	// third of the launches, but one instance then serves every user (it
	// sees their PM addresses and answers; it keeps no state between calls).
	SharedServices bool
	// SharedPipelines is how many shared pipeline instances serve the users
	// round robin (default 1): the pipeline's CPU limit bounds one instance.
	SharedPipelines int
	// Timeout bounds one user's whole run (default 10 minutes).
	Timeout time.Duration
	// Progress gets one line per finished user (nil: none).
	Progress io.Writer
	Logger   *slog.Logger

	shared map[string][]api.Instance // SharedServices' instances, by service
	// randomKeys: the run made the users' keys (256 bits, from crypto/rand
	// or the experiment seed), so PMs derive them with HKDF, not Argon2id.
	randomKeys bool
}

// Validate checks the options that do not depend on the users.
func (o *Options) Validate() error { return o.validate(true) }

// ValidateSettings is Validate without the router, for a command line to
// check its flags before it connects to anything.
func (o *Options) ValidateSettings() error { return o.validate(false) }

func (o *Options) validate(needRouter bool) error {
	var errs []error
	if needRouter && o.Router == nil {
		errs = append(errs, errors.New("router: required"))
	}
	if needRouter && o.HTTP == nil {
		// No default: a default client would speak plain HTTP, or trust
		// no instance certificate.
		errs = append(errs, errors.New("HTTP: required (a client of the instances: certs.InstanceClient with the operator's CA)"))
	}
	switch o.Query.Kind {
	case Count, Metrics:
	default:
		errs = append(errs, fmt.Errorf("query kind %q is not count or metrics", o.Query.Kind))
	}
	switch o.Noise {
	case "", Central:
	case Distributed:
		if o.Query.Kind != Count {
			errs = append(errs, errors.New("noise: distributed noise is served by the count service only"))
		}
	default:
		errs = append(errs, fmt.Errorf("noise %q is not central or distributed", o.Noise))
	}
	switch o.Upload {
	case "", UploadBatch, UploadUpsert:
	default:
		errs = append(errs, fmt.Errorf("upload %q is not batch or upsert", o.Upload))
	}
	if o.SharedPipelines < 0 || o.SharedPipelines > 64 || (o.SharedPipelines > 1 && !o.SharedServices) {
		errs = append(errs, fmt.Errorf("shared pipelines %d: want 1-64, with shared services", o.SharedPipelines))
	}
	if o.Parallel < 0 || o.Parallel > 1024 {
		errs = append(errs, fmt.Errorf("parallel %d is not within 1-1024", o.Parallel))
	}
	return errors.Join(errs...)
}

func (o *Options) setDefaults() {
	if o.Parallel == 0 {
		o.Parallel = 8
	}
	if o.Noise == "" {
		o.Noise = Central
	}
	if o.Upload == "" {
		o.Upload = UploadBatch
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RunID == "" {
		if o.Seed != nil {
			o.RunID = SeedRunID(*o.Seed)
		} else {
			var b [4]byte
			rand.Read(b[:])
			o.RunID = hex.EncodeToString(b[:])
		}
	}
	if o.UserID == nil {
		run := o.RunID
		o.UserID = func(file string) string { return UserIDFor(run, file) }
	}
	if o.Key == nil {
		o.randomKeys = true
		if o.Seed != nil {
			seed := *o.Seed
			o.Key = func(file string) string { return hexOf("key", fmt.Sprint(seed), file) }
		} else {
			o.Key = func(string) string {
				var b [32]byte
				rand.Read(b[:])
				return hex.EncodeToString(b[:])
			}
		}
	}
}

func hexOf(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// SeedRunID is the run id of an experiment seeded with seed when none is
// given: its users' ids follow from it (UserIDFor).
func SeedRunID(seed uint64) string { return fmt.Sprintf("seed-%d", seed) }

// UserIDFor is the id the aggregator gives the user of day file file in run
// runID when told none: whoever ran it (the harness, to remove the users'
// storage after a run) can name them again.
func UserIDFor(runID, file string) string { return uuidOf("user", runID, file) }

// uuidOf is a UUID-shaped id (e-mission user ids are UUIDs).
func uuidOf(parts ...string) string {
	b, _ := hex.DecodeString(hexOf(parts...))
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// DayFiles lists the user day files of dir, sorted: every regular file but
// hidden ones, ground truths (NAME.ground_truth) and .json/.md/.txt files
// (a synth manifest, a README), gzipped or not.
func DayFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list day files: %w", err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(n, ".") {
			continue
		}
		switch filepath.Ext(strings.TrimSuffix(n, ".gz")) {
		case ".ground_truth", ".json", ".md", ".txt":
			continue
		}
		out = append(out, filepath.Join(dir, n))
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("no day file in %s", dir)
	}
	return out, nil
}

// userRun is one user's outcome as the run sees it (the answer stays here).
type userRun struct {
	rep    UserResult
	answer *answer
}

type answer struct {
	count   int64
	metrics map[string]float64
}

// Run asks every user of files and aggregates the answers.
func Run(ctx context.Context, files []string, o Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("aggregate: %w", err)
	}
	if len(files) == 0 {
		return nil, errors.New("aggregate: no user day file")
	}
	o.setDefaults()
	eps, err := o.Query.Epsilon()
	if err != nil {
		return nil, fmt.Errorf("aggregate: %w", err)
	}
	noise := dp.New()
	if o.Seed != nil {
		noise = dp.New(dp.WithSeed(*o.Seed))
	}
	started := time.Now()
	if o.SharedServices {
		shared, cleanup, err := o.launchShared(ctx)
		if err != nil {
			return nil, fmt.Errorf("aggregate: %w", err)
		}
		defer cleanup()
		o.shared = shared
	}
	runs := make([]userRun, len(files))
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	var pmu sync.Mutex
	done := 0
	for i, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
			}
			runs[i] = o.runUser(ctx, i, f, len(files))
			runs[i].rep.EndMS = msSince(started)
			if o.Progress != nil {
				pmu.Lock()
				done++
				r := runs[i].rep
				why := ""
				if r.Error != "" {
					why = ": " + r.Error
				}
				fmt.Fprintf(o.Progress, "[%6.1fs] %4d/%d %-28s %s%s\n", time.Since(started).Seconds(), done, len(files), r.File, r.Status, why)
				pmu.Unlock()
			}
		}()
	}
	wg.Wait()
	res := &Result{
		Query: o.Query.Kind, Noise: o.Noise, Epsilon: eps.Total, EpsilonByMode: eps.ByMode,
		Users: len(files), Parallel: o.Parallel, Upload: o.Upload, Run: o.RunID,
		Started: started.UTC(), WallMS: msSince(started), Seed: o.Seed, SharedServices: o.SharedServices,
		SharedPipelines: o.SharedPipelines,
	}
	for _, r := range runs {
		res.PerUser = append(res.PerUser, r.rep)
		switch r.rep.Status {
		case Answered:
			res.NumberParticipants++
		case NoBudget:
			res.NoBudget++
		default:
			res.Failed++
		}
	}
	if err := res.aggregate(runs, o, eps, noise); err != nil {
		return nil, err
	}
	res.Phases = phaseStats(res.PerUser)
	return res, nil
}

// aggregate sums the answers and adds the noise.
func (res *Result) aggregate(runs []userRun, o Options, eps Epsilons, noise *dp.Noise) error {
	switch o.Query.Kind {
	case Count:
		var total int64
		for _, r := range runs {
			if r.answer != nil {
				total += r.answer.count
			}
		}
		var noisy int64
		if o.Noise == Distributed {
			// Every answer carries its user's share; the aggregator adds the
			// shares of the users who did not answer, so the total carries
			// exactly DLap(1/ε) noise whoever took part.
			sc, err := dp.ScaleFor(eps.Total, 1)
			if err != nil {
				return fmt.Errorf("aggregate: %w", err)
			}
			for _, r := range runs {
				if r.answer == nil {
					s, err := noise.LaplaceShare(sc, len(runs))
					if err != nil {
						return fmt.Errorf("aggregate: %w", err)
					}
					total += s
				}
			}
			noisy = max(total, 0)
			// total here is noisy: the exact one is never seen.
			if o.RevealTrueTotal {
				res.TrueTotalNote = "not known to the aggregator under distributed noise"
			}
		} else {
			var err error
			if noisy, err = countNoise(noise, total, eps.Total); err != nil {
				return fmt.Errorf("aggregate: %w", err)
			}
			if o.RevealTrueTotal {
				res.ActualTotal = total
			}
		}
		res.NoisyTotal = noisy
	case Metrics:
		totals := map[string]float64{}
		for _, m := range o.Query.Modes() {
			totals[m] = 0
		}
		for _, r := range runs {
			if r.answer != nil {
				for m, v := range r.answer.metrics {
					totals[m] += v
				}
			}
		}
		noisy, err := metricsNoise(noise, totals, eps)
		if err != nil {
			return fmt.Errorf("aggregate: %w", err)
		}
		res.NoisyTotal = noisy
		if o.RevealTrueTotal {
			res.ActualTotal = totals
		}
	}
	return nil
}

// runUser carries one user through the flow. Whatever happens, every
// instance it launched is deleted.
func (o *Options) runUser(ctx context.Context, index int, file string, users int) (out userRun) {
	name := filepath.Base(file)
	r := UserResult{File: name, ID: o.UserID(name), Status: Failed, PhasesMS: map[string]float64{}}
	ctx, cancel := context.WithTimeoutCause(ctx, o.Timeout, fmt.Errorf("user took longer than %s", o.Timeout))
	defer cancel()
	c := &client.Client{Router: o.Router, User: r.ID, HTTP: o.HTTP}
	var launched []api.Instance
	var lmu sync.Mutex
	keep := func(inst api.Instance) {
		lmu.Lock()
		launched = append(launched, inst)
		lmu.Unlock()
	}
	defer func() {
		if v := recover(); v != nil {
			out.rep.Status, out.rep.Error, out.answer = Failed, fmt.Sprintf("panicked: %v", v), nil
		}
		t0 := time.Now()
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer dcancel()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []string
		for _, inst := range launched {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := o.Router.Delete(dctx, inst.ID); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("delete %s: %v", inst.ID, err))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		out.rep.PhasesMS[PhaseCleanup] = msSince(t0)
		if len(errs) > 0 {
			sort.Strings(errs)
			out.rep.CleanupError = strings.Join(errs, "; ")
		}
	}()
	fail := func(phase string, err error) userRun {
		r.Status, r.Phase = Failed, phase
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		r.Error = err.Error()
		return userRun{rep: r}
	}
	entries, err := client.LoadDay(file)
	if err != nil {
		return fail(PhaseUpload, err)
	}
	// The PM first, claimed and unsealed with the secret its launch
	// answered; then the services it will need, each bound to it by a grant,
	// are launched while the day uploads, as a user's device would.
	t0 := time.Now()
	type launchResult struct {
		inst  api.Instance
		grant string // the user's grant for a shared instance
		err   error
		ms    float64
	}
	queryService := client.CountService
	if o.Query.Kind == Metrics {
		queryService = client.MetricsService
	}
	pmInst, err := o.Router.Launch(ctx, api.LaunchRequest{Service: client.PMService, User: r.ID})
	if err != nil {
		r.PhasesMS[PhasePM] = msSince(t0)
		return fail(PhasePM, fmt.Errorf("launch pm: %w", err))
	}
	keep(pmInst)
	c.PMSecret = pmInst.Secret
	r.LaunchMS = map[string]float64{"pm": msSince(t0)}
	unseal := c.PM(pmInst.Address).Unseal
	if o.randomKeys {
		unseal = c.PM(pmInst.Address).UnsealRandom
	}
	if err := unseal(ctx, o.Key(name)); err != nil {
		r.PhasesMS[PhasePM] = msSince(t0)
		return fail(PhasePM, fmt.Errorf("unseal pm: %w", err))
	}
	r.PhasesMS[PhasePM] = msSince(t0)
	launch := func(service string) <-chan launchResult {
		ch := make(chan launchResult, 1)
		go func() {
			t := time.Now()
			if o.shared != nil {
				// A service shared by many users: this user's grant goes
				// with each request, and their PM checks it.
				pool := o.shared[service]
				g, err := c.PM(pmInst.Address).IssueGrant(ctx, c.GrantRequest(service))
				ch <- launchResult{inst: pool[index%len(pool)], grant: g.Token, err: err, ms: msSince(t)}
				return
			}
			inst, _, err := c.LaunchService(ctx, service, pmInst)
			if err == nil {
				keep(inst)
			}
			ch <- launchResult{inst: inst, err: err, ms: msSince(t)}
		}()
		return ch
	}
	pipeCh, queryCh := launch(client.PipelineService), launch(queryService)

	t0 = time.Now()
	n, err := o.upload(ctx, c, pmInst.Address, entries)
	r.PhasesMS[PhaseUpload] = msSince(t0)
	r.Entries = n
	if err != nil {
		drain(pipeCh, queryCh)
		return fail(PhaseUpload, err)
	}

	t0 = time.Now()
	pl := <-pipeCh
	if o.shared == nil {
		r.LaunchMS["pipeline"] = pl.ms
	}
	if pl.err != nil {
		drain(queryCh)
		r.PhasesMS[PhasePipeline] = msSince(t0)
		return fail(PhasePipeline, fmt.Errorf("launch pipeline: %w", pl.err))
	}
	pres, err := c.RunPipeline(ctx, pl.inst, pipeapi.Request{PMAddress: pmInst.Address, Grant: pl.grant})
	r.PhasesMS[PhasePipeline] = msSince(t0)
	if err != nil {
		drain(queryCh)
		return fail(PhasePipeline, fmt.Errorf("run pipeline: %w", err))
	}
	r.Trips = pres.Written["analysis/cleaned_trip"]

	t0 = time.Now()
	ql := <-queryCh
	if o.shared == nil {
		r.LaunchMS[o.Query.Kind] = ql.ms
	}
	if ql.err != nil {
		r.PhasesMS[PhaseQuery] = msSince(t0)
		return fail(PhaseQuery, fmt.Errorf("launch %s: %w", queryService, ql.err))
	}
	qid := "agg-" + o.RunID + "-" + r.ID
	var ans *answer
	var budgetShort bool
	switch o.Query.Kind {
	case Count:
		req := count.Request{PMAddress: pmInst.Address, UUID: r.ID, Query: o.Query.Count, QueryID: qid, Grant: ql.grant}
		if o.Noise == Distributed {
			req.NoiseShare = &struct {
				Users int `json:"users"`
			}{Users: users}
		}
		var res count.ResponseV1
		res, err = c.Count(ctx, ql.inst, req)
		switch {
		case errors.Is(err, client.ErrNoBudget):
			budgetShort, err = true, nil
		case err != nil:
		case o.Noise == Distributed && !res.Noised:
			// An exact answer must never be summed as if noised.
			err = errors.New("the service did not add its noise share")
		default:
			ans = &answer{count: *res.Results}
		}
		r.PrivacyCost = res.PrivacyCost
	case Metrics:
		req := o.Query.Metrics
		req.PMAddress, req.UUID, req.QueryID, req.Grant = pmInst.Address, r.ID, qid, ql.grant
		var res metrics.LocalDateResponseV1
		res, err = c.Metrics(ctx, ql.inst, req)
		switch {
		case errors.Is(err, client.ErrNoBudget):
			budgetShort, err = true, nil
		case err != nil:
		default:
			ans = &answer{metrics: map[string]float64{}}
			for m, v := range res.Results {
				f, ok := v.(float64)
				if !ok {
					err = fmt.Errorf("mode %s: answer %v is not a number", m, v)
					break
				}
				ans.metrics[m] = f
			}
		}
		r.PrivacyCost = res.PrivacyCost
	}
	r.PhasesMS[PhaseQuery] = msSince(t0)
	if err != nil {
		return fail(PhaseQuery, fmt.Errorf("%s query: %w", o.Query.Kind, err))
	}
	if budgetShort {
		r.Status, r.Phase, r.Error = NoBudget, PhaseQuery, "the user's privacy budget cannot pay for the query"
		return userRun{rep: r}
	}
	r.Status = Answered
	return userRun{rep: r, answer: ans}
}

// launchShared launches the run's shared pipeline and query services.
func (o *Options) launchShared(ctx context.Context) (map[string][]api.Instance, func(), error) {
	query := client.CountService
	if o.Query.Kind == Metrics {
		query = client.MetricsService
	}
	type want struct {
		svc string
		n   int
	}
	out := map[string][]api.Instance{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	for _, w := range []want{{client.PipelineService, max(o.SharedPipelines, 1)}, {query, 1}} {
		for k := range w.n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// One router user per instance: the router keeps one
				// instance of a service per user.
				inst, err := o.Router.Launch(ctx, api.LaunchRequest{Service: w.svc, User: fmt.Sprintf("aggregator-%s-%d", o.RunID, k)})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("launch shared %s: %w", w.svc, err))
					return
				}
				out[w.svc] = append(out[w.svc], inst)
			}()
		}
	}
	wg.Wait()
	cleanup := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		for _, pool := range out {
			for _, inst := range pool {
				if err := o.Router.Delete(dctx, inst.ID); err != nil {
					o.Logger.Warn("delete shared service", "instance", inst.ID, "err", err)
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		cleanup()
		return nil, nil, err
	}
	return out, cleanup, nil
}

// drain waits for pending launches so their instances are known to cleanup.
func drain[T any](chs ...<-chan T) {
	for _, ch := range chs {
		<-ch
	}
}

// upload sends the day as the options say and returns how many entries.
func (o *Options) upload(ctx context.Context, c *client.Client, pm string, entries []client.Entry) (int, error) {
	if o.Upload == UploadBatch {
		for i, e := range entries {
			if _, err := client.Prepare(e, c.User); err != nil {
				return len(entries), fmt.Errorf("upload: nothing sent: entry %d: %w", i, err)
			}
		}
		// The pipeline moves usercache entries into the timeseries: both
		// must be empty for an insert to equal the original's upserts.
		held := int64(0)
		for _, coll := range []string{pmapi.Usercache, pmapi.Timeseries} {
			n, err := c.PM(pm).Count(ctx, pmapi.FindRequest{Database: pmapi.DefaultDatabase, Collection: coll,
				Filter: map[string]any{"user_id": c.User}, Limit: 1, WithLimitAndSkip: true})
			if err != nil {
				return len(entries), fmt.Errorf("upload: look for earlier entries: %w", err)
			}
			held += n
		}
		if held == 0 {
			docs := client.Expected(entries)
			for _, d := range docs {
				d["user_id"] = c.User
			}
			for lo := 0; lo < len(docs); lo += batchSize {
				if _, err := c.PM(pm).Insert(ctx, pmapi.DefaultDatabase, pmapi.Usercache, docs[lo:min(lo+batchSize, len(docs))]...); err != nil {
					return len(entries), fmt.Errorf("upload: insert entries %d-%d: %w", lo, min(lo+batchSize, len(docs))-1, err)
				}
			}
			return len(entries), nil
		}
		// A PM holding entries already: upserts keep it free of duplicates.
	}
	res, err := c.Upload(ctx, pm, entries)
	return res.Entries, err
}

// batchSize keeps one insert well below the PM's body limit.
const batchSize = 2000

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
