package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// Write replaces a file whole with the mode asked, leaves no temporary file,
// and on failure leaves the old file as it was.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "new" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("after Write: %q %v, want \"new\" 0600", b, fi.Mode().Perm())
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Fatalf("%d entries in the folder, want the file alone", len(es))
	}
	// A folder in the file's place: the rename fails, nothing is left.
	q := filepath.Join(dir, "d")
	os.Mkdir(q, 0o755)
	os.WriteFile(filepath.Join(q, "x"), []byte("kept"), 0o644)
	if err := Write(q, []byte("new"), 0o600); err == nil {
		t.Fatal("writing over a non-empty folder succeeded")
	}
	if b, _ := os.ReadFile(filepath.Join(q, "x")); string(b) != "kept" {
		t.Fatal("a failed write changed what was there")
	}
	if es, _ := os.ReadDir(dir); len(es) != 2 {
		t.Fatalf("%d entries after a failed write, want 2 (no temporary file left)", len(es))
	}
	if err := Write(filepath.Join(dir, "no", "such"), nil, 0o600); err == nil {
		t.Fatal("a missing folder was not an error")
	}
}
