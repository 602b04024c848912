// Package realdata finds the real e-mission day files (shared/data/real_examples)
// that tests, the harness and the synthetic-user generator read.
package realdata

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Env names the environment variable that may point at the folder directly.
const Env = "UPC_REAL_EXAMPLES"

// Dir returns $UPC_REAL_EXAMPLES when set, else ../shared/data/real_examples
// beside the repository root (the folder holding go.mod), found by walking up
// from the working directory.
func Dir() (string, error) {
	if d := os.Getenv(Env); d != "" {
		if !isDir(d) {
			return "", fmt.Errorf("%s=%s is not a folder", Env, d)
		}
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			p := filepath.Join(d, "..", "shared", "data", "real_examples")
			if !isDir(p) {
				return "", fmt.Errorf("real examples not found at %s (set %s)", p, Env)
			}
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s; set %s", wd, Env)
		}
	}
}

// DirT is Dir for tests: a missing folder fails the test (never skips it).
func DirT(t testing.TB) string {
	t.Helper()
	d, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
