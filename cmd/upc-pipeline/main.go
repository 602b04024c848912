// Command upc-pipeline is the pipeline service of a user's private cloud:
// POST /run_pipeline (the original API) and /v1/run run e-mission's intake
// pipeline over the user's PM. It listens on UPC_PIPELINE_ADDR (default :8080).
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
	"github.com/e-mission/upc/services/pipeline/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "upc-pipeline:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	logger := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "pipeline")
	addr := getenv("UPC_PIPELINE_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	srv := server.New(logger, server.PMStores(&http.Client{Timeout: 10 * time.Minute}))
	logger.Info("starting", "version", version.Version)
	return httpx.ListenAndServe(ctx, logger, addr, srv.Handler())
}
