// Package realdata finds and reads e-mission day files and their ground
// truths: the six real days the repository keeps in testdata/real_examples
// (gzipped), or a folder of the user's own named by $UPC_REAL_EXAMPLES. Every
// reader takes a file with or without its .gz.
package realdata

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Env names the environment variable that may point at a folder of days.
const Env = "UPC_REAL_EXAMPLES"

// RepoDir is where the repository keeps its days, relative to its root.
const RepoDir = "testdata/real_examples"

// GroundTruthSuffix ends a day's ground-truth file name (before any .gz).
const GroundTruthSuffix = ".ground_truth"

// Dir returns $UPC_REAL_EXAMPLES when set, else the repository's own
// testdata/real_examples, found by walking up from the working directory to
// the folder holding go.mod.
func Dir() (string, error) {
	if d := os.Getenv(Env); d != "" {
		if !isDir(d) {
			return "", fmt.Errorf("$%s: %s is not a folder", Env, d)
		}
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("%w (or set $%s)", err, Env)
	}
	p := filepath.Join(root, RepoDir)
	if !isDir(p) {
		return "", fmt.Errorf("%s is missing from the repository at %s (or set $%s)", RepoDir, root, Env)
	}
	return p, nil
}

// RepoRoot is the nearest folder at or above the working directory that
// holds go.mod.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod at or above %s", wd)
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

// Resolve returns path when it exists, else path+".gz" when that does. The
// error for neither names path and wraps fs.ErrNotExist.
func Resolve(path string) (string, error) {
	if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return path, err
	}
	if _, err := os.Stat(path + ".gz"); err == nil {
		return path + ".gz", nil
	}
	return "", fmt.Errorf("%s (nor %s.gz): %w", path, filepath.Base(path), fs.ErrNotExist)
}

// ReadFile reads path, or path.gz when path is missing, and gunzips a file
// whose name ends in .gz.
func ReadFile(path string) ([]byte, error) {
	p, err := Resolve(path)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil || !strings.HasSuffix(p, ".gz") {
		return b, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("gunzip %s: %w", p, err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("gunzip %s: %w", p, err)
	}
	return out, nil
}

// Open is ReadFile as a reader.
func Open(path string) (io.ReadCloser, error) {
	b, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// Days lists the day names in dir (each file that is neither a ground truth
// nor a README, without its .gz), sorted.
func Days(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list days: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, e := range ents {
		n := strings.TrimSuffix(e.Name(), ".gz")
		if e.IsDir() || strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".md") || strings.HasSuffix(n, GroundTruthSuffix) || seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
