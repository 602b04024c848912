package scenario_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/harness/scenario"
)

// FuzzParseScenario: any scenario file is accepted as a valid scenario or
// refused with a message; never a crash. Seeds: the shipped scenarios and
// the tests' files.
func FuzzParseScenario(f *testing.F) {
	for _, g := range []string{"../../scenarios/*.yaml", "testdata/*.yaml"} {
		paths, _ := filepath.Glob(g)
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := scenario.Parse(b)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("%q refused without a message", b)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("%q parsed into a scenario that does not validate: %v", b, err)
		}
	})
}
