// Command upc is UPC's command line: the user's client, the researcher's
// aggregator, the router and machine agent, image builds, the e2e harness and
// the pipeline's ground-truth check.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if code := exitCode(0); errors.As(err, &code) {
			os.Exit(int(code)) // a command upc ran failed, and said why
		}
		fmt.Fprintln(os.Stderr, "upc:", err)
		os.Exit(1)
	}
}

// exitCode is the exit status of a command upc ran (upc-infra) that has
// reported its own error: upc exits with it and adds nothing.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
