package realdata

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// upPath is a relative path that starts by climbing: ../x, ../../y/z.
var upPath = regexp.MustCompile(`(?:^|[^\w./])((?:\.\./)+[\w.\-/]*)`)

// outside names places a fresh clone does not have: the folder beside the
// repository that development machines keep specs and data in.
var outside = regexp.MustCompile(`[s]hared/(?:data|specs)/|/[w]ork/`) // [s], [w]: this line names neither

// A fresh clone must run with nothing beside it: no file of the repository
// may name a path above its root (resolved from the file's own folder, as Go
// tests, Markdown links and scripts resolve them), nor the sibling folder
// development machines happen to have.
func TestNothingNamesAPathAboveTheRepository(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// .git is a folder in a clone and a file in a worktree.
	skip := map[string]bool{".git": true, "bin": true, "build": true, "results": true, ".cache": true, ".upc": true}
	var files int
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && skip[d.Name()] {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || skip[d.Name()] || strings.HasSuffix(p, ".gz") || strings.HasSuffix(p, ".sum") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.IndexByte(b, 0) >= 0 {
			return nil // binary
		}
		files++
		rel, _ := filepath.Rel(root, p)
		if rel == filepath.Join("internal", "realdata", "repo_test.go") {
			return nil // its own examples
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range upPath.FindAllStringSubmatch(line, -1) {
				to := filepath.Join(filepath.Dir(p), m[1])
				if r, err := filepath.Rel(root, to); err != nil || r == ".." || strings.HasPrefix(r, "../") {
					t.Errorf("%s:%d names %q, above the repository's root", rel, i+1, m[1])
				}
			}
			if m := outside.FindString(line); m != "" {
				t.Errorf("%s:%d names %q, outside the repository", rel, i+1, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("read only %d files under %s: is this the repository?", files, root)
	}
}

// The check above must catch what it is for.
func TestUpPathFindsClimbs(t *testing.T) {
	for line, want := range map[string]string{
		`os.Open("../../../beside/data/x")`: "../../../beside/data/x",
		`see [spec](../specs/P.md)`:         "../specs/P.md",
		`images: ../../build/images.json`:   "../../build/images.json",
		`a/../b is not a climb`:             "",
	} {
		got := ""
		if m := upPath.FindStringSubmatch(line); m != nil {
			got = m[1]
		}
		if got != want {
			t.Errorf("%s: got %q, want %q", line, got, want)
		}
	}
}

func TestReadFileTakesGzip(t *testing.T) {
	dir := DirT(t)
	days, err := Days(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"iphone_3_2016-02-22", "shankari_2015-08-23", "shankari_2015-aug-27", "shankari_2016-06-20", "shankari_2016-08-10", "sunil_2016-07-20"}
	if strings.Join(days, " ") != strings.Join(want, " ") {
		t.Fatalf("days %v, want %v", days, want)
	}
	for _, d := range days {
		for _, name := range []string{d, d + GroundTruthSuffix} {
			b, err := ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if len(b) < 1000 || (b[0] != '[' && b[0] != '{') {
				t.Errorf("%s: %d bytes starting %q", name, len(b), b[:min(len(b), 10)])
			}
		}
	}
	// A plain file is read as it is, and a missing one is an error naming it.
	plain := filepath.Join(t.TempDir(), "day")
	os.WriteFile(plain, []byte("[]"), 0o644)
	if b, err := ReadFile(plain); err != nil || string(b) != "[]" {
		t.Fatalf("plain file: %q, %v", b, err)
	}
	if _, err := ReadFile(plain + "-missing"); err == nil || !strings.Contains(err.Error(), "day-missing") {
		t.Fatalf("missing file: %v", err)
	}
	// A .gz that is not gzip is an error, not garbage.
	bad := filepath.Join(t.TempDir(), "bad.gz")
	os.WriteFile(bad, []byte("not gzip"), 0o644)
	if _, err := ReadFile(bad); err == nil || !strings.Contains(err.Error(), "gunzip") {
		t.Fatalf("bad gzip: %v", err)
	}
}
