package owndata

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/e-mission/upc/internal/testskip"
)

func owner(t *testing.T, p string) (int, int) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

// TestChown runs as root (the tests here do): a tree of root's, as a PM
// that ran as root left it, is given to 65532:65532, links not followed;
// a second run changes nothing.
func TestChown(t *testing.T) {
	if os.Getuid() != 0 {
		testskip.Skip(t, "chown to another user needs root")
	}
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "outside")
	os.WriteFile(outside, []byte("x"), 0o600)
	os.MkdirAll(filepath.Join(dir, "data", "sub"), 0o700)
	os.WriteFile(filepath.Join(dir, "data", "pm.db"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "data", "sub", "f"), []byte("x"), 0o600)
	os.Symlink(outside, filepath.Join(dir, "data", "link"))
	n, err := Chown(filepath.Join(dir, "data"), 65532, 65532)
	if err != nil || n != 5 {
		t.Fatalf("Chown = %d, %v; want 5 changed", n, err)
	}
	for _, p := range []string{"data", "data/pm.db", "data/sub", "data/sub/f", "data/link"} {
		if u, g := owner(t, filepath.Join(dir, p)); u != 65532 || g != 65532 {
			t.Errorf("%s owned by %d:%d", p, u, g)
		}
	}
	if u, _ := owner(t, outside); u != 0 {
		t.Errorf("the link's target was changed too (owner %d)", u)
	}
	if n, err := Chown(filepath.Join(dir, "data"), 65532, 65532); err != nil || n != 0 {
		t.Errorf("second Chown = %d, %v; want nothing to do", n, err)
	}
	// A directory of the service's own holding a file of root's (a volume
	// first mounted by the non-root image, then written by a root one).
	os.WriteFile(filepath.Join(dir, "data", "root-file"), []byte("x"), 0o600)
	if n, err := Chown(filepath.Join(dir, "data"), 65532, 65532); err != nil || n != 1 {
		t.Errorf("Chown over an owned directory = %d, %v; want its root file changed", n, err)
	}
}

func TestMainArgs(t *testing.T) {
	for _, args := range [][]string{nil, {"65532:65532"}, {"x:1", "/d"}, {"1", "/d"}, {"-1:0", "/d"}} {
		if err := Main(args, func(string) {}); err == nil || !strings.Contains(err.Error(), Command) {
			t.Errorf("Main(%q) = %v, want a usage error", args, err)
		}
	}
	if err := Main([]string{"0:0", filepath.Join(t.TempDir(), "missing")}, func(string) {}); err == nil {
		t.Error("Main on a missing directory succeeded")
	}
}

// TestWipe empties a data directory, keeping the directory itself (a mount
// point) and what a link inside it names.
func TestWipe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	outside := filepath.Join(t.TempDir(), "outside")
	os.WriteFile(outside, []byte("x"), 0o600)
	os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o700)
	os.WriteFile(filepath.Join(dir, "pm.db"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "sub", "deeper", "f"), []byte("x"), 0o400)
	os.Symlink(outside, filepath.Join(dir, "link"))
	n, err := Wipe(dir)
	if err != nil || n != 5 {
		t.Fatalf("Wipe = %d, %v; want 5 removed", n, err)
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Fatalf("after Wipe the directory holds %v (%v)", left, err)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("the link's target was removed: %v", err)
	}
	if n, err := Wipe(dir); err != nil || n != 0 {
		t.Errorf("second Wipe = %d, %v; want nothing to do", n, err)
	}
	if _, err := Wipe(filepath.Join(dir, "missing")); err == nil {
		t.Error("Wipe of a missing directory succeeded")
	}
}

func TestWipeMainArgs(t *testing.T) {
	for _, args := range [][]string{nil, {"data"}, {"/"}, {"//"}, {t.TempDir(), "relative"}} {
		if err := WipeMain(args, func(string) {}); err == nil || !strings.Contains(err.Error(), WipeCommand) {
			t.Errorf("WipeMain(%q) = %v, want a usage error", args, err)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600)
	var said string
	if err := WipeMain([]string{dir}, func(s string) { said = s }); err != nil || !strings.Contains(said, "1 removed") {
		t.Errorf("WipeMain = %v, said %q", err, said)
	}
}
