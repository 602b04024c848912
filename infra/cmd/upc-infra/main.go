// Command upc-infra stands UPC up on Kubernetes (kind, GKE or an existing
// cluster) with the Pulumi program of infra/, run inline through the
// Automation API. It is a module of its own so that no other binary compiles
// Pulumi; `upc infra …` runs it (beside the upc executable, else on PATH).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd(os.Stdout, os.Stderr)
	root.SetArgs(os.Args[1:])
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "upc infra:", err)
		os.Exit(1)
	}
}

// newRootCmd is `upc-infra`, which is `upc infra`: the same flags and
// subcommands.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := newInfraCmd(stdout, stderr)
	root.Use = "upc-infra"
	root.Version = version.Version
	root.SilenceUsage = true
	root.SilenceErrors = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	// upc's global flag, so that `upc infra … --log-level debug` still
	// parses; the engine's progress is all this command logs.
	var logLevel string
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error (accepted as upc's; the engine's progress goes to stderr)")
	return root
}
