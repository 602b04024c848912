// Command upc-count is the count service of a user's private cloud:
// POST /count_query (the original API) and /v1/count_query.
// It listens on UPC_COUNT_ADDR (default :8080).
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
	"github.com/e-mission/upc/services/count"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "upc-count:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	logger := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "count")
	addr := getenv("UPC_COUNT_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	srv := count.NewServer(logger, count.PMClients(&http.Client{Timeout: 10 * time.Minute}))
	logger.Info("starting", "version", version.Version)
	return httpx.ListenAndServe(ctx, logger, addr, srv.Handler())
}
