// Command upc-count is the count service of a user's private cloud:
// POST /count_query (the original API) and /v1/count_query.
// It listens on UPC_COUNT_ADDR (default :8080). UPC_EXPERIMENT_NOISE_SEED
// seeds the noise shares of /v1/count_query, for experiments only.//
// Access (set by the router): UPC_ACCESS_SHA256, the hash of the secret every
// caller bears, or UPC_INSECURE_LEGACY=1 for none; without either it refuses
// to start. UPC_PM_ADDRESS and UPC_PM_GRANT bind it to one user's PM;
// otherwise each request names its PM and carries that user's grant.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/gctune"
	"github.com/e-mission/upc/internal/version"
	"github.com/e-mission/upc/services/count"
)

func main() {
	// Default growth, but at least 32 MiB: a run allocates tens of MiB over a
	// heap of a few.
	gctune.Tune(os.Getenv, gctune.ReadMemoryMax(), gctune.Settings{MinPercent: 100, Headroom: 32 << 20})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "upc-count:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	logger := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "count")
	addr := access.ListenAddr(getenv, "UPC_COUNT_ADDR", ":8080")
	acc, err := access.FromEnv(getenv)
	if err != nil {
		return fmt.Errorf("access: %w", err)
	}
	tlsrv, err := certs.ServingFromEnv(getenv, acc.Legacy)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	srv := count.NewServer(logger, count.PMClients(tlsrv.Client(10*time.Minute)))
	srv.Access = acc
	switch {
	case acc.PMAddress != "":
		logger.Info("bound to one PM", "pm", acc.PMAddress)
	case acc.Legacy:
		logger.Warn("running with no access control (" + access.EnvLegacy + "=1): anyone who reaches this service may use it, naming any PM")
	}
	// Experiment mode only: reproducible noise shares. Seeded noise protects
	// nothing against whoever knows the seed, so it is never the default.
	if v := getenv("UPC_EXPERIMENT_NOISE_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return fmt.Errorf("UPC_EXPERIMENT_NOISE_SEED must be an unsigned integer, not %q", v)
		}
		srv.ExperimentSeed = &seed
		logger.Warn("experiment mode: noise shares are seeded and reproducible", "seed", seed)
	}
	logger.Info("starting", "version", version.Version)
	return tlsrv.ListenAndServe(ctx, logger, addr, srv.Handler())
}
