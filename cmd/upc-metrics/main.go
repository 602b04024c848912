// Command upc-metrics is the metrics service of a user's private cloud:
// POST /metrics/local_date (the original API) and /v1/metrics/local_date.
// It listens on UPC_METRICS_ADDR (default :8080).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/internal/version"
	"github.com/e-mission/upc/services/metrics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "upc-metrics:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	logger := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "metrics")
	addr := getenv("UPC_METRICS_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	srv := metrics.NewServer(logger, metrics.PMClients(&http.Client{Timeout: 10 * time.Minute}))
	logger.Info("starting", "version", version.Version)
	return httpx.ListenAndServe(ctx, logger, addr, srv.Handler())
}
