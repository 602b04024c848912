package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/routerclient"
)

// usersFlags are the flags of `upc users`: which router, and the admin's
// token.
type usersFlags struct {
	config    string
	routerURL string
	tokenFile string
	caFile    string
}

// client builds the admin's router client: --router (else the config's
// router URL), bearing the token of --token-file (else the config's
// router.admin_token_file, or its deprecated name router.token_file).
func (f *usersFlags) client() (*routerclient.Client, error) {
	cfg, err := (&clientFlags{config: f.config}).load()
	if err != nil {
		return nil, err
	}
	hc, err := httpClient(cfg, f.caFile)
	if err != nil {
		return nil, err
	}
	hc.Timeout = 30 * time.Second
	base := f.routerURL
	if base == "" {
		base = cfg.RouterURL()
	}
	tokenFile := f.tokenFile
	if tokenFile == "" && cfg.Router.AdminToken() != "" {
		tokenFile = cfg.Path(cfg.Router.AdminToken())
	}
	if tokenFile == "" {
		return nil, errors.New("--token-file is required (a file holding an admin's token)")
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("read router token: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return nil, fmt.Errorf("token file %s is empty", tokenFile)
	}
	return routerclient.New(base, routerclient.WithHTTPClient(hc), routerclient.WithToken(token))
}

func newUsersCmd(g *globals) *cobra.Command {
	f := &usersFlags{}
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Manage the router's identities (admin): add prints a new token once, list, remove revokes",
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.config, "config", "", "UPC configuration file (default: built-in defaults)")
	pf.StringVar(&f.routerURL, "router", "", "router base URL (default: from the configuration)")
	pf.StringVar(&f.tokenFile, "token-file", "", "file holding an admin's token (default: router.admin_token_file)")
	pf.StringVar(&f.caFile, "ca", "", "CA certificate to verify the router with (default: certificate_bundle_path)")

	var role string
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Create an identity and print its token (shown this once; the router keeps only its hash)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch role {
			case api.RoleUser, api.RoleResearcher, api.RoleAdmin, api.RoleMonitor:
			default:
				return fmt.Errorf("--role %q: want %s, %s, %s or %s", role, api.RoleUser, api.RoleResearcher, api.RoleAdmin, api.RoleMonitor)
			}
			rc, err := f.client()
			if err != nil {
				return err
			}
			u, err := rc.AddUser(cmd.Context(), args[0], role)
			if err != nil {
				return fmt.Errorf("add user %s: %w", args[0], err)
			}
			fmt.Fprintf(g.stderr, "added %s (%s); its token follows, shown only now: keep it in a file of mode 0600\n", u.Name, u.Role)
			fmt.Fprintln(g.stdout, u.Token)
			return nil
		},
	}
	add.Flags().StringVar(&role, "role", api.RoleUser, "user, researcher, admin or monitor (reads the router's /metrics only)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the identities (names, roles, creation times; never tokens)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rc, err := f.client()
			if err != nil {
				return err
			}
			us, err := rc.Users(cmd.Context())
			if err != nil {
				return fmt.Errorf("list users: %w", err)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tCREATED")
			for _, u := range us {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, u.Role, u.Created.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}

	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove an identity: its token stops working at once (its instances stay)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := f.client()
			if err != nil {
				return err
			}
			if err := rc.RemoveUser(cmd.Context(), args[0]); err != nil {
				return fmt.Errorf("remove user %s: %w", args[0], err)
			}
			fmt.Fprintf(g.stderr, "removed %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(add, list, remove)
	return cmd
}
