package harness

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/internal/images/imagestest"
)

// TestIntegrationAggregateSeededRerun runs a scenario with aggregate steps
// twice on the real engine: the aggregator's container asks every user a
// count and a metrics query, and the second run, with the same scenario and
// so the same seeds, publishes the same noisy answers over the same true ones.
// The report carries every user's outcome, the ε they paid, the figures and
// what reproduces the run.
func TestIntegrationAggregateSeededRerun(t *testing.T) {
	m := imagestest.Require(t, "router", "agent", "pm", "pipeline", "metrics", "count", "aggregator")
	tmp := t.TempDir()
	manifest := filepath.Join(tmp, "images.json")
	if err := m.Save(manifest); err != nil {
		t.Fatal(err)
	}
	var runs []*report.Report
	for i := range 2 {
		var progress bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		res, err := Run(ctx, Options{
			ScenarioPath: "testdata/aggregate-small.yaml", ImagesPath: manifest, ResultsDir: filepath.Join(tmp, "results"),
			Command: "go test ./harness -run TestIntegrationAggregateSeededRerun", Progress: &progress,
		})
		cancel()
		t.Logf("run %d:\n%s", i+1, progress.String())
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		r := res.Report
		if !r.Passed {
			b, _ := os.ReadFile(filepath.Join(res.Dir, report.MarkdownFile))
			t.Fatalf("run failed: %s\n%s", r.Error, b)
		}
		if len(r.Aggregates) != 2 {
			t.Fatalf("aggregates %+v", r.Aggregates)
		}
		for _, a := range r.Aggregates {
			if a.Participants != 3 || len(a.PerUser) != 3 || a.True == nil || a.Noisy == nil || a.Epsilon <= 0 {
				t.Errorf("%s: %+v", a.Step, a)
			}
			for _, u := range a.PerUser {
				if u.Status != "answered" || u.Epsilon != a.Epsilon || u.User == "" {
					t.Errorf("%s: user %+v", a.Step, u)
				}
			}
		}
		// One real day in north Mountain View, and the ground truths agree
		// with the users' PMs on the count.
		if c := r.Aggregates[0]; !reflect.DeepEqual(c.GroundTruth, c.True) {
			t.Errorf("count: true %v, from the ground truths %v", c.True, c.GroundTruth)
		}
		for _, f := range append([]string{report.JSONFile, report.MarkdownFile, ScenarioCopy, "logs/aggregate-1.log"}, report.FigureFiles(r)...) {
			if _, err := os.Stat(filepath.Join(res.Dir, f)); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
		e := r.Environment
		if e.ScenarioSHA256 == "" || e.Machine.CPUs == 0 || e.DockerVersion == "" || len(e.Seeds) != 4 {
			t.Errorf("environment %+v", e)
		}
		runs = append(runs, r)
	}
	for i := range runs[0].Aggregates {
		a, b := runs[0].Aggregates[i], runs[1].Aggregates[i]
		if !reflect.DeepEqual(a.Noisy, b.Noisy) || !reflect.DeepEqual(a.True, b.True) || a.Seed != b.Seed {
			t.Errorf("%s: rerun with the seed differs: %v / %v, then %v / %v", a.Step, a.Noisy, a.True, b.Noisy, b.True)
		}
	}
}
