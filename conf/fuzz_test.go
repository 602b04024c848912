package conf_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/conf"
)

// seedFiles adds every file matching the globs to f's corpus.
func seedFiles(f *testing.F, globs ...string) {
	n := 0
	for _, g := range globs {
		paths, err := filepath.Glob(g)
		if err != nil {
			f.Fatal(err)
		}
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			n++
		}
	}
	if n == 0 {
		f.Fatalf("no seed files in %v", globs)
	}
}

// FuzzParseConfig: any configuration file (JSON or YAML) is accepted as a
// valid configuration or refused with a message; never a crash.
func FuzzParseConfig(f *testing.F) {
	seedFiles(f, "testdata/valid-*", "testdata/invalid-*", "samples/*.yaml")
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := conf.Parse(b)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("%q refused without a message", b)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%q parsed into a configuration that does not validate: %v", b, err)
		}
	})
}

// FuzzParseCatalog: likewise for service catalogs.
func FuzzParseCatalog(f *testing.F) {
	seedFiles(f, "catalog.json", "testdata/catalog-*", "testdata/valid-catalog-*")
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := conf.ParseCatalog(b); err != nil && strings.TrimSpace(err.Error()) == "" {
			t.Fatalf("%q refused without a message", b)
		}
	})
}
