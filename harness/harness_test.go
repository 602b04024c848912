package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/internal/tcsetup"
)

func TestMain(m *testing.M) {
	if err := tcsetup.Configure(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// TestIntegrationE2EDockerOneDay runs a one-day scenario for real: the
// router, agent and PM images built from this tree, the router and two agents
// as containers on the local engine, one user's full client flow, tear-down,
// and the report.
func TestIntegrationE2EDockerOneDay(t *testing.T) {
	m := imagestest.Require(t, "router", "agent", "pm", "pipeline", "metrics", "count")
	tmp := t.TempDir()
	manifest := filepath.Join(tmp, "images.json")
	if err := m.Save(manifest); err != nil {
		t.Fatal(err)
	}
	results := filepath.Join(tmp, "results")
	var progress bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{
		ScenarioPath: "testdata/one-day.yaml", ImagesPath: manifest, ResultsDir: results,
		Command: "go test ./harness -run TestIntegrationE2EDockerOneDay", Progress: &progress,
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var table bytes.Buffer
	report.Table(&table, res.Report)
	t.Logf("summary:\n%s", table.String())
	r := res.Report
	if !r.Passed {
		b, _ := os.ReadFile(filepath.Join(res.Dir, report.MarkdownFile))
		t.Fatalf("run failed: %s\n%s", r.Error, b)
	}
	if len(r.Users) != 1 || len(r.Users[0].Steps) != 11 {
		t.Fatalf("users %+v", r.Users)
	}
	u := r.Users[0]
	if up, _ := u.Step("upload"); up.Values["entries"] != 413 {
		t.Errorf("uploaded %v entries, want 413 (the day file's)", up.Values["entries"])
	}
	if u.TripsFound == nil || *u.TripsFound != 3 {
		t.Errorf("trips found %v, want the ground truth's 3", u.TripsFound)
	}
	// The trips, read back from the PM, are the ground truth's to the last
	// bit.
	if g := u.GroundTruth; g == nil || !g.Exact || g.Date != "2015-08-23" || g.Want != 3 || g.Got != 3 {
		t.Errorf("trips against the ground truth: %+v", g)
	}
	// The download holds the day file as read apart from the upload code.
	if c, _ := u.Step("compare"); c.Values["entries"] != 413 || c.Values["documents"] != 413 {
		t.Errorf("compare: %+v", c)
	}
	if c, _ := u.Step("count"); c.Values["here"] != 1 || c.Values["mirror"] != 0 {
		t.Errorf("count answers %v", c.Values)
	}
	if m, _ := u.Step("metrics"); m.Values["privacy_cost"] <= 0 {
		t.Errorf("metrics charged nothing: %v", m.Values)
	}
	if !strings.HasPrefix(u.Placement, "agent-") {
		t.Errorf("placement %q", u.Placement)
	}
	// TLS on every hop: the router's URL, the configuration the router and
	// agents ran with, and the report saying so.
	if !strings.HasPrefix(r.Deployment.Router, "https://") || r.Deployment.TLS != tlsOn {
		t.Errorf("router %s, TLS %q: want https and %q", r.Deployment.Router, r.Deployment.TLS, tlsOn)
	}
	if cfg, err := os.ReadFile(filepath.Join(res.Dir, "deployment.json")); err != nil ||
		!strings.Contains(string(cfg), `"service_router_use_tls": true`) || !strings.Contains(string(cfg), `"machines_use_tls": true`) ||
		!strings.Contains(string(cfg), `"ca_cert_path"`) {
		t.Errorf("deployment config without TLS on every hop (%v):\n%s", err, cfg)
	}
	if !r.Leftovers.Checked || !r.Leftovers.Empty() {
		t.Errorf("leftovers %+v", r.Leftovers)
	}
	// The report folder and results/latest hold every file, and the JSON
	// report reads back.
	for _, f := range append([]string{report.JSONFile, report.MarkdownFile, "deployment.json"}, report.FigureFiles(r)...) {
		if _, err := os.Stat(filepath.Join(results, "latest", f)); err != nil {
			t.Errorf("latest/%s: %v", f, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(res.Dir, report.JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	var back report.Report
	if err := json.Unmarshal(b, &back); err != nil || back.Run != r.Run || len(back.Environment.Images) < 3 {
		t.Errorf("report.json: %v %+v", err, back.Environment)
	}
	if !strings.Contains(progress.String(), "shankari_2015-08-23#1") {
		t.Error("no progress line for the user")
	}
}
