package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/e-mission/upc/infra/auto"
)

// The command's flags and subcommands are `upc infra`'s, and its argument
// errors come before any engine is looked for.
func TestCommandLine(t *testing.T) {
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		cmd := newRootCmd(&out, &out)
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}
	help, err := run("--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"upc-infra", "up ", "preview", "destroy", "--stack", "--project", "--state", "--pulumi-root", "--config", "--log-level"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	if help, _ := run("up", "--help"); !strings.Contains(help, "--kubeconfig-out") || !strings.Contains(help, "--ca-out") {
		t.Errorf("up --help lacks --kubeconfig-out or --ca-out:\n%s", help)
	}
	if help, _ := run("destroy", "--help"); !strings.Contains(help, "--remove") {
		t.Errorf("destroy --help lacks --remove:\n%s", help)
	}
	if _, err := run("up"); err == nil || !strings.Contains(err.Error(), `"stack" not set`) {
		t.Errorf("up without --stack: %v", err)
	}
	if _, err := run("preview", "--stack", "existing", "--config", "namespace"); err == nil || !strings.Contains(err.Error(), "want KEY=VALUE") {
		t.Errorf("--config without =: %v", err)
	}
	if _, err := run("up", "--stack", "existing", "extra"); err == nil {
		t.Error("up took an argument")
	}
}

func TestConfigOverrides(t *testing.T) {
	o := &options{sets: []string{"namespace=a=b", "upc:routerPort=1", "empty="}}
	a, err := o.parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"namespace": "a=b", "upc:routerPort": "1", "empty": ""}
	if len(a.Config) != len(want) {
		t.Errorf("config %v, want %v", a.Config, want)
	}
	for k, v := range want {
		if a.Config[k] != v {
			t.Errorf("%s = %q, want %q", k, a.Config[k], v)
		}
	}
	if o.auto.Config != nil {
		t.Error("parse changed the shared options")
	}
}

func TestDescribeCert(t *testing.T) {
	cert, _, err := auto.NewCA("kind")
	if err != nil {
		t.Fatal(err)
	}
	got := describeCert(cert)
	if !strings.Contains(got, `"UPC operator CA (kind)"`) || !strings.Contains(got, "SHA-256 ") || strings.Contains(got, "BEGIN") {
		t.Errorf("describeCert = %q", got)
	}
	if got := describeCert("junk"); !strings.Contains(got, "not a PEM") {
		t.Errorf("describeCert(junk) = %q", got)
	}
}
