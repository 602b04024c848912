package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	infraauto "github.com/e-mission/upc/infra/auto"
)

// newInfraCmd drives the infra program (Pulumi.yaml, infra/) through the
// Automation API: the same program `pulumi up` runs, inline, needing only
// the engine and the plugins that `make tools` provides.
func newInfraCmd(g *globals) *cobra.Command {
	var o infraauto.Options
	var sets []string
	cmd := &cobra.Command{
		Use:   "infra",
		Short: "Stand UPC up on Kubernetes (kind, GKE or an existing cluster) with Pulumi",
		Long: `Run the Pulumi program of infra/ on a stack: kind (a kind cluster with our
images loaded), gke (network, firewall, cluster, node pool, Artifact Registry
with our images) or existing (any cluster a kubeconfig names). Each ends with
the service router deployed. The stack's settings come from
Pulumi.<stack>.yaml in --project, then --config. State is kept in a local file
backend under --state (default <project>/.upc/infra); no Pulumi Cloud.`,
	}
	cmd.PersistentFlags().StringVar(&o.Stack, "stack", "", "stack: kind, gke, existing (or one of yours with upc:target)")
	cmd.PersistentFlags().StringVar(&o.ProjectDir, "project", ".", "folder with Pulumi.yaml and Pulumi.<stack>.yaml")
	cmd.PersistentFlags().StringVar(&o.StateDir, "state", "", "local state folder (default <project>/.upc/infra)")
	cmd.PersistentFlags().StringVar(&o.PulumiRoot, "pulumi-root", "", "the engine's install root, holding bin/pulumi (default: tools cache, then PATH)")
	cmd.PersistentFlags().StringArrayVar(&sets, "config", nil, "KEY=VALUE overriding the stack's settings (upc: prefix implied), repeatable")
	_ = cmd.MarkPersistentFlagRequired("stack")

	parse := func() error {
		o.Config = map[string]string{}
		for _, s := range sets {
			k, v, ok := strings.Cut(s, "=")
			if !ok || k == "" {
				return fmt.Errorf("--config %q: want KEY=VALUE", s)
			}
			o.Config[k] = v
		}
		o.Progress = g.stderr
		return nil
	}

	var kubeconfigOut string
	up := &cobra.Command{
		Use:   "up",
		Short: "Create or update the stack's resources and print the router's URL",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := parse(); err != nil {
				return err
			}
			res, err := infraauto.Up(cmd.Context(), o)
			if err != nil {
				return err
			}
			if kubeconfigOut != "" {
				kc, _ := res.Outputs["kubeconfig"].(string)
				if err := os.WriteFile(kubeconfigOut, []byte(kc), 0o600); err != nil {
					return fmt.Errorf("write kubeconfig: %w", err)
				}
			}
			for _, k := range slices.Sorted(func(yield func(string) bool) {
				for k := range res.Outputs {
					if !yield(k) {
						return
					}
				}
			}) {
				if k == "kubeconfig" {
					continue // a secret: --kubeconfig-out writes it
				}
				fmt.Fprintf(g.stdout, "%s: %v\n", k, res.Outputs[k])
			}
			return nil
		},
	}
	up.Flags().StringVar(&kubeconfigOut, "kubeconfig-out", "", "write the cluster's kubeconfig (a secret output) to this file")

	preview := &cobra.Command{
		Use:   "preview",
		Short: "Show what up would change",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := parse(); err != nil {
				return err
			}
			sum, err := infraauto.Preview(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, sum)
			return nil
		},
	}

	var remove bool
	destroy := &cobra.Command{
		Use:   "destroy",
		Short: "Delete every resource of the stack (the kind cluster too)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := parse(); err != nil {
				return err
			}
			return infraauto.Destroy(cmd.Context(), o, remove)
		},
	}
	destroy.Flags().BoolVar(&remove, "remove", false, "also remove the stack's state and settings")

	cmd.AddCommand(up, preview, destroy)
	return cmd
}
