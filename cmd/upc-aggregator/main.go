// Command upc-aggregator is the researcher's aggregator (upc aggregate) as an
// image of its own, so a scenario runs it as a researcher would: a process of
// its own, on the deployment's network, reaching the router and the users'
// instances over TLS like any other client. It asks every day file of
// -data a count or metrics query and writes result.json (and result.md,
// phases.svg, phases.pdf) to -out.
//
//	upc-aggregator -kind count -query /in/query.json -data /in/data -out /out \
//	  -router https://router:8443 -token-file /in/token -ca /in/ca.crt -images /in/images.json
//
// -experiment-seed seeds the noise and the users' keys (experiments only);
// -reveal-true-total adds the exact total to the result.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/e-mission/upc/aggregator"
	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/gctune"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/router/routerclient"
)

func main() {
	// A run reads and sends hundreds of MiB of days over a heap of a few.
	gctune.Tune(os.Getenv, gctune.ReadMemoryMax(), gctune.Settings{MinPercent: 100, Headroom: 64 << 20})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "upc-aggregator:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("upc-aggregator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kind      = fs.String("kind", "", "count or metrics")
		queryFile = fs.String("query", "", "query file (the original's format)")
		data      = fs.String("data", "", "folder of user day files")
		out       = fs.String("out", "", "folder receiving result.json, result.md and the phases figure")
		routerURL = fs.String("router", "", "router base URL (https)")
		tokenFile = fs.String("token-file", "", "file holding the router token")
		caFile    = fs.String("ca", "", "the operator's CA certificate")
		imagesF   = fs.String("images", "", "image manifest: every launched instance must run its images")
		parallel  = fs.Int("parallel", 8, "users run at once")
		timeout   = fs.Duration("user-timeout", 10*time.Minute, "bound on one user's whole run")
		seed      = fs.Uint64("experiment-seed", 0, "experiment mode: seed the noise and the users' keys")
		reveal    = fs.Bool("reveal-true-total", false, "also write the exact total (experiments only)")
		shared    = fs.Bool("shared-services", false, "one pipeline and one query instance for the whole run")
		pipelines = fs.Int("shared-pipelines", 0, "with -shared-services: pipeline instances serving the users round robin")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var errs []error
	for name, v := range map[string]string{"kind": *kind, "query": *queryFile, "data": *data, "out": *out,
		"router": *routerURL, "token-file": *tokenFile, "ca": *caFile} {
		if v == "" {
			errs = append(errs, fmt.Errorf("-%s is required", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	q, err := aggregator.LoadQuery(*kind, *queryFile)
	if err != nil {
		return err
	}
	files, err := aggregator.DayFiles(*data)
	if err != nil {
		return err
	}
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fmt.Errorf("read router token: %w", err)
	}
	pool, err := certs.LoadPool(*caFile)
	if err != nil {
		return err
	}
	rc, err := routerclient.New(*routerURL, routerclient.WithToken(strings.TrimSpace(string(tok))),
		routerclient.WithHTTPClient(&http.Client{Timeout: 10 * time.Minute, Transport: certs.Transport(pool, nil)}))
	if err != nil {
		return err
	}
	r := client.NewRouter(rc)
	if *imagesF != "" {
		m, err := images.LoadManifest(*imagesF)
		if err != nil {
			return err
		}
		r = client.RequireDigests(r, m.Digests())
	}
	o := aggregator.Options{Router: r, HTTP: certs.InstanceClient(pool, 10*time.Minute), Query: q, Parallel: *parallel,
		Timeout: *timeout, RevealTrueTotal: *reveal, SharedServices: *shared, SharedPipelines: *pipelines, Progress: stderr,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	seen := false
	fs.Visit(func(f *flag.Flag) { seen = seen || f.Name == "experiment-seed" })
	if seen {
		o.Seed = seed
	}
	res, err := aggregator.Run(ctx, files, o)
	if err != nil {
		return err
	}
	res.Command = "upc-aggregator " + strings.Join(args, " ")
	if err := res.Write(*out); err != nil {
		return err
	}
	j, err := res.JSON()
	if err != nil {
		return err
	}
	_, err = stdout.Write(j)
	return err
}
