package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pipeline/diary"
	gt "github.com/e-mission/upc/services/pipeline/groundtruth"
)

func newPipelineCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "pipeline", Short: "Run e-mission's intake pipeline locally on day files"}
	cmd.AddCommand(newPipelineCheckCmd(g), newPipelineRunCmd(g))
	return cmd
}

// groundTruthDate is the day a ground truth file describes (gt.Day).
func groundTruthDate(path string) (string, error) {
	b, err := realdata.ReadFile(path)
	if err != nil {
		return "", err
	}
	d, err := gt.Day(b)
	if err != nil {
		return "", fmt.Errorf("%w: pass --date", err)
	}
	return d, nil
}

func runDayFile(cmd *cobra.Command, path, date string) ([]gt.Trip, error) {
	f, err := realdata.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return diary.RunFile(cmd.Context(), f, date)
}

func newPipelineCheckCmd(g *globals) *cobra.Command {
	var date string
	var approx, asJSON bool
	cmd := &cobra.Command{
		Use:   "check DAY GROUND_TRUTH",
		Short: "Run the pipeline on an e-mission day file and compare the day's trips with a ground truth",
		Long: `Loads DAY (a JSON array of timeseries entries) into an in-memory store, runs the
whole pipeline as e-mission's tests do, and compares the trips of the ground truth's
day with GROUND_TRUTH using e-mission's exact comparison and its approximate one,
printing per trip and per section what matched and what did not.
It exits non-zero when the exact comparison fails (the approximate one with --approx).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			want, err := gt.Load(args[1])
			if err != nil {
				return err
			}
			if date == "" {
				if date, err = groundTruthDate(args[1]); err != nil {
					return fmt.Errorf("day of %s: %w", args[1], err)
				}
			}
			if _, err := time.Parse("2006-01-02", date); err != nil {
				return fmt.Errorf("--date %q is not YYYY-MM-DD", date)
			}
			t0 := time.Now()
			got, err := runDayFile(cmd, args[0], date)
			if err != nil {
				return err
			}
			took := time.Since(t0)
			exact, appr := gt.CompareExact(want, got), gt.CompareApprox(want, got)
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(map[string]any{"day": args[0], "date": date, "exact": exact, "approx": appr,
					"exact_ok": exact.OK(), "approx_ok": appr.OK()}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "%s (%s): pipeline ran in %s\n", args[0], date, took.Round(time.Millisecond))
				if err := exact.Write(g.stdout); err != nil {
					return err
				}
				if err := appr.Write(g.stdout); err != nil {
					return err
				}
			}
			switch {
			case exact.OK():
				return nil
			case approx && appr.OK():
				return nil
			case approx:
				return fmt.Errorf("%s does not match %s, even approximately (%d failed checks)", args[0], args[1], appr.Failures())
			default:
				return fmt.Errorf("%s does not match %s exactly (%d failed checks)", args[0], args[1], exact.Failures())
			}
		},
	}
	cmd.Flags().StringVar(&date, "date", "", "the day to compare (YYYY-MM-DD); default: the ground truth's")
	cmd.Flags().BoolVar(&approx, "approx", false, "succeed when the approximate comparison passes")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print both reports as JSON")
	return cmd
}

func newPipelineRunCmd(g *globals) *cobra.Command {
	var date string
	cmd := &cobra.Command{
		Use:   "run DAY --date YYYY-MM-DD",
		Short: "Run the pipeline on an e-mission day file and print the day's trips (diary GeoJSON)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := time.Parse("2006-01-02", date); err != nil {
				return fmt.Errorf("--date %q is not YYYY-MM-DD", date)
			}
			got, err := runDayFile(cmd, args[0], date)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(g.stdout)
			return enc.Encode(map[string]any{"data": got, "metadata": map[string]any{"key": "diary/trips-" + date, "type": "document"}})
		},
	}
	cmd.Flags().StringVar(&date, "date", "", "the day (YYYY-MM-DD)")
	return cmd
}
