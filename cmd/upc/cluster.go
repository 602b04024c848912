package main

import (
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/harness/cluster"
	"github.com/e-mission/upc/internal/images"
)

func newClusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "A local Kubernetes (control plane, kwok nodes, a real node) for kubernetes mode",
		Long: `The local cluster is built from the Go module proxy (Kubernetes ` + cluster.KubernetesVersion + `, etcd ` +
			cluster.EtcdVersion + `, kwok ` + cluster.KwokVersion + `) into a versioned cache ($UPC_CACHE, default
~/.cache/upc/k8s-...), reused when present. Its state (certificates, kubeconfigs,
logs) lives in $UPC_CLUSTER_DIR (default ~/.cache/upc/cluster). Needs root.`,
	}
	var nodes, manifest string
	var fake int
	var reuse bool
	var imgs []string
	up := &cobra.Command{
		Use:   "up",
		Short: "Build the binaries if needed and start the cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := clusterOptions()
			if err != nil {
				return err
			}
			o.Nodes, o.FakeNodes, o.Images = nodes, fake, imgs
			if manifest != "" && nodes != cluster.NodesFake {
				m, err := images.LoadManifest(manifest)
				if err != nil {
					return err
				}
				for _, n := range slices.Sorted(maps.Keys(m.Images)) {
					o.Images = append(o.Images, m.Images[n].Ref)
				}
			}
			if reuse && cluster.Running(o.Dir) {
				if nodes != cluster.NodesFake {
					if !cluster.HasRealNode(o.Dir) {
						return fmt.Errorf("cluster up --reuse: the running cluster has no real node (upc cluster down, then up --nodes %s)", nodes)
					}
					if err := cluster.LoadImages(cmd.Context(), g.logger(), o.Dir, o.Images...); err != nil {
						return err
					}
				}
				g.logger().Info("cluster already up: reused", "dir", o.Dir)
			} else if err := cluster.Up(cmd.Context(), g.logger(), o); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "export KUBECONFIG=%s\n", cluster.Kubeconfig(o.Dir))
			return nil
		},
	}
	up.Flags().StringVar(&nodes, "nodes", cluster.NodesBoth, "fake (kwok), real (kubelet + containerd) or both")
	up.Flags().IntVar(&fake, "fake-nodes", 4, "how many kwok nodes")
	up.Flags().StringVar(&manifest, "images", "", "image manifest (build/images.json) whose images the real node gets")
	up.Flags().StringSliceVar(&imgs, "image", nil, "more Docker images the real node gets")
	up.Flags().BoolVar(&reuse, "reuse", false, "if a cluster is up already, only load the images into its node")
	down := &cobra.Command{
		Use:   "down",
		Short: "Stop every process of the cluster and remove its chains, network and files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := clusterOptions()
			if err != nil {
				return err
			}
			return cluster.Down(cmd.Context(), g.logger(), o.Dir)
		},
	}
	build := &cobra.Command{
		Use:   "build",
		Short: "Build the cluster binaries into the cache (skipped when present)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := clusterOptions()
			if err != nil {
				return err
			}
			if err := cluster.Build(cmd.Context(), g.logger(), o.Cache); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, cluster.BinDir(o.Cache))
			return nil
		},
	}
	load := &cobra.Command{
		Use:   "load IMAGE...",
		Short: "Copy Docker images into the real node's containerd",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, refs []string) error {
			o, err := clusterOptions()
			if err != nil {
				return err
			}
			return cluster.LoadImages(cmd.Context(), g.logger(), o.Dir, refs...)
		},
	}
	cmd.AddCommand(up, down, build, load)
	return cmd
}

func clusterOptions() (cluster.Options, error) {
	c, err := cluster.CacheDir()
	if err != nil {
		return cluster.Options{}, err
	}
	d, err := cluster.StateDir()
	if err != nil {
		return cluster.Options{}, err
	}
	if _, err := os.Stat(d); err != nil && !os.IsNotExist(err) {
		return cluster.Options{}, err
	}
	return cluster.Options{Cache: c, Dir: d}, nil
}
