package main

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	infraauto "github.com/e-mission/upc/infra/auto"
)

// options are the flags every subcommand shares.
type options struct {
	auto infraauto.Options
	sets []string // --config KEY=VALUE
}

// parse is the Automation API's options: the --config overrides split, the
// engine's progress to progress.
func (o *options) parse(progress io.Writer) (infraauto.Options, error) {
	a := o.auto
	a.Config = map[string]string{}
	for _, s := range o.sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return a, fmt.Errorf("--config %q: want KEY=VALUE", s)
		}
		a.Config[k] = v
	}
	a.Progress = progress
	return a, nil
}

// newInfraCmd drives the infra program (Pulumi.yaml, infra/) through the
// Automation API: the same program `pulumi up` runs, inline, needing only
// the engine and the plugins that `make tools` provides.
func newInfraCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &options{}
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
	f := cmd.PersistentFlags()
	f.StringVar(&o.auto.Stack, "stack", "", "stack: kind, gke, existing (or one of yours with upc:target)")
	f.StringVar(&o.auto.ProjectDir, "project", ".", "folder with Pulumi.yaml and Pulumi.<stack>.yaml")
	f.StringVar(&o.auto.StateDir, "state", "", "local state folder (default <project>/.upc/infra)")
	f.StringVar(&o.auto.PulumiRoot, "pulumi-root", "", "the engine's install root, holding bin/pulumi (default: tools cache, then PATH)")
	f.StringArrayVar(&o.sets, "config", nil, "KEY=VALUE overriding the stack's settings (upc: prefix implied), repeatable")
	_ = cmd.MarkPersistentFlagRequired("stack")
	cmd.AddCommand(newUpCmd(o, stdout, stderr), newPreviewCmd(o, stdout, stderr), newDestroyCmd(o, stderr))
	return cmd
}

func newUpCmd(o *options, stdout, stderr io.Writer) *cobra.Command {
	var kubeconfigOut, adminTokenFile, caOut string
	up := &cobra.Command{
		Use:   "up",
		Short: "Create or update the stack's resources and print the router's URL",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := o.parse(stderr)
			if err != nil {
				return err
			}
			res, err := infraauto.Up(cmd.Context(), a)
			if err != nil {
				return err
			}
			if kubeconfigOut != "" {
				kc, _ := res.Outputs["kubeconfig"].(string)
				if err := os.WriteFile(kubeconfigOut, []byte(kc), 0o600); err != nil {
					return fmt.Errorf("write kubeconfig: %w", err)
				}
			}
			if adminTokenFile != "" {
				tok, _ := res.Outputs["adminToken"].(string)
				if tok == "" {
					return fmt.Errorf("write admin token: the stack exported none")
				}
				if err := writeSecretFile(adminTokenFile, tok+"\n"); err != nil {
					return fmt.Errorf("write admin token: %w", err)
				}
			}
			if caOut != "" {
				ca, _ := res.Outputs["caCert"].(string)
				if ca == "" {
					return fmt.Errorf("write CA certificate: the stack exported none")
				}
				if err := os.WriteFile(caOut, []byte(strings.TrimSpace(ca)+"\n"), 0o644); err != nil {
					return fmt.Errorf("write CA certificate: %w", err)
				}
			}
			for _, k := range slices.Sorted(maps.Keys(res.Outputs)) {
				if k == "kubeconfig" || res.Secrets[k] {
					// Secrets are not printed: --kubeconfig-out and
					// --admin-token-file write them.
					fmt.Fprintf(stdout, "%s: [secret]\n", k)
					continue
				}
				if k == "caCert" {
					// A PEM block: its name and fingerprint, --ca-out writes it.
					s, _ := res.Outputs[k].(string)
					fmt.Fprintf(stdout, "%s: %s\n", k, describeCert(s))
					continue
				}
				fmt.Fprintf(stdout, "%s: %v\n", k, res.Outputs[k])
			}
			return nil
		},
	}
	up.Flags().StringVar(&kubeconfigOut, "kubeconfig-out", "", "write the cluster's kubeconfig (a secret output) to this file")
	up.Flags().BoolVar(&o.auto.RotateCA, "rotate-ca", false, "replace the stack's CA with a new one (the router is rolled with it; instances launched before must be relaunched, clients need the new caCert)")
	up.Flags().StringVar(&caOut, "ca-out", "", "write the stack's CA certificate (the caCert output, PEM) to this file: what clients verify the router and the instances with (`upc client --ca FILE`)")
	up.Flags().StringVar(&adminTokenFile, "admin-token-file", "", "write the router's admin token (a secret output) to this file, mode 0600 (the token file of `upc users --token-file`)")
	return up
}

// describeCert names a PEM certificate by its subject and SHA-256
// fingerprint, to compare with the file --ca-out wrote.
func describeCert(pemText string) string {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return "[not a PEM certificate]"
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "[not a certificate: " + err.Error() + "]"
	}
	sum := sha256.Sum256(block.Bytes)
	return fmt.Sprintf("%q, SHA-256 %s, valid until %s (--ca-out FILE writes it)",
		c.Subject.CommonName, hex.EncodeToString(sum[:]), c.NotAfter.UTC().Format(time.DateOnly))
}

// writeSecretFile writes s to path readable by its owner alone, whatever
// mode an earlier file there had.
func writeSecretFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newPreviewCmd(o *options, stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "preview",
		Short: "Show what up would change",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := o.parse(stderr)
			if err != nil {
				return err
			}
			sum, err := infraauto.Preview(cmd.Context(), a)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, sum)
			return nil
		},
	}
}

func newDestroyCmd(o *options, stderr io.Writer) *cobra.Command {
	var remove bool
	destroy := &cobra.Command{
		Use:   "destroy",
		Short: "Delete every resource of the stack (the kind cluster too)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := o.parse(stderr)
			if err != nil {
				return err
			}
			return infraauto.Destroy(cmd.Context(), a, remove)
		},
	}
	destroy.Flags().BoolVar(&remove, "remove", false, "also remove the stack's state and settings")
	return destroy
}
