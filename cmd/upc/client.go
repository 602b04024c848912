package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/e-mission/upc/internal/atomicfile"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/routerclient"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/metrics"
	pipeapi "github.com/e-mission/upc/services/pipeline/api"
	pmapi "github.com/e-mission/upc/services/pm/api"
)

// clientFlags are the flags every client command shares.
type clientFlags struct {
	config       string
	routerURL    string
	tokenFile    string
	user         string
	pmSecretFile string
	spendCap     float64
	caFile       string
	plainHTTP    bool
	// images and requireDigests are the digests launches must answer
	// (client.RequireDigests): a manifest's, and service=sha256:... pairs.
	images         string
	requireDigests []string
}

// digests are the image digests the flags require of launched instances
// (nil: none): the manifest's, then the pairs, which override it.
func (f *clientFlags) digests() (map[string]string, error) {
	out := map[string]string{}
	if f.images != "" {
		m, err := images.LoadManifest(f.images)
		if err != nil {
			return nil, fmt.Errorf("--images: %w", err)
		}
		out = m.Digests()
	}
	pairs, err := client.ParseDigests(f.requireDigests)
	if err != nil {
		return nil, fmt.Errorf("--require-digest: %w", err)
	}
	maps.Copy(out, pairs)
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

func (f *clientFlags) load() (*conf.Config, error) {
	if f.config == "" {
		return conf.Default(), nil
	}
	return conf.Load(f.config)
}

// roots is the CA bundle to trust: caFile, else the configuration's
// certificate_bundle_path; nil when neither is set (system roots).
func roots(cfg *conf.Config, caFile string) (*x509.CertPool, error) {
	path := caFile
	if path == "" && cfg.CertificateBundlePath != "" {
		path = cfg.Path(cfg.CertificateBundlePath)
	}
	if path == "" {
		return nil, nil
	}
	return certs.LoadPool(path)
}

// httpClient calls the router, verifying it by its host name against the
// CA bundle (--ca, else certificate_bundle_path; system roots without one).
func httpClient(cfg *conf.Config, caFile string) (*http.Client, error) {
	pool, err := roots(cfg, caFile)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 10 * time.Minute, Transport: certs.Transport(pool, nil)}, nil
}

// instanceClient calls the user's instances: over TLS only, each verified
// as an instance of the CA bundle's. plain (--plain-http) allows plain
// HTTP to a legacy deployment, loudly.
func instanceClient(cfg *conf.Config, caFile string, plain bool, stderr io.Writer) (*http.Client, error) {
	if plain {
		fmt.Fprintln(stderr, "upc: WARNING: --plain-http: your key, secrets and data may cross the network in clear")
		return &http.Client{Timeout: 10 * time.Minute}, nil
	}
	pool, err := roots(cfg, caFile)
	if err != nil {
		return nil, err
	}
	if pool == nil {
		return nil, errors.New("no CA to verify your instances with: give --ca FILE (the operator's ca.crt) or certificate_bundle_path in --config; --plain-http only for a legacy deployment without TLS")
	}
	return certs.InstanceClient(pool, 10*time.Minute), nil
}

// failing answers every request with err.
type failing struct{ err error }

func (f failing) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return nil, f.err
}

// userClient builds the user's client from the flags and configuration.
func (f *clientFlags) userClient(needUser bool) (*client.Client, error) {
	if needUser && f.user == "" {
		return nil, errors.New("--user is required")
	}
	cfg, err := f.load()
	if err != nil {
		return nil, err
	}
	hc, err := httpClient(cfg, f.caFile)
	if err != nil {
		return nil, err
	}
	// Commands that reach only the router (pause, delete) need no CA: a
	// missing one is reported when an instance is first called.
	ic, err := instanceClient(cfg, f.caFile, f.plainHTTP, os.Stderr)
	if err != nil {
		ic = &http.Client{Transport: failing{err}}
	}
	base := f.routerURL
	if base == "" {
		base = cfg.RouterURL()
	}
	var token string
	tokenFile := f.tokenFile
	if tokenFile == "" && cfg.Router.AdminToken() != "" {
		// On the operator's own machine, the configuration's admin token.
		tokenFile = cfg.Path(cfg.Router.AdminToken())
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read router token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	rc, err := routerclient.New(base, routerclient.WithHTTPClient(hc), routerclient.WithToken(token))
	if err != nil {
		return nil, err
	}
	r := client.NewRouter(rc)
	digests, err := f.digests()
	if err != nil {
		return nil, err
	}
	if digests != nil {
		r = client.RequireDigests(r, digests)
	}
	return &client.Client{Router: r, User: f.user, HTTP: ic}, nil
}

// userKey reads the user's secret from UPC_KEY_FILE or UPC_KEY (never a flag,
// so it stays out of shell history and process lists).
func userKey(keyFile string) (string, error) {
	if keyFile == "" {
		keyFile = os.Getenv("UPC_KEY_FILE")
	}
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return "", fmt.Errorf("read key: %w", err)
		}
		k := strings.TrimSpace(string(b))
		if k == "" {
			return "", fmt.Errorf("key file %s is empty", keyFile)
		}
		return k, nil
	}
	if k := os.Getenv("UPC_KEY"); k != "" {
		return k, nil
	}
	return "", errors.New("no key: set --key-file, UPC_KEY_FILE or UPC_KEY")
}

