package testskip

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestCISkipFails runs this package's helper test in a child process, as CI
// and as a developer would, and checks what each sees.
func TestCISkipFails(t *testing.T) {
	if os.Getenv("UPC_TESTSKIP_CHILD") != "" {
		return
	}
	for _, tc := range []struct {
		ci, test string
		wantFail bool
		want     string
	}{
		{"", "TestChildSkips", false, "--- SKIP: TestChildSkips"},
		{"true", "TestChildSkips", true, "TestChildSkips would be skipped (no engine here)"},
		{"true", "TestOriginalClientScripts", false, "skipped under CI: needs a checkout"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run", "^"+tc.test+"$", "-test.v")
		cmd.Env = append(os.Environ(), "UPC_TESTSKIP_CHILD=1", "CI="+tc.ci)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tc.wantFail {
			t.Errorf("CI=%q %s: failed %v, want %v:\n%s", tc.ci, tc.test, failed, tc.wantFail, out)
		}
		if !bytes.Contains(out, []byte(tc.want)) {
			t.Errorf("CI=%q %s: output lacks %q:\n%s", tc.ci, tc.test, tc.want, out)
		}
	}
}

// TestChildSkips and TestOriginalClientScripts are run only by TestCISkipFails.
func TestChildSkips(t *testing.T) {
	if os.Getenv("UPC_TESTSKIP_CHILD") == "" {
		return
	}
	Skip(t, "no engine here")
}

func TestOriginalClientScripts(t *testing.T) {
	if os.Getenv("UPC_TESTSKIP_CHILD") == "" {
		return
	}
	Skip(t, "no original client")
}

// TestNoBareSkips: every test in the repository (both modules, and the test
// helpers beside the code) skips through this package, so that CI's rule holds everywhere.
func TestNoBareSkips(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bare := regexp.MustCompile(`\b(t|b|f|tb)\.Skip(f|Now)?\(`)
	self, _ := filepath.Abs(".")
	var found []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "results" || d.Name() == "build" || path == self) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if bare.MatchString(line) {
				rel, _ := filepath.Rel(root, path)
				found = append(found, rel+":"+strconv.Itoa(i+1)+": "+strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) > 0 {
		t.Errorf("tests that skip without internal/testskip (CI would pass them having tested nothing):\n%s", strings.Join(found, "\n"))
	}
}
