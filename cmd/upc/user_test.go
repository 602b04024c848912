package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/client/clienttest"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router/api"
)

// dirNames lists dir's entries, to show nothing was written beside them.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// TestUserBadInput: each bad invocation of `upc user` fails with a message
// naming the problem, before anything is contacted (the router given does
// not exist) and without writing anything.
func TestUserBadInput(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "old.json"), []byte("[]\n"), 0o600)
	t.Setenv("UPC_KEY", "")
	t.Setenv("UPC_KEY_FILE", "")
	t.Setenv("UPC_PM_SECRET", "")
	t.Setenv("UPC_PM_SECRET_FILE", "")
	nowhere := []string{"--router", "https://127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"export without out", []string{"user", "export", "--user", "u"}, "--out FILE is required"},
		{"export to standard output", []string{"user", "export", "--user", "u", "--out", "-"}, "--out FILE is required"},
		{"export without user", []string{"user", "export", "--out", filepath.Join(dir, "x.json")}, "--user is required"},
		{"export without user nor out names both", []string{"user", "export"}, "--user is required\n--out FILE is required"},
		{"export into a directory", []string{"user", "export", "--user", "u", "--out", dir}, "is a directory"},
		{"export into a missing directory", []string{"user", "export", "--user", "u", "--out", filepath.Join(dir, "nope", "x.json")}, "does not exist"},
		{"export with an argument", []string{"user", "export", "--user", "u", "--out", filepath.Join(dir, "x.json"), "extra"}, "unknown command"},
		{"export with a missing token file", []string{"user", "--token-file", filepath.Join(dir, "nope"), "export", "--user", "u", "--out", filepath.Join(dir, "x.json")}, "read router token"},
		{"export from a router that is not there", append(nowhere, "user", "export", "--user", "u", "--out", filepath.Join(dir, "old.json")), "find u's pm"},
		{"erase without yes", []string{"user", "erase", "--user", "u"}, "--yes is required"},
		{"erase without user nor yes names both", []string{"user", "erase"}, "--user is required\n--yes is required"},
		{"erase with an argument", []string{"user", "erase", "--user", "u", "--yes", "u"}, "unknown command"},
		{"erase at a router that is not there", append(nowhere, "user", "erase", "--user", "u", "--yes"), "erase u's data"},
		{"unknown subcommand", []string{"user", "restore"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), tc.args, &out, &errb)
			if tc.want == "" {
				// cobra prints the usage of `upc user` for an unknown
				// subcommand of a command without RunE; nothing runs.
				if !strings.Contains(out.String()+errb.String(), "Available Commands") {
					t.Errorf("upc %s: %v, printed %q", strings.Join(tc.args, " "), err, out.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("upc %s = %v, want an error containing %q", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"old.json"}) {
		t.Errorf("the refused commands left %v in the output folder", got)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "old.json")); string(b) != "[]\n" {
		t.Errorf("a refused export changed the existing file: %q", b)
	}
}

// TestIntegrationUserCommands needs the Docker engine: `upc user export`
// and `erase` as a user runs them, against a real router and PM. The export
// of a running PM needs its owner credential; with it, the file holds the
// uploaded day in the original's form. With no PM running, export launches
// one with the key and deletes it after; a wrong key writes nothing. Erase
// is refused while the PM runs, then with --delete-pm removes the data, and
// an export finds nothing to write.
func TestIntegrationUserCommands(t *testing.T) {
	tr := clienttest.StartRouter(t, "pm")
	dir, outDir := t.TempDir(), t.TempDir()
	keyFile, wrongKey := filepath.Join(dir, "key"), filepath.Join(dir, "wrong-key")
	os.WriteFile(keyFile, []byte("the exporting user's secret\n"), 0o600)
	os.WriteFile(wrongKey, []byte("not the secret\n"), 0o600)
	t.Setenv("UPC_KEY", "")
	t.Setenv("UPC_KEY_FILE", "")
	t.Setenv("UPC_PM_SECRET", "")
	t.Setenv("UPC_PM_SECRET_FILE", "")
	user := "cli-export-user"
	tokenFile, secretFile := filepath.Join(dir, "token"), filepath.Join(dir, "pm-secret")
	os.WriteFile(tokenFile, []byte(tr.AddUser(t, user, api.RoleUser)+"\n"), 0o600)
	upcErr := func(cmd string, args ...string) (string, error) {
		t.Helper()
		var out, errb bytes.Buffer
		all := append([]string{cmd, "--router", tr.URL, "--ca", tr.CAFile, "--token-file", tokenFile, "--user", user}, args...)
		err := run(context.Background(), all, &out, &errb)
		if err != nil {
			t.Logf("upc %s: %v", strings.Join(all, " "), err)
		}
		return out.String(), err
	}
	upc := func(cmd string, args ...string) string {
		t.Helper()
		out, err := upcErr(cmd, args...)
		if err != nil {
			t.Fatalf("upc %s %s: %v", cmd, strings.Join(args, " "), err)
		}
		return out
	}

	var inst api.Instance
	if err := json.Unmarshal([]byte(upc("client", "launch", "--key-file", keyFile, "--secret-out", secretFile)), &inst); err != nil {
		t.Fatal(err)
	}
	day := filepath.Join(realdata.DirT(t), "shankari_2015-08-23")
	upc("client", "upload", "--pm-secret-file", secretFile, "--pm", inst.Address, day)
	entries, err := client.LoadDay(day)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := client.Prepare(e, user); err != nil {
			t.Fatal(err)
		}
	}
	want := client.Expected(entries)
	check := func(path string) {
		t.Helper()
		got, err := client.LoadDay(path)
		if err != nil {
			t.Fatalf("the export is not a day file: %v", err)
		}
		for i, e := range got {
			id, _ := e["_id"].(map[string]any)
			if _, ok := id["$oid"].(string); !ok {
				t.Fatalf("exported entry %d has _id %v, want {\"$oid\": ...}", i, e["_id"])
			}
			if _, err := client.Prepare(e, user); err != nil {
				t.Fatalf("exported entry %d does not upload: %v", i, err)
			}
		}
		if err := client.Compare(want, client.Expected(got)); err != nil {
			t.Fatalf("the export differs from the upload: %v", err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("export file mode: %v %v, want 0600", fi, err)
		}
	}

	running := filepath.Join(outDir, "running.json")
	if _, err := upcErr("user", "export", "--out", running); err == nil || !strings.Contains(err.Error(), "pm "+inst.ID+" runs") {
		t.Fatalf("export of a running PM without its credential: %v, want an error naming it", err)
	}
	var res struct {
		Entries  int  `json:"entries"`
		Launched bool `json:"launched"`
	}
	if err := json.Unmarshal([]byte(upc("user", "--pm-secret-file", secretFile, "export", "--out", running)), &res); err != nil {
		t.Fatal(err)
	}
	if res.Entries != len(want) || res.Launched {
		t.Errorf("export printed %+v, want %d entries from the running PM", res, len(want))
	}
	check(running)
	if _, err := upcErr("user", "erase", "--yes"); err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), inst.ID) {
		t.Fatalf("erase while the PM runs: %v, want 409 naming it", err)
	}

	upc("client", "delete", inst.ID)
	if _, err := upcErr("user", "export", "--key-file", wrongKey, "--out", filepath.Join(outDir, "wrong.json")); err == nil || !strings.Contains(err.Error(), "wrong key") {
		t.Fatalf("export with a wrong key: %v", err)
	}
	stopped := filepath.Join(outDir, "stopped.json")
	if err := json.Unmarshal([]byte(upc("user", "export", "--key-file", keyFile, "--out", stopped)), &res); err != nil {
		t.Fatal(err)
	}
	if res.Entries != len(want) || !res.Launched {
		t.Errorf("export printed %+v, want %d entries from a PM it launched", res, len(want))
	}
	check(stopped)
	if got := dirNames(t, outDir); !slices.Equal(got, []string{"running.json", "stopped.json"}) {
		t.Errorf("the output folder holds %v: a failed export left something", got)
	}
	if ins, err := tr.Client(t, tr.AdminToken).List(context.Background(), user); err != nil || len(ins) != 0 {
		t.Errorf("after the exports the router lists %+v %v, want the PMs they launched deleted", ins, err)
	}

	// Erase, the PM deleted first; then there is nothing to export.
	upc("client", "launch", "--key-file", keyFile, "--secret-out", filepath.Join(dir, "pm-secret-2"))
	var erased struct {
		Erased []api.StoredVolume `json:"erased"`
	}
	if err := json.Unmarshal([]byte(upc("user", "erase", "--yes", "--delete-pm")), &erased); err != nil {
		t.Fatal(err)
	}
	if len(erased.Erased) != 1 || erased.Erased[0].Volume != "data" {
		t.Errorf("erase printed %+v, want the user's data volume", erased)
	}
	if _, err := upcErr("user", "export", "--key-file", keyFile, "--out", filepath.Join(outDir, "after.json")); err == nil || !strings.Contains(err.Error(), "no stored data") {
		t.Errorf("export after the erase: %v, want nothing to export", err)
	}
	if out := upc("user", "erase", "--yes"); !strings.Contains(out, `"erased": []`) {
		t.Errorf("a second erase printed %s", out)
	}
}