// register adds the flags `upc client` and `upc user` share to cmd.
func (f *clientFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.config, "config", "", "UPC configuration file (JSON or YAML; default: built-in defaults)")
	pf.StringVar(&f.routerURL, "router", "", "router base URL (default: from the configuration)")
	pf.StringVar(&f.tokenFile, "token-file", "", "file holding the caller's router token (upc users add prints one; default: router.admin_token_file)")
	pf.StringVar(&f.user, "user", "", "the user's id")
	pf.StringVar(&f.caFile, "ca", "", "the operator's CA certificate (ca.crt) to verify the router and your instances with (default: certificate_bundle_path)")
	pf.BoolVar(&f.plainHTTP, "plain-http", false, "INSECURE: allow plain HTTP to instances (a legacy deployment without TLS)")
	pf.StringVar(&f.images, "images", "", "image manifest (build/images.json): launched instances must run its images (their digests), else they are deleted and the command fails")
	pf.StringArrayVar(&f.requireDigests, "require-digest", nil, "service=sha256:...: a launched instance of service must run that image (repeatable; overrides --images)")
	pf.StringVar(&f.pmSecretFile, "pm-secret-file", "", "file holding the PM's owner credential, as launch --secret-out wrote it (default: $UPC_PM_SECRET_FILE, then $UPC_PM_SECRET)")
}

