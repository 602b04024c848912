package report

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/plot"
	"github.com/e-mission/upc/internal/plot/plottest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func intp(i int) *int { return &i }

// sample is a fixed report: two users ok (one with trips), one failed at upload.
func sample() *Report {
	steps := func(fail string, d ...float64) []Step {
		names := []string{"launch", "unseal", "upload", "download", "compare", "delete"}
		var out []Step
		at, failed := 0.0, false
		for i, n := range names {
			s := Step{Name: n, Status: OK, StartMS: at, DurationMS: d[i]}
			switch {
			case failed && n != "delete":
				s = Step{Name: n, Status: Skipped, StartMS: at}
			case n == fail:
				s.Status, s.Error, failed = Failed, "upload: post http://172.18.0.1:32768/v1/entries: 500 internal error", true
			case n == "upload":
				s.Note, s.Values = "1482 entries", map[string]float64{"entries": 1482}
			}
			at += s.DurationMS
			out = append(out, s)
		}
		return out
	}
	users := []User{
		{Name: "shankari_2015-aug-27#1", ID: "a1", Day: "shankari_2015-aug-27", Status: OK, Placement: "agent-a", ExpectedTrips: 8, TripsFound: intp(8), Steps: steps("", 310, 12, 840, 95, 7, 60),
			GroundTruth: &TripCheck{Date: "2015-08-27", Want: 8, Got: 8, Exact: true, Approx: true}},
		{Name: "sunil_2016-07-20#1", ID: "b2", Day: "sunil_2016-07-20", Status: OK, Placement: "agent-b", ExpectedTrips: 2, TripsFound: intp(2), Steps: steps("", 290, 10, 650, 80, 5, 55),
			GroundTruth: &TripCheck{Date: "2016-07-20", Want: 2, Got: 2, ExactFailures: 1, Approx: true,
				Failed: []string{"trip 1: end_ts: want 1469051386.468, got 1469051396.468"}}},
		{Name: "shankari_2015-08-23#1", ID: "c3", Day: "shankari_2015-08-23", Status: Failed, Error: "upload: 500", Placement: "agent-a", ExpectedTrips: 3, Steps: steps("upload", 450, 11, 30, 0, 0, 70)},
	}
	for i := range users {
		for _, s := range users[i].Steps {
			users[i].TotalMS += s.DurationMS
		}
	}
	return &Report{
		Scenario: "default", Description: "golden sample", Run: "20261127T113000Z",
		Started: time.Date(2026, 11, 27, 11, 30, 0, 0, time.UTC),
		WallMS:  12345, StandupMS: 2100, TeardownMS: 800, Passed: false,
		Users: users,
		Expectations: []Check{
			{Name: "every_step_succeeds", Held: false, Detail: "1 of 3 users failed: shankari_2015-08-23#1 (upload)"},
			{Name: "lossless", Held: true, Detail: "2 of 2 compares equal"},
		},
		Deployment: Deployment{Backend: "docker", Access: "on: a router identity per user, owner checks, instance secrets, grants", TLS: "on every hop", Network: "upc-e2e-x", Gateway: "172.18.0.1", Router: "http://127.0.0.1:32770", ConfigFile: "deployment.json",
			Agents: []AgentInfo{{Name: "agent-a", Weight: 2, Address: "http://agent-a:8080", Placed: 2}, {Name: "agent-b", Weight: 1, Address: "http://agent-b:8080", Placed: 1}}},
		Leftovers: Leftovers{Checked: true},
		Environment: Environment{Command: "upc e2e --mode docker --images build/images.json --results results",
			UPCVersion: "v0.1.0", GoVersion: "go1.26.8", Platform: "linux/amd64", CPUs: 2, DockerVersion: "20.10.24", DockerAPI: "1.41",
			Seed: 20151127, Parallel: 3, DataDir: "/data/real_examples",
			Images: []Image{{Name: "router", Ref: "upc/router:v0.1.0", ID: "sha256:0123"}},
			Commit: "0123456789abcdef0123456789abcdef01234567", Dirty: true,
			Machine:      Machine{OS: "Debian GNU/Linux 12 (bookworm)", Kernel: "6.1.0", CPUs: 2, MemoryMB: 7936},
			Seeds:        []Seed{{Name: "scenario", Value: 20151127, Seeds: "the users' ids (with the run id) and PM keys"}},
			ScenarioFile: "scenario.yaml", ScenarioSHA256: "ab12"},
		ScenarioConfig: json.RawMessage(`{"name":"default","seed":20151127}`),
		Aggregates: []Aggregate{
			{Step: "aggregate#1", Query: "count", Seed: 20151127, Run: "seed-20151127", StartMS: 9000, WallMS: 3000,
				Noisy: map[string]float64{"count": 3}, True: map[string]float64{"count": 2}, GroundTruth: map[string]float64{"count": 2}, AbsError: map[string]float64{"count": 1},
				Epsilon: 0.3, EpsilonByPart: map[string]float64{"count": 0.3}, Sensitivity: map[string]float64{"count": 1}, InitialBudget: 1,
				Participants: 2, Users: 3, Failed: 1,
				Phases: []AggregatePhase{{Phase: "pm", N: 3, MedianMS: 900, P95MS: 1200, MaxMS: 1200}},
				PerUser: []AggregateUser{
					{User: "shankari_2015-aug-27#1", File: "0001-shankari_2015-aug-27-1.gz", ID: "u1", Status: "answered", Epsilon: 0.3, Trips: 8, EndMS: 1500},
					{User: "sunil_2016-07-20#1", File: "0002-sunil_2016-07-20-1.gz", ID: "u2", Status: "answered", Epsilon: 0.3, Trips: 2, EndMS: 2500},
					{User: "shankari_2015-08-23#1", File: "0003-shankari_2015-08-23-1.gz", ID: "u3", Status: "failed", Phase: "pipeline", Error: "502 bad gateway", EndMS: 2800},
				}},
			{Step: "aggregate#2", Query: "metrics", Seed: 20151128, Error: "the aggregator exited with 1 (its log is in logs/)", StartMS: 12000, WallMS: 10},
		},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; got:\n%s", name, got)
	}
}

