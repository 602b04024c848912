package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/images"
)

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check a UPC configuration file",
	}
	var asJSON bool
	check := &cobra.Command{
		Use:   "check [FILE]",
		Short: "Load FILE (default: built-in defaults) as every component does, report every problem, print the result",
		Long: `Load a configuration (JSON or YAML, the original machines.json names or
UPC's own) strictly, with defaults, and validate it: every problem is reported
at once, each naming its field. On success print the router's URL, the machines
with their agent URLs and weights, and the catalog's services with the images
they are pinned to; --json prints the whole effective configuration instead.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := conf.Default()
			if len(args) == 1 {
				var err error
				if cfg, err = conf.Load(args[0]); err != nil {
					return err
				}
			}
			cat, err := cfg.LoadCatalog()
			if err != nil {
				return err
			}
			var unpinned []string
			if cfg.Images != "" {
				m, err := images.LoadManifest(cfg.Path(cfg.Images))
				if err != nil {
					return err
				}
				unpinned = m.Pin(cat)
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					*conf.Config
					Services []conf.Service `json:"services"`
				}{cfg, cat.Services})
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "router\t%s\t(listen %s, mode %s, network %s)\n", cfg.RouterURL(), cfg.Router.Listen, cfg.UPCMode, cfg.Network)
			for _, m := range cfg.MachineList() {
				where := m.URL
				if m.Local {
					where = "the router's own Docker engine"
				}
				fmt.Fprintf(w, "machine %s\tweight %g\t%s\n", m.Address, m.Weight, where)
			}
			for _, s := range cat.Services {
				img := s.Image
				if s.Digest != "" {
					img += "@" + s.Digest
				}
				fmt.Fprintf(w, "service %s\tport %d\t%s\n", s.Name, s.Port, img)
			}
			if len(unpinned) > 0 {
				fmt.Fprintf(w, "not pinned\t%v\t(no image in %s)\n", unpinned, cfg.Images)
			}
			return w.Flush()
		},
	}
	check.Flags().BoolVar(&asJSON, "json", false, "print the effective configuration as JSON")
	cmd.AddCommand(check)
	return cmd
}