func newClientCmd(g *globals) *cobra.Command {
	f := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "client",
		Short: "The user's device: launch and unseal a PM, upload, download, run the pipeline, count, metrics, pause, resume, delete",
	}
	f.register(cmd)
	cmd.PersistentFlags().Float64Var(&f.spendCap, "spend-cap", client.DefaultSpendCap, "the most ε a service launched by this command may charge the user's budget (its grant's cap)")

	printJSON := func(v any) error {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}

	var keyFile, secretOut string
	launch := &cobra.Command{
		Use:   "launch",
		Short: "Launch a PM for the user through the router and unseal it with the user's key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := userKey(keyFile)
			if err != nil {
				return err
			}
			c, err := f.userClient(true)
			if err != nil {
				return err
			}
			if secretOut == "" {
				return errors.New("--secret-out is required: the PM's owner credential is sent once, and every later command needs it")
			}
			inst, err := c.LaunchPM(cmd.Context(), key)
			if err != nil {
				return err
			}
			if err := writeSecret(secretOut, inst.Secret); err != nil {
				// Without the secret nobody can use the PM: do not leave it.
				return errors.Join(err, c.Delete(context.WithoutCancel(cmd.Context()), inst.ID))
			}
			g.logger().Info("pm launched and unsealed", "user", f.user, "id", inst.ID, "address", inst.Address, "secret", secretOut)
			inst.Secret = ""
			return printJSON(inst)
		},
	}
	launch.Flags().StringVar(&keyFile, "key-file", "", "file holding the user's secret key (default: $UPC_KEY_FILE, then $UPC_KEY)")
	launch.Flags().StringVar(&secretOut, "secret-out", "", "file to write the PM's owner credential to (mode 0600; the other commands read it with --pm-secret-file)")

	var pmAddr string
	var batch int
	upload := &cobra.Command{
		Use:   "upload --pm ADDRESS DAYFILE...",
		Short: "Upload e-mission day files into the user's PM, as the original upload_data.py",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			if pmAddr == "" {
				return errors.New("--pm is required")
			}
			if batch < 1 || batch > pmapi.MaxBulkUpdates {
				return fmt.Errorf("--batch must be between 1 and %d, not %d", pmapi.MaxBulkUpdates, batch)
			}
			// Every file is read and checked before anything is contacted.
			days := make([][]client.Entry, len(files))
			for i, file := range files {
				var err error
				if days[i], err = client.LoadDay(file); err != nil {
					return err
				}
			}
			c, err := f.pmClient()
			if err != nil {
				return err
			}
			c.UploadBatch = batch
			wakePM(cmd.Context(), c, pmAddr, g.logger())
			for i, file := range files {
				entries := days[i]
				start := time.Now()
				res, err := c.Upload(cmd.Context(), pmAddr, entries)
				if err != nil {
					return fmt.Errorf("upload %s: %w", file, err)
				}
				g.logger().Info("uploaded", "file", file, "entries", res.Entries, "inserted", res.Inserted,
					"updated", res.Updated, "took", time.Since(start).Round(time.Millisecond))
				if err := printJSON(map[string]any{"file": file, "result": res}); err != nil {
					return err
				}
			}
			return nil
		},
	}
	upload.Flags().StringVar(&pmAddr, "pm", "", "the PM's address (as launch printed it)")
	upload.Flags().IntVar(&batch, "batch", client.DefaultUploadBatch, "upserts per request (one transaction each; 1: one request per entry, as the original; a PM without bulk updates gets one per entry)")

	var out, typ string
	download := &cobra.Command{
		Use:   "download --pm ADDRESS [--out FILE]",
		Short: "Download the user's entries from their PM, sorted by write_ts, as the original download_data.py",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pmAddr == "" {
				return errors.New("--pm is required")
			}
			c, err := f.pmClient()
			if err != nil {
				return err
			}
			wakePM(cmd.Context(), c, pmAddr, g.logger())
			docs, err := c.Download(cmd.Context(), pmAddr, client.DownloadOptions{Type: typ})
			if err != nil {
				return err
			}
			b, err := json.MarshalIndent(docs, "", "    ")
			if err != nil {
				return err
			}
			b = append(b, '\n')
			if out == "" || out == "-" {
				_, err = g.stdout.Write(b)
				return err
			}
			if err := writeFileAtomic(out, b); err != nil {
				return err
			}
			g.logger().Info("downloaded", "entries", len(docs), "out", out)
			return nil
		},
	}
	download.Flags().StringVar(&pmAddr, "pm", "", "the PM's address (as launch printed it)")
	download.Flags().StringVar(&out, "out", "", "output file (default: standard output)")
	download.Flags().StringVar(&typ, "type", "", `only entries of this metadata.type ("document" is what the original fetched; default: all)`)

	pipeline := serviceCmd(f, g, printJSON, client.PipelineService, "pipeline --pm ADDRESS",
		"Run the pipeline service over the user's PM: turn the uploaded entries into trips",
		nil,
		func(ctx context.Context, c *client.Client, svc api.Instance, sf serviceFlags, _ any) (any, error) {
			return c.RunPipeline(ctx, svc, pipeapi.Request{PMAddress: sf.pm})
		})
	countCmd := serviceCmd(f, g, printJSON, client.CountService, "count --pm ADDRESS --query FILE",
		"Ask the count service whether the user was in a region during a time range (charges the user's privacy budget)",
		client.LoadCountQuery,
		func(ctx context.Context, c *client.Client, svc api.Instance, sf serviceFlags, q count.Query) (any, error) {
			return c.Count(ctx, svc, count.Request{PMAddress: sf.pm, Query: q, QueryID: sf.queryID})
		})
	metricsCmd := serviceCmd(f, g, printJSON, client.MetricsService, "metrics --pm ADDRESS --query FILE",
		"Ask the metrics service for the user's count, distance or duration by mode and local date (charges the user's privacy budget)",
		client.LoadMetricsQuery,
		func(ctx context.Context, c *client.Client, svc api.Instance, sf serviceFlags, q metrics.LocalDateRequest) (any, error) {
			q.PMAddress, q.QueryID = sf.pm, sf.queryID
			return c.Metrics(ctx, svc, q)
		})

	op := func(use, short string, do func(c *client.Client, cmd *cobra.Command, id string) error) *cobra.Command {
		return &cobra.Command{
			Use:   use + " ID",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := f.userClient(false)
				if err != nil {
					return err
				}
				return do(c, cmd, args[0])
			},
		}
	}
	cmd.AddCommand(launch, upload, download, pipeline, countCmd, metricsCmd,
		op("pause", "Pause an instance: it keeps its state and stops answering", func(c *client.Client, cmd *cobra.Command, id string) error {
			if err := c.Pause(cmd.Context(), id); err != nil {
				return err
			}
			return printJSON(map[string]string{"paused": id})
		}),
		op("resume", "Resume a paused instance", func(c *client.Client, cmd *cobra.Command, id string) error {
			if err := c.Resume(cmd.Context(), id); err != nil {
				return err
			}
			return printJSON(map[string]string{"resumed": id})
		}),
		op("delete", "Delete an instance (the user's data volume is kept)", func(c *client.Client, cmd *cobra.Command, id string) error {
			if err := c.Delete(cmd.Context(), id); err != nil {
				return err
			}
			return printJSON(map[string]string{"deleted": id})
		}),
	)
	return cmd
}

// serviceFlags are the flags of the commands that call a service.
type serviceFlags struct {
	pm, query, queryID string
}

