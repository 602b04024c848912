package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/cobra"
)

// infraBinary is the command `upc infra` runs: the infra module's
// (infra/cmd/upc-infra), a binary of its own so that upc never compiles
// Pulumi.
const infraBinary = "upc-infra"

// newInfraCmd runs upc-infra with the arguments after `infra`, all of them
// its own (flags and subcommands: up, preview, destroy).
func newInfraCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "infra",
		Short: "Stand UPC up on Kubernetes (kind, GKE or an existing cluster) with Pulumi (runs upc-infra)",
		Long: `Run upc-infra, the infra module's command (infra/cmd/upc-infra), with these
arguments: ` + "`upc infra up --stack kind`" + ` is ` + "`upc-infra up --stack kind`" + `.
It is looked for beside this executable, then on PATH; ` + "`make infra-build`" + `
builds it into bin/. ` + "`upc infra --help`" + ` prints its help.`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, _ := os.Executable()
			bin, err := findInfra(exe)
			if err != nil {
				return err
			}
			c := exec.CommandContext(cmd.Context(), bin, args...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, g.stdout, g.stderr
			// Interrupted, upc-infra stops the engine itself (a killed engine
			// leaves the stack locked); it gets a minute to.
			c.Cancel = func() error { return c.Process.Signal(os.Interrupt) }
			c.WaitDelay = time.Minute
			err = c.Run()
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) && ee.Exited() {
				return exitCode(ee.ExitCode()) // upc-infra said why
			}
			if err != nil {
				return fmt.Errorf("infra: run %s: %w", bin, err)
			}
			return nil
		},
	}
}

// findInfra is the upc-infra beside exe (the running upc, symbolic links
// followed), else the one on PATH.
func findInfra(exe string) (string, error) {
	name := infraBinary
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	var beside string
	if exe != "" {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		beside = filepath.Join(filepath.Dir(exe), name)
		if fi, err := os.Stat(beside); err == nil && !fi.IsDir() {
			return beside, nil
		}
	}
	if p, err := exec.LookPath(infraBinary); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("infra: no %s beside %s nor on PATH: build it with `make infra-build` (writes bin/%s, beside bin/upc) or `cd infra && go build -o DIR ./cmd/%s`", infraBinary, exe, infraBinary, infraBinary)
}
