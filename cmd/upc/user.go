package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/router/api"
)

// newUserCmd is `upc user`: what a user does with their stored data, the
// volume or claim their PM leaves behind, as its owner (their router token,
// their PM's owner credential, their key).
func newUserCmd(g *globals) *cobra.Command {
	f := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "user",
		Short: "The user's stored data: export it (decrypted, to a file in the original's JSON form) or erase it for good",
	}
	f.register(cmd)
	printJSON := func(v any) error {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}

	var out, keyFile string
	export := &cobra.Command{
		Use:   "export --user USER --out FILE",
		Short: "Write every entry of the user's PM, decrypted, to FILE as one JSON array (the form the original scripts upload)",
		Long: `Export reads everything the user's PM holds, as its owner, and writes the entries to FILE as one JSON
array in the original e-mission form (what upc client upload and the original upload_data.py take). If the
user's PM runs, its owner credential is needed (--pm-secret-file), and the key if it is sealed; if none runs, a
PM is launched on the user's stored data, unsealed with the key (--key-file, $UPC_KEY_FILE or $UPC_KEY), and
deleted once the file is written. FILE is written whole or not at all (a temporary file beside it, renamed),
readable by its owner only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if err := checkExportArgs(f.user, out); err != nil {
				return err
			}
			c, err := f.userClient(true)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			pm, launched, err := exportPM(ctx, c, f.pmSecretFile, keyFile)
			if err != nil {
				return err
			}
			if launched {
				defer func() {
					dctx := context.WithoutCancel(ctx)
					if derr := c.Delete(dctx, pm.ID); derr != nil {
						err = errors.Join(err, fmt.Errorf("delete the pm %s launched for the export: %w", pm.ID, derr))
					}
				}()
			}
			exp, err := c.ExportAll(ctx, pm.Address)
			if err != nil {
				return err
			}
			b, err := json.MarshalIndent(exp.Entries, "", "    ")
			if err != nil {
				return fmt.Errorf("export: %w", err)
			}
			if err := writeFileAtomic(out, append(b, '\n')); err != nil {
				return fmt.Errorf("export: %w", err)
			}
			g.logger().Info("exported", "user", f.user, "entries", len(exp.Entries), "out", out, "pm", pm.ID, "launched", launched)
			return printJSON(map[string]any{"user": f.user, "out": out, "entries": len(exp.Entries),
				"collections": exp.Collections, "skipped": exp.Skipped, "pm": pm.ID, "launched": launched})
		},
	}
	export.Flags().StringVar(&out, "out", "", "the file to write (required; replaced whole, mode 0600)")
	export.Flags().StringVar(&keyFile, "key-file", "", "file holding the user's key, to unseal their PM (default: $UPC_KEY_FILE, then $UPC_KEY)")

	var yes, deletePM bool
	erase := &cobra.Command{
		Use:   "erase --user USER --yes",
		Short: "Destroy the user's stored data for good: their volume (Docker) or claim (Kubernetes), and every file of it",
		Long: `Erase destroys the user's stored data: the router removes their per-user volumes (Docker) or claims
(Kubernetes) and what they hold. It is refused while the user's PM runs or is paused (the answer names it):
delete it first, or give --delete-pm to have it deleted. Nothing can bring the data back; export it first if it
is wanted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var errs []error
			if f.user == "" {
				errs = append(errs, errors.New("--user is required"))
			}
			if !yes {
				errs = append(errs, errors.New("--yes is required: erase destroys the user's stored data for good (export it first if it is wanted)"))
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
			c, err := f.userClient(true)
			if err != nil {
				return err
			}
			st, err := c.Erase(cmd.Context(), deletePM)
			if err != nil {
				return err
			}
			names := make([]string, len(st.Volumes))
			for i, v := range st.Volumes {
				names[i] = v.Name
			}
			if len(names) == 0 {
				fmt.Fprintf(g.stderr, "%s has no stored data: nothing to erase\n", f.user)
			}
			g.logger().Info("erased", "user", f.user, "volumes", names)
			return printJSON(map[string]any{"user": f.user, "erased": st.Volumes})
		},
	}
	erase.Flags().BoolVar(&yes, "yes", false, "confirm: the data cannot be brought back")
	erase.Flags().BoolVar(&deletePM, "delete-pm", false, "delete the user's running PM first (else the erase is refused while it runs)")

	cmd.AddCommand(export, erase)
	return cmd
}

// checkExportArgs refuses, before anything is contacted, an export that
// could not write its file.
func checkExportArgs(user, out string) error {
	var errs []error
	if user == "" {
		errs = append(errs, errors.New("--user is required"))
	}
	if out == "" || out == "-" {
		errs = append(errs, errors.New("--out FILE is required (the export is written to a file, whole or not at all)"))
	} else {
		if fi, err := os.Stat(out); err == nil && fi.IsDir() {
			errs = append(errs, fmt.Errorf("--out %s is a directory: name the file to write", out))
		}
		if fi, err := os.Stat(filepath.Dir(out)); err != nil || !fi.IsDir() {
			errs = append(errs, fmt.Errorf("--out %s: its directory %s does not exist", out, filepath.Dir(out)))
		}
	}
	return errors.Join(errs...)
}

// exportPM is the user's PM to export from, unsealed: the running one (its
// owner credential from secretFile, the key if it is sealed), else one
// launched on their stored data with their key (launched: the caller
// deletes it). A user with no stored data has nothing to export.
func exportPM(ctx context.Context, c *client.Client, secretFile, keyFile string) (pm api.Instance, launched bool, err error) {
	ins, err := c.Router.List(ctx, c.User)
	if err != nil {
		return api.Instance{}, false, fmt.Errorf("export: find %s's pm: %w", c.User, err)
	}
	for _, in := range ins {
		if !strings.EqualFold(in.Service, client.PMService) {
			continue
		}
		if c.PMSecret, err = pmSecret(secretFile); err != nil {
			return api.Instance{}, false, fmt.Errorf("export: %s's pm %s runs: give its owner credential (%w), or delete it and export again", c.User, in.ID, err)
		}
		st, err := c.PM(in.Address).Status(ctx)
		if err != nil {
			return api.Instance{}, false, fmt.Errorf("export: %s's pm %s: %w", c.User, in.ID, err)
		}
		if st.Sealed {
			key, err := userKey(keyFile)
			if err != nil {
				return api.Instance{}, false, fmt.Errorf("export: %s's pm %s is sealed: %w", c.User, in.ID, err)
			}
			if err := c.PM(in.Address).Unseal(ctx, key); err != nil {
				return api.Instance{}, false, fmt.Errorf("export: unseal %s's pm %s: %w", c.User, in.ID, err)
			}
		}
		return in, false, nil
	}
	stored, err := c.Stored(ctx)
	if err != nil {
		return api.Instance{}, false, fmt.Errorf("export: %w", err)
	}
	if len(stored.Volumes) == 0 {
		return api.Instance{}, false, fmt.Errorf("export: %s has no stored data: nothing to export", c.User)
	}
	key, err := userKey(keyFile)
	if err != nil {
		return api.Instance{}, false, fmt.Errorf("export: no pm of %s's runs, so one is launched and unsealed: %w", c.User, err)
	}
	pm, err = c.LaunchPM(ctx, key)
	if err != nil {
		return api.Instance{}, false, fmt.Errorf("export: %w", err)
	}
	return pm, true, nil
}