func TestGolden(t *testing.T) {
	r := sample()
	var table bytes.Buffer
	Table(&table, r)
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		got  []byte
	}{
		{"sample.md", Markdown(r)},
		{"sample.table.txt", table.Bytes()},
		{"sample.json", append(js, '\n')},
	} {
		t.Run(c.name, func(t *testing.T) { golden(t, c.name, c.got) })
	}
}

func TestJSONRoundTrip(t *testing.T) {
	r := sample()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(&back)
	if !bytes.Equal(b, again) {
		t.Errorf("round trip changed the report:\n%s\n%s", b, again)
	}
}

func TestPhasesAndQuantiles(t *testing.T) {
	r := sample()
	if got := strings.Join(r.Phases(), ","); got != "launch,unseal,upload,download,compare,delete" {
		t.Errorf("phases = %s", got)
	}
	// Upload succeeded for two users only: 840 and 650.
	d := r.durations("upload")
	if len(d) != 2 || quantile(d, 0.5) != 650 || quantile(d, 0.9) != 840 {
		t.Errorf("upload durations %v", d)
	}
}

func TestWriteAndLatest(t *testing.T) {
	results := t.TempDir()
	for _, run := range []string{"run1", "run2"} {
		dir := filepath.Join(results, run)
		r := sample()
		r.Run = run
		if err := Write(dir, r); err != nil {
			t.Fatal(err)
		}
		if err := Latest(results, dir); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range append([]string{JSONFile, MarkdownFile}, FigureFiles(sample())...) {
		if _, err := os.Stat(filepath.Join(results, "latest", f)); err != nil {
			t.Errorf("latest/%s: %v", f, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(results, "latest", JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil || r.Run != "run2" {
		t.Errorf("latest is %q (%v), want run2", r.Run, err)
	}
	if m, _ := filepath.Glob(filepath.Join(results, "run2", "*.tmp")); len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
}

// figureText renders a figure both ways and returns the text of its SVG and
// of its PDF, checking each is a whole document of its kind. It takes what a
// figure function returns: figureText(t)(LaunchPlot(r)).
func figureText(t *testing.T) func(f *plot.Figure, err error) (svg, pdf string) {
	return func(f *plot.Figure, err error) (string, string) {
		t.Helper()
		return texts(t, f, err)
	}
}

func texts(t *testing.T, f *plot.Figure, err error) (svg, pdf string) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.SVG()
	if err != nil {
		t.Fatal(err)
	}
	p, err := f.PDF()
	if err != nil {
		t.Fatal(err)
	}
	if svg, err = plottest.SVGText(s); err != nil {
		t.Fatalf("svg: %v", err)
	}
	if pdf, err = plottest.PDFText(p); err != nil {
		t.Fatalf("pdf: %v", err)
	}
	return svg, pdf
}

func hasAll(t *testing.T, what, svg, pdf string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(svg, w) {
			t.Errorf("%s: the svg lacks %q:\n%s", what, w, svg)
		}
		if !strings.Contains(pdf, plottest.PDFString(w)) {
			t.Errorf("%s: the pdf lacks %q", what, w)
		}
	}
}

// TestFigures: each figure carries its title and series, from one report
// and from runs on two backends.
func TestFigures(t *testing.T) {
	r := sample()
	// The sample's services: one pipeline launch.
	r.Users[0].Steps = append(r.Users[0].Steps, Step{Name: "pipeline", Status: OK, DurationMS: 900, Values: map[string]float64{"launch_ms": 420, "call_ms": 480}})
	svg, pdf := figureText(t)(LaunchPlot(r))
	// launch: 310, 290 and 450 ms: the median is 310.
	hasAll(t, "launch", svg, pdf, "Launch latency: request to an answering instance", "docker: PM (n=3, median 310)", "docker: services (n=1, median 420)", "ms")
	svg, pdf = figureText(t)(PhasesPlot(r))
	hasAll(t, "phases", svg, pdf, "Time per phase (docker, 3 users)", "launch", "unseal", "upload", "delete", "pipeline", "whisker: 10th to 90th percentile")
	svg, pdf = figureText(t)(UsersPlot(r))
	hasAll(t, "users", svg, pdf, "Per-user phase timings", "shankari_2015-aug-27#1", "sunil_2016-07-20#1", "shankari_2015-08-23#1", "launch", "delete")

	k := sample()
	k.Deployment.Backend = "kubernetes"
	for i := range k.Users {
		k.Users[i].Steps[0].DurationMS *= 4
	}
	svg, pdf = figureText(t)(LaunchPlot(r, k))
	hasAll(t, "launch, two backends", svg, pdf, "docker: PM (n=3, median 310)", "kubernetes: PM (n=3, median 1240)")
	if strings.Contains(svg, "kubernetes: services") {
		t.Error("a backend without service launches has a legend entry for them")
	}
	svg, pdf = figureText(t)(PhasesPlot(r, k))
	hasAll(t, "phases, two backends", svg, pdf, "Time per phase (6 users)", "docker", "kubernetes")

	empty := &Report{Scenario: "empty"}
	svg, _ = figureText(t)(LaunchPlot(empty))
	hasAll(t, "no launch", svg, svg, "no values")
}
