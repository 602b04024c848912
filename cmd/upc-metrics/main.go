// Command upc-metrics is the metrics service of a user's private cloud:
// POST /metrics/local_date (the original API) and /v1/metrics/local_date.
// It listens on UPC_METRICS_ADDR (default :8080).//
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
	"syscall"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/gctune"
	"github.com/e-mission/upc/internal/version"
	"github.com/e-mission/upc/services/metrics"
)

func main() {
	// Default growth, but at least 32 MiB: a run allocates tens of MiB over a
	// heap of a few.
	gctune.Tune(os.Getenv, gctune.ReadMemoryMax(), gctune.Settings{MinPercent: 100, Headroom: 32 << 20})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "upc-metrics:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	logger := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "metrics")
	addr := access.ListenAddr(getenv, "UPC_METRICS_ADDR", ":8080")
	acc, err := access.FromEnv(getenv)
	if err != nil {
		return fmt.Errorf("access: %w", err)
	}
	tlsrv, err := certs.ServingFromEnv(getenv, acc.Legacy)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	srv := metrics.NewServer(logger, metrics.PMClients(tlsrv.Client(10*time.Minute)))
	srv.Access = acc
	switch {
	case acc.PMAddress != "":
		logger.Info("bound to one PM", "pm", acc.PMAddress)
	case acc.Legacy:
		logger.Warn("running with no access control (" + access.EnvLegacy + "=1): anyone who reaches this service may use it, naming any PM")
	}
	logger.Info("starting", "version", version.Version)
	return tlsrv.ListenAndServe(ctx, logger, addr, srv.Handler())
}
