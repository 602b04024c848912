package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/client/clienttest"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router/api"
)

// TestClientBadInput: each bad invocation of `upc client` fails with a
// message naming the problem, before anything is contacted.
func TestClientBadInput(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty-key")
	os.WriteFile(empty, nil, 0o600)
	badConf := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badConf, []byte("upc_mode: swarm\n"), 0o600)
	t.Setenv("UPC_KEY", "")
	t.Setenv("UPC_KEY_FILE", "")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"launch without key", []string{"client", "launch", "--user", "u"}, "no key"},
		{"launch with empty key file", []string{"client", "launch", "--user", "u", "--key-file", empty}, "is empty"},
		{"launch with missing key file", []string{"client", "launch", "--user", "u", "--key-file", filepath.Join(dir, "nope")}, "read key"},
		{"launch without user", []string{"client", "launch", "--key-file", "/etc/hostname"}, "--user is required"},
		{"upload without pm", []string{"client", "upload", "--user", "u", "day.json"}, "--pm is required"},
		{"upload without file", []string{"client", "upload", "--user", "u", "--pm", "http://127.0.0.1:1"}, "requires at least 1 arg"},
		{"upload of a missing file", []string{"client", "upload", "--user", "u", "--pm", "http://127.0.0.1:1", filepath.Join(dir, "nope")}, "read day file"},
		{"download without pm", []string{"client", "download", "--user", "u"}, "--pm is required"},
		{"pause without id", []string{"client", "pause"}, "accepts 1 arg"},
		{"bad config", []string{"client", "--config", badConf, "pause", "x"}, `upc_mode: "swarm"`},
		{"missing token file", []string{"client", "--token-file", filepath.Join(dir, "nope"), "delete", "x"}, "read router token"},
		{"bad router url", []string{"client", "--router", "::not a url", "resume", "x"}, "router"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), tc.args, &out, &errb)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("upc %s = %v, want an error containing %q", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
}

func TestImagesBuildBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no names", []string{"images", "build", "--bin", dir}, "requires at least 1 arg"},
		{"missing binary", []string{"images", "build", "--bin", dir, "--out", filepath.Join(dir, "m.json"), "pm"}, "is there a cmd/upc-pm?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.args, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("upc %s = %v, want %q", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "m.json")); !os.IsNotExist(err) {
		t.Error("a failed build wrote a manifest")
	}
}

// TestIntegrationClientCommands needs the Docker engine: the `upc client`
// commands, as a user runs them, against a real router and PM.
func TestIntegrationClientCommands(t *testing.T) {
	tr := clienttest.StartRouter(t, "pm")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte("a user's secret\n"), 0o600)
	user := "cli-user"
	upc := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		all := append([]string{"client", "--router", tr.URL, "--user", user}, args...)
		if err := run(context.Background(), all, &out, &errb); err != nil {
			t.Fatalf("upc %s: %v\n%s", strings.Join(all, " "), err, errb.String())
		}
		return out.String()
	}
	var inst api.Instance
	if err := json.Unmarshal([]byte(upc("launch", "--key-file", keyFile)), &inst); err != nil {
		t.Fatal(err)
	}
	if inst.ID == "" || !strings.HasPrefix(inst.Address, "http://") || inst.Digest != tr.Images.Images["pm"].ID {
		t.Fatalf("launch printed %+v", inst)
	}
	day := filepath.Join(realdata.DirT(t), "shankari_2016-08-10")
	if out := upc("upload", "--pm", inst.Address, day); !strings.Contains(out, `"entries": 549`) {
		t.Errorf("upload printed %s", out)
	}
	outFile := filepath.Join(dir, "down.json")
	upc("download", "--pm", inst.Address, "--out", outFile)
	b, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.ParseDay(b)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := client.LoadDay(day)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := client.Prepare(e, user); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.Compare(client.Expected(entries), got); err != nil {
		t.Errorf("downloaded file differs from the uploaded day: %v", err)
	}
	for _, op := range []string{"pause", "resume", "delete"} {
		if out := upc(op, inst.ID); !strings.Contains(out, inst.ID) {
			t.Errorf("%s printed %q", op, out)
		}
	}
	// Gone: a second delete is an error naming the instance.
	var errb bytes.Buffer
	err = run(context.Background(), []string{"client", "--router", tr.URL, "delete", inst.ID}, &bytes.Buffer{}, &errb)
	if err == nil || !strings.Contains(err.Error(), inst.ID) {
		t.Errorf("second delete = %v", err)
	}
}