// serviceCmd is a `upc client` command that launches the user's instance of
// service through the router, calls it against the user's PM, prints its
// answer and deletes the instance, as the original run_*.py scripts did.
// load (nil: the service takes no query) reads the --query file before
// anything is contacted.
func serviceCmd[Q any](f *clientFlags, g *globals, printJSON func(any) error, service, use, short string,
	load func(path string) (Q, error), call func(ctx context.Context, c *client.Client, svc api.Instance, sf serviceFlags, q Q) (any, error)) *cobra.Command {
	var sf serviceFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var errs []error
			if f.user == "" {
				errs = append(errs, errors.New("--user is required"))
			}
			if sf.pm == "" {
				errs = append(errs, errors.New("--pm is required"))
			}
			if load != nil && sf.query == "" {
				errs = append(errs, errors.New("--query is required"))
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
			var q Q
			if load != nil {
				var err error
				if q, err = load(sf.query); err != nil {
					return err
				}
			}
			c, err := f.pmClient()
			if err != nil {
				return err
			}
			pm, err := findPM(cmd.Context(), c, sf.pm)
			if err != nil {
				return err
			}
			var ans any
			err = c.WithService(cmd.Context(), service, pm, func(inst api.Instance) error {
				g.logger().Info("service launched", "service", service, "id", inst.ID, "address", inst.Address, "bound to", pm.ID)
				var err error
				ans, err = call(cmd.Context(), c, inst, sf, q)
				return err
			})
			// A budget's refusal is printed too: it says what the query costs.
			if err == nil || errors.Is(err, client.ErrNoBudget) {
				if perr := printJSON(ans); perr != nil {
					return errors.Join(err, perr)
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&sf.pm, "pm", "", "the user's PM's address (as launch printed it)")
	if load != nil {
		cmd.Flags().StringVar(&sf.query, "query", "", "query file, in the original's example query format")
		cmd.Flags().StringVar(&sf.queryID, "query-id", "", "the query's id: a retry with the same id is charged once (default: the service makes one)")
	}
	return cmd
}

// pmClient is the user's client bearing their PM's owner credential.
func (f *clientFlags) pmClient() (*client.Client, error) {
	c, err := f.userClient(true)
	if err != nil {
		return nil, err
	}
	if c.PMSecret, err = pmSecret(f.pmSecretFile); err != nil {
		return nil, err
	}
	if f.spendCap <= 0 || math.IsInf(f.spendCap, 0) || math.IsNaN(f.spendCap) {
		return nil, fmt.Errorf("--spend-cap %v: want a positive number of ε", f.spendCap)
	}
	c.SpendCap = f.spendCap
	return c, nil
}

// pmSecret reads the PM's owner credential from the flag's file,
// $UPC_PM_SECRET_FILE or $UPC_PM_SECRET (never a flag's value, so it stays
// out of shell history and process lists).
func pmSecret(file string) (string, error) {
	if file == "" {
		file = os.Getenv("UPC_PM_SECRET_FILE")
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read the pm secret: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("pm secret file %s is empty", file)
		}
		return s, nil
	}
	if s := os.Getenv("UPC_PM_SECRET"); s != "" {
		return s, nil
	}
	return "", errors.New("no pm secret: set --pm-secret-file (as launch --secret-out wrote it), UPC_PM_SECRET_FILE or UPC_PM_SECRET")
}

// findPM is the user's PM instance at address, as the router lists it (a
// service is bound to the PM's instance, not to an address), resumed if it
// was paused (its idle policy, say).
func findPM(ctx context.Context, c *client.Client, address string) (api.Instance, error) {
	in, err := c.Wake(ctx, address)
	if err != nil {
		return api.Instance{}, fmt.Errorf("--pm %s: %w", address, err)
	}
	return in, nil
}

// wakePM resumes the PM at address if the router lists it paused, before
// a command calls it. Best effort: a router that cannot answer is logged,
// and the command calls the PM as before.
func wakePM(ctx context.Context, c *client.Client, address string, logger *slog.Logger) {
	if _, err := c.Wake(ctx, address); err != nil {
		logger.Warn("could not ask the router whether the pm is paused; calling it as is", "err", err)
	}
}

// writeSecret writes a credential to a new file only its owner can read.
func writeSecret(path, secret string) error {
	if secret == "" {
		return errors.New("the router sent no pm secret")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("--secret-out: %w", err)
	}
	if _, err := f.WriteString(secret + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("--secret-out: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("--secret-out: %w", err)
	}
	return nil
}

// writeFileAtomic writes b to path (mode 0600) whole or not at all.
func writeFileAtomic(path string, b []byte) error { return atomicfile.Write(path, b, 0o600) }
