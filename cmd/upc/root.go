package main

import (
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/internal/version"
)

// globals are the flags every subcommand shares.
type globals struct {
	stdout, stderr io.Writer
	logLevel       string
}

func (g *globals) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "upc",
		Short:         "User Private Clouds for e-mission",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	// Each subcommand is built by the constructor in its own file.
	root.AddCommand(
		newAggregateCmd(g),
		newClientCmd(g),
		newCertsCmd(g),
		newClusterCmd(g),
		newConfigCmd(g),
		newE2ECmd(g),
		newImagesCmd(g),
		newPipelineCmd(g),
		newScenarioCmd(g),
		newSynthCmd(g),
		newUserCmd(g),
		newUsersCmd(g),
	)
	root.AddCommand(newInfraCmd(g))
	return root
}
