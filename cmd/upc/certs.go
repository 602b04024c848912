package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/internal/certs"
)

// newCertsCmd is `upc certs`: the operator's CA and the certificates of
// the router and the machine agents (instances get theirs from the router).
func newCertsCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "The operator's certificate authority: init makes it, issue makes router and agent certificates",
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "certs", "folder of the CA (ca.crt, ca.key) and the certificates issued")

	var caName string
	var caTTL time.Duration
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Make a CA in --dir (ca.crt to give every host and client, ca.key 0600 for the router alone)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := certs.NewCA(caName, caTTL)
			if err != nil {
				return err
			}
			if err := ca.Save(dir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA %q made in %s (%s, %s), valid until %s\n", caName, dir,
				certs.CACertFile, certs.CAKeyFile, ca.Cert.NotAfter.Format(time.DateOnly))
			return nil
		},
	}
	initCmd.Flags().StringVar(&caName, "name", "UPC operator CA", "the CA's name")
	initCmd.Flags().DurationVar(&caTTL, "ttl", certs.DefaultCATTL, "how long the CA lasts")

	var hosts []string
	var server, client bool
	var ttl time.Duration
	issue := &cobra.Command{
		Use:   "issue NAME",
		Short: "Issue NAME.crt and NAME.key (0600) from the CA in --dir, for the --host names and addresses",
		Long: "Issue a certificate from the CA in --dir: the router's (--host: the names and addresses clients use\n" +
			"to reach it), an agent's (--host: its advertised address), or a client's (--client, no --server).\n" +
			"Instances never need one: the router issues each its own at launch.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if name == "" || strings.ContainsAny(name, `/\`) || name == "ca" {
				return fmt.Errorf("certificate name %q: want a plain name other than ca (it names NAME.crt and NAME.key)", name)
			}
			if !server && !client {
				return errors.New("--server=false needs --client: a certificate must be for something")
			}
			ca, err := certs.LoadCA(filepath.Join(dir, certs.CACertFile), filepath.Join(dir, certs.CAKeyFile))
			if err != nil {
				return fmt.Errorf("%w (run `upc certs init --dir %s` first)", err, dir)
			}
			c, k, err := ca.Issue(certs.Request{Name: name, Hosts: hosts, Server: server, Client: client, TTL: ttl})
			if err != nil {
				return err
			}
			if err := certs.WriteNew(dir, map[string]certs.File{name + ".crt": {Data: c, Mode: 0o644}, name + ".key": {Data: k, Mode: 0o600}}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "issued %s.crt and %s.key in %s for %s\n", name, name, dir, strings.Join(append([]string{name}, hosts...), ", "))
			return nil
		},
	}
	issue.Flags().StringSliceVar(&hosts, "host", nil, "DNS names or IP addresses the certificate is valid for (repeat or comma-separate)")
	issue.Flags().BoolVar(&server, "server", true, "for a server (the router, an agent)")
	issue.Flags().BoolVar(&client, "client", false, "for a client too")
	issue.Flags().DurationVar(&ttl, "ttl", certs.DefaultTTL, "how long the certificate lasts")

	cmd.AddCommand(initCmd, issue)
	_ = g
	return cmd
}
