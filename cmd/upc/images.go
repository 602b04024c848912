package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/internal/version"
)

func newImagesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Short: "Build the FROM scratch service images and record their IDs",
	}
	var binDir, ver, out string
	build := &cobra.Command{
		Use:   "build [flags] NAME...",
		Short: "Build upc/<name>:<version> from the static binary upc-<name> of each NAME",
		Long: `Build one image per NAME, FROM scratch, holding only the static binary
upc-<name> (from --bin, or compiled from ./cmd/upc-<name> with CGO_ENABLED=0
when --bin is empty). No base image is pulled. The image IDs are written to
--out, which the router uses to pin the catalog's images.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, names []string) error {
			ctx := cmd.Context()
			log := g.logger()
			if binDir == "" {
				tmp, err := os.MkdirTemp("", "upc-bin-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				wd, err := os.Getwd()
				if err != nil {
					return err
				}
				for _, n := range names {
					if _, err := images.CompileService(ctx, images.CompileOptions{ModuleDir: wd, OutDir: tmp, Version: ver}, n); err != nil {
						return err
					}
				}
				binDir = tmp
			}
			d, err := images.NewDocker()
			if err != nil {
				return err
			}
			defer d.Close()
			m, err := images.BuildAll(ctx, d, binDir, ver, names, nil)
			if err != nil {
				return err
			}
			if err := m.Save(out); err != nil {
				return err
			}
			for _, n := range names {
				im := m.Images[n]
				log.Debug("image built", "name", n, "ref", im.Ref, "id", im.ID)
				fmt.Fprintf(g.stdout, "%-10s %-28s %s\n", n, im.Ref, im.ID)
			}
			abs, _ := filepath.Abs(out)
			fmt.Fprintf(g.stdout, "manifest: %s\n", abs)
			return nil
		},
	}
	build.Flags().StringVar(&binDir, "bin", "", "folder holding the static binaries upc-<name> (empty: compile them)")
	build.Flags().StringVar(&ver, "version", version.Version, "version to tag the images with")
	build.Flags().StringVar(&out, "out", "build/images.json", "where to write the image manifest")
	cmd.AddCommand(build)
	return cmd
}
