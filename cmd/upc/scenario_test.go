package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// upc scenario refuses what it cannot run before anything starts: a missing
// file, a file that is not a scenario, runs that are not reports.
func TestScenarioRefuses(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("name: x\nbackend: docker\ndeployment: {agents: [{name: a, weight: 1}]}\npopulation: {real_days: {days: [d]}}\nsteps: [{do: aggregate, query: sum}]\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"scenario", "run"}, "accepts 1 arg"},
		{[]string{"scenario", "run", filepath.Join(dir, "none.yaml")}, "read scenario"},
		{[]string{"scenario", "run", bad}, `steps[0].query: "sum" is not count or metrics`},
		{[]string{"scenario", "run", "--seed", "x", bad}, `invalid argument "x" for "--seed"`},
		{[]string{"scenario", "compare", dir}, "accepts 2 arg"},
		{[]string{"scenario", "compare", dir, dir}, "read report"},
	} {
		var out bytes.Buffer
		root := newRootCmd(&out, &out)
		root.SetArgs(c.args)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("upc %s: error %v, want it to name %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}
