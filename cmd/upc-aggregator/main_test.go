package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad invocations are refused before anything is contacted, naming every
// missing flag at once, or the bad query.
func TestRunRefuses(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "q.json")
	os.WriteFile(q, []byte(`{"offset": 10, "alpha": 0.05}`), 0o644)
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"offset": 10, "alpha": 2}`), 0o644)
	base := []string{"-data", dir, "-out", dir, "-router", "https://router:1", "-token-file", q, "-ca", q}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"-kind is required", "-query is required", "-data is required", "-router is required", "-token-file is required", "-ca is required"}},
		{append([]string{"-kind", "sum", "-query", q}, base...), []string{`query kind "sum" is not count or metrics`}},
		{append([]string{"-kind", "count", "-query", bad}, base...), []string{"alpha"}},
		{append([]string{"-kind", "count", "-query", q}, base...), []string{"no day file"}},
		{append([]string{"-kind", "count", "-query", filepath.Join(dir, "none.json")}, base...), []string{"read query"}},
		{[]string{"-parallel", "x"}, []string{"invalid value"}},
	} {
		err := run(context.Background(), c.args, io.Discard, io.Discard)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %v, want it to name %q", c.args, err, w)
			}
		}
	}
}
