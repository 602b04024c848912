package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/harness"
	"github.com/e-mission/upc/harness/report"
)

// errE2EFailed makes the command exit non-zero after the report is written.
var errE2EFailed = errors.New("e2e: an expectation failed (see the report)")

func newE2ECmd(g *globals) *cobra.Command {
	var o harness.Options
	cmd := &cobra.Command{
		Use:   "e2e",
		Short: "Stand UPC up, run a scenario's users through it, tear down, report",
		Long: `Stand UPC up on the local Docker engine with testcontainers-go (a network of the
run's own, the machine agents with their weights, the router), carry every user
of the scenario through its steps (launch a PM, unseal, upload a real e-mission
day, download, compare, ... delete), remove everything the run created (by its
labels, also after Ctrl-C), check the scenario's expectations and write
<results>/<run>/report.json, report.md and its figures as SVG and PDF
(<results>/latest points at the newest). Exits non-zero when an expectation
fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runScenario(cmd, g, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.ScenarioPath, "scenario", "scenarios/default.yaml", "scenario file")
	runFlags(cmd, &o)
	return cmd
}

// runFlags are the flags of `upc e2e` and `upc scenario run`.
func runFlags(cmd *cobra.Command, o *harness.Options) {
	f := cmd.Flags()
	f.StringVar(&o.Mode, "mode", "", "backend, overriding the scenario's: docker, or kubernetes (the local cluster of `make cluster-up`)")
	f.StringVar(&o.ImagesPath, "images", "build/images.json", "image manifest written by `make images`")
	f.StringVar(&o.ResultsDir, "results", "results", "folder receiving <run>/ and latest")
	f.IntVar(&o.Parallel, "parallel", 0, "users run at once (default: the scenario's)")
	f.Int64("seed", 0, "seed, overriding the scenario's (users' ids and keys, aggregate noise): repeated runs over other seeds measure the noise")
}

// runScenario runs o's scenario, prints the summary and where the report is,
// and fails when an expectation failed.
func runScenario(cmd *cobra.Command, g *globals, o harness.Options) error {
	if f := cmd.Flags().Lookup("seed"); f != nil && f.Changed {
		seed, err := cmd.Flags().GetInt64("seed")
		if err != nil {
			return err
		}
		o.Seed = &seed
	}
	o.Command = shellQuote(append([]string{"upc"}, os.Args[1:]...))
	o.Progress = g.stdout
	o.Logger = g.logger()
	res, err := harness.Run(cmd.Context(), o)
	if res != nil && res.Report != nil {
		fmt.Fprintln(g.stdout)
		report.Table(g.stdout, res.Report)
		if res.Dir != "" {
			fmt.Fprintf(g.stdout, "report: %s\n", res.Dir)
		}
	}
	if err != nil {
		return err
	}
	if res.Failed() {
		return errE2EFailed
	}
	return nil
}

// shellQuote joins args as a shell would need them, for the report.
func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}
