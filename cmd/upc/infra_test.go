package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/testskip"
)

// standIn writes, into dir, a shell script named upc-infra that stands in
// for the real one (infra/cmd/upc-infra): it prints its arguments one a
// line, "progress" on stderr, and exits with $STAND_IN_EXIT.
func standIn(t *testing.T, dir string) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		testskip.Skip(t, "the stand-in upc-infra is a shell script")
	}
	p := filepath.Join(dir, infraBinary)
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\"\necho progress >&2\nexit ${STAND_IN_EXIT:-0}\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// `upc infra ARGS` runs upc-infra ARGS (here a stand-in found on PATH),
// passing every argument, flags included, and its output; its failure is
// upc's exit status, with nothing added.
func TestInfraRunsUpcInfra(t *testing.T) {
	t.Setenv("PATH", filepath.Dir(standIn(t, t.TempDir())))
	args := []string{"up", "--stack", "existing", "--config", "namespace=a b", "--log-level", "debug", "--help"}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), append([]string{"infra"}, args...), &out, &errOut); err != nil {
		t.Fatalf("upc infra: %v (stderr %q)", err, errOut.String())
	}
	if got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); strings.Join(got, "|") != strings.Join(args, "|") {
		t.Errorf("upc-infra got %q, want %q", got, args)
	}
	if errOut.String() != "progress\n" {
		t.Errorf("stderr %q, want the stand-in's", errOut.String())
	}

	t.Setenv("STAND_IN_EXIT", "3")
	err := run(context.Background(), []string{"infra", "destroy"}, &bytes.Buffer{}, &bytes.Buffer{})
	if code := exitCode(0); !errors.As(err, &code) || code != 3 {
		t.Errorf("failing upc-infra: got %v, want exit status 3", err)
	}
}

// upc-infra is looked for beside upc (symbolic links followed), then on
// PATH; with neither, the error says how to build it.
func TestFindInfra(t *testing.T) {
	onPath := standIn(t, t.TempDir())
	t.Setenv("PATH", filepath.Dir(onPath))
	bin := t.TempDir()
	upc := filepath.Join(bin, "upc")
	os.WriteFile(upc, nil, 0o755)

	if got, err := findInfra(upc); err != nil || got != onPath {
		t.Errorf("nothing beside upc: got %q, %v; want PATH's %s", got, err, onPath)
	}
	beside := standIn(t, bin)
	if got, err := findInfra(upc); err != nil || got != beside {
		t.Errorf("got %q, %v; want the one beside upc, %s", got, err, beside)
	}
	link := filepath.Join(t.TempDir(), "upc")
	if err := os.Symlink(upc, link); err != nil {
		t.Fatal(err)
	}
	if got, err := findInfra(link); err != nil || got != beside {
		t.Errorf("upc run through a link: got %q, %v; want %s", got, err, beside)
	}

	t.Setenv("PATH", t.TempDir())
	_, err := findInfra(filepath.Join(t.TempDir(), "upc"))
	if err == nil || !strings.Contains(err.Error(), "make infra-build") {
		t.Errorf("no upc-infra anywhere: %v, want how to build it", err)
	}
}
