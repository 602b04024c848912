package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/harness/synth"
)

func newSynthCmd(g *globals) *cobra.Command {
	var o synth.Options
	cmd := &cobra.Command{
		Use:   "synth --users N --seed S --out DIR",
		Short: "Make N synthetic users from the real e-mission days (seeded)",
		Long: `Make N synthetic users, each a real e-mission day (round robin over the days
of --source that have a ground truth) moved by a distinct number of whole weeks
and by a small offset in space (uniform within ±--max-offset degrees on each
axis). Writes DIR/user-NNNN (a day file), DIR/user-NNNN.ground_truth (its trips,
moved the same way) and DIR/synth.json (each user's source and shift, trips,
span and first start). The same seed gives byte-identical files; answers to
count queries are known from the moved ground truths.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Source == "" {
				dir, err := scenario.Locate("", ".", ".")
				if err != nil {
					return fmt.Errorf("synth: --source not given and %w", err)
				}
				o.Source = dir
			}
			m, err := synth.Generate(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%d users from %s (seed %d) in %s\n", len(m.Users), o.Source, o.Seed, o.Out)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Users, "users", 0, "number of users to make (1-100000)")
	f.Uint64Var(&o.Seed, "seed", 1, "seed of the users' shifts")
	f.StringVar(&o.Out, "out", "", "output folder (created; must hold nothing but a previous synth output)")
	f.StringVar(&o.Source, "source", "", "folder of real days (default: real_examples found from here or $UPC_REAL_EXAMPLES)")
	f.StringSliceVar(&o.Days, "days", nil, "real days to use (default: every day of --source with a ground truth)")
	f.Float64Var(&o.MaxOffset, "max-offset", 0.05, "largest spatial offset, degrees on each axis")
	return cmd
}
