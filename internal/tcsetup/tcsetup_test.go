package tcsetup

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/testskip"
	"github.com/testcontainers/testcontainers-go"
)

func TestConfigure(t *testing.T) {
	if err := Configure(); err != nil {
		t.Fatal(err)
	}
	for k, v := range settings {
		if got := os.Getenv(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if !testcontainers.ReadConfig().RyukDisabled {
		t.Error("testcontainers-go starts its reaper")
	}
	// A second call (every stand-up calls it) is fine.
	if err := Configure(); err != nil {
		t.Fatal(err)
	}
}

// Containers' published ports are reached at loopback, never at the
// machine's default gateway.
func TestDaemonHostIsLoopback(t *testing.T) {
	if err := Configure(); err != nil {
		t.Fatal(err)
	}
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		testskip.Skipf(t, "no Docker engine: %v", err)
	}
	defer p.Close()
	host, err := p.DaemonHost(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if host != "127.0.0.1" {
		t.Errorf("daemon host = %q, want 127.0.0.1", host)
	}
}

// Configure is the only code that sets the process environment: tests use
// t.Setenv.
func TestNothingElseSetsTheEnvironment(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	self, _ := filepath.Abs(".")
	setenv := regexp.MustCompile(`\b(os|syscall)\.Setenv\(`)
	n := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || path == self) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		n++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if setenv.MatchString(line) {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s:%d sets the environment: %s (use tcsetup.Configure, or t.Setenv in a test)", rel, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 100 {
		t.Fatalf("walked only %d Go files under %s", n, root)
	}
}
