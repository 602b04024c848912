package stack

import (
	"os"
	"path/filepath"
	"testing"
)

// The project folder is the engine's root directory when it names one, else
// the nearest folder at or above the working directory with Pulumi.yaml:
// the stack's relative paths resolve there whatever the working directory.
func TestProjectDir(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "Pulumi.yaml"), []byte("name: upc\nruntime: go\nmain: infra/\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(root, "infra", "stack")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	for _, tc := range []struct {
		name, root, wd, want string
	}{
		{"engine's root directory wins", other, filepath.Join(root, "infra"), other},
		{"main: infra/ (the language host's working directory)", "", filepath.Join(root, "infra"), root},
		{"deeper", "", deep, root},
		{"the project folder itself", "", root, root},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ProjectDir(tc.root, tc.wd)
			if err != nil || got != tc.want {
				t.Errorf("ProjectDir(%q, %q) = %q, %v; want %q", tc.root, tc.wd, got, err, tc.want)
			}
		})
	}
	if got, err := ProjectDir("", other); err == nil {
		t.Errorf("ProjectDir with no Pulumi.yaml above = %q, want an error", got)
	}
}
