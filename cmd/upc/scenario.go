package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/harness"
	"github.com/e-mission/upc/harness/report"
)

func newScenarioCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scenario",
		Short: "Run a scenario file, or compare two of its runs",
	}
	var o harness.Options
	run := &cobra.Command{
		Use:   "run FILE",
		Short: "Stand UPC up, run the scenario FILE, tear down, report (as upc e2e --scenario FILE)",
		Long: `Run the scenario FILE as upc e2e does: stand UPC up, carry every user through
the scenario's steps, run its aggregate steps (the researcher's aggregator, a
container of its own, over the whole population), tear down, check the
expectations and write <results>/<run>/: report.json, report.md, the figures
(SVG and PDF), the scenario file as given (scenario.yaml) and the logs. The
report records the commit, the tool versions, the machine and every seed: a
second run with the same file gives the same aggregate answers.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.ScenarioPath = args[0]
			return runScenario(cmd, g, o)
		},
	}
	runFlags(run, &o)
	var out string
	compare := &cobra.Command{
		Use:   "compare RUN_A RUN_B",
		Short: "Print a before/after table of two runs and draw it (SVG and PDF)",
		Long: `Compare two runs of upc scenario run (their results folders, or their
report.json): the median time of every phase before and after with the ratio,
and every aggregate's noisy and true answers with whether they are the same.
The table is printed and written with the figure (compare.svg, compare.pdf and,
when the runs have aggregate answers, their error against ε: error.svg,
error.pdf) into --out (default: <results of RUN_B>/compare-<A>-<B>).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := report.Load(args[0])
			if err != nil {
				return err
			}
			b, err := report.Load(args[1])
			if err != nil {
				return err
			}
			dir := out
			if dir == "" {
				dir = filepath.Join(filepath.Dir(filepath.Clean(reportDir(args[1]))), "compare-"+a.Run+"-"+b.Run)
			}
			report.Compare(g.stdout, a, b)
			if err := report.WriteCompare(dir, a, b); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "\ncomparison: %s\n", dir)
			return nil
		},
	}
	compare.Flags().StringVar(&out, "out", "", "folder receiving compare.txt, compare.svg and compare.pdf")
	cmd.AddCommand(run, compare)
	return cmd
}

// reportDir is a run's folder, given it or its report.json.
func reportDir(p string) string {
	if filepath.Base(p) == report.JSONFile {
		return filepath.Dir(p)
	}
	return p
}
