package scenario

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	// Each invalid file lists the problems its error must name, all at once.
	want := map[string][]string{
		"invalid-unknown-field.yaml": {`unknown field "sead"`},
		"invalid-step-field.yaml":    {`step: json: unknown field "when"`},
		"invalid-duration.yaml":      {`duration "5 minutes"`},
		"invalid-after-delete.yaml":  {"steps[2]: upload comes after delete"},
		"invalid-type.yaml":          {`field "seed"`},
		"invalid-synthetic.yaml": {`population: real_days.dir "other" and synthetic.dir "" differ`, "synthetic.users: 0", "synthetic.max_offset: 2",
			`synthetic.days[0]: "x.ground_truth"`},
		"invalid-aggregate.yaml": {
			`steps[0].query: "sum" is not count or metrics`,
			"steps[1].query: required (count or metrics)",
			`steps[2].query_file: "../q.json" must be a path inside`,
			"steps[3]: query, query_file and pipelines belong to aggregate steps only",
			"steps[6].pipelines: 65 is not a pool size (1-64",
			"steps[7]: query, query_file and pipelines belong to aggregate steps only",
			"steps[4]: launch comes after an aggregate step",
			"steps[5]: metric and freq belong to metrics steps only",
		},
		"invalid-nodes.yaml": {
			`deployment.nodes: fake (kwok's simulated nodes) needs backend kubernetes, not "docker"`,
			"steps[2]: resume cannot run on fake nodes",
			"steps[1]: unseal cannot run on fake nodes, where pods run nothing (only launch, pause, delete)",
		},
		"invalid-nodes-tier.yaml": {`deployment.nodes: "both" is not real or fake`},
		"invalid-empty.yaml": {
			"backend: required", "deployment.agents: at least one", "population: real_days or synthetic is required", "steps: at least one step",
		},
		"invalid-many.yaml": {
			`name: "Bad Name"`,
			`backend: "swarm" is not docker or kubernetes`,
			"parallel: -1",
			"deployment.agents[0].weight: 0",
			`deployment.agents[1].name: "a" is used twice`,
			`days[0]: "x.ground_truth" is not a day file name`,
			`days[2]: "d" is listed twice`,
			"steps[0]: upload needs an earlier unseal step",
			`steps[1]: unknown step "fly"`,
			`steps[2].metric: "speed"`,
			`steps[2].freq: "HOURLY"`,
			"steps[2]: metrics needs an earlier pipeline step",
			"steps[3]: metric and freq belong to metrics steps only",
			"timeouts.step: -1s is negative",
			"expectations.max_launch: -5s is negative",
			"expectations.lossless: the steps have no compare",
			"expectations.trips_match_ground_truth: the steps have no pipeline",
			`expectations.trips_comparison: "roughly" is not exact or approx`,
		},
	}
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			s, err := Load(f)
			if strings.HasPrefix(name, "valid-") {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if s.Parallel < 1 || s.Timeouts.Step <= 0 || (s.Population.RealDays != nil && s.Population.RealDays.UsersPerDay < 1) {
					t.Errorf("defaults not set: %+v", s)
				}
				return
			}
			if err == nil {
				t.Fatal("Load accepted an invalid file")
			}
			subs, ok := want[name]
			if !ok {
				t.Fatalf("no expectation for %s (error: %v)", name, err)
			}
			for _, sub := range subs {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("error lacks %q:\n%v", sub, err)
				}
			}
		})
	}
}

func TestStepsDecodeBothForms(t *testing.T) {
	s, err := Load("testdata/valid-full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := s.Steps[8]
	if m.Do != Metrics || m.Metric != "count" || m.Freq != "DAILY" {
		t.Errorf("metrics step = %+v", m)
	}
	if s.Timeouts.Standup != Duration(90*time.Second) {
		t.Errorf("standup = %v", time.Duration(s.Timeouts.Standup))
	}
	// A round trip through JSON (the report records the scenario) keeps it.
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Scenario
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if back.Steps[8] != m || back.Steps[0].Do != Launch || back.Timeouts != s.Timeouts {
		t.Errorf("round trip changed the scenario: %s", b)
	}
}

func TestUsers(t *testing.T) {
	s := &Scenario{Seed: 7, Population: Population{RealDays: &RealDays{Days: []string{"d1", "d2"}, UsersPerDay: 2}}}
	us, err := s.Users("testdata/days", "run1")
	if err != nil {
		t.Fatal(err)
	}
	if len(us) != 4 {
		t.Fatalf("got %d users, want 4", len(us))
	}
	if us[0].Name != "d1#1" || us[0].ExpectedTrips != 2 || us[2].ExpectedTrips != 0 {
		t.Errorf("users = %+v", us)
	}
	ids := map[string]bool{}
	for _, u := range us {
		ids[u.ID] = true
		if len(u.ID) != 36 || len(u.Key) != 64 {
			t.Errorf("id %q key %q", u.ID, u.Key)
		}
	}
	if len(ids) != 4 {
		t.Errorf("ids not unique: %v", ids)
	}
	// Same seed, same run: same ids and keys; another run: other ids, same keys.
	again, _ := s.Users("testdata/days", "run1")
	other, _ := s.Users("testdata/days", "run2")
	if again[1].ID != us[1].ID || again[1].Key != us[1].Key {
		t.Error("users are not reproducible from the seed")
	}
	if other[1].ID == us[1].ID || other[1].Key != us[1].Key {
		t.Error("run should change ids only")
	}

	s.Population.RealDays.Days = []string{"d1", "d3", "missing"}
	_, err = s.Users("testdata/days", "run1")
	if err == nil || !strings.Contains(err.Error(), "day d3: ground truth") || !strings.Contains(err.Error(), "day missing:") {
		t.Errorf("want both bad days named, got %v", err)
	}
}

func TestLocate(t *testing.T) {
	t.Setenv(DataEnv, "")
	if got, err := Locate("days", "testdata", "."); err != nil || got != filepath.Join("testdata", "days") {
		t.Errorf("Locate(dir) = %q, %v", got, err)
	}
	if _, err := Locate("nope", "testdata", "."); err == nil {
		t.Error("a missing dir must be an error")
	}
	t.Setenv(DataEnv, "testdata/days")
	if got, _ := Locate("", "testdata", "."); got != "testdata/days" {
		t.Errorf("env not used: %q", got)
	}
	t.Setenv(DataEnv, "")
	tmp := t.TempDir()
	deep := filepath.Join(tmp, "a", "b")
	want := filepath.Join(tmp, "testdata", "real_examples")
	for _, d := range []string{deep, want} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := Locate("", deep, deep); err != nil || got != want {
		t.Errorf("walk up = %q, %v; want %q", got, err, want)
	}
}

// TestDefaultScenario checks the shipped default scenario against the real days.
func TestDefaultScenario(t *testing.T) {
	t.Setenv(DataEnv, "")
	s, err := Load("../../scenarios/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := Locate(s.Population.RealDays.Dir, "../../scenarios", ".")
	if err != nil {
		t.Fatal(err)
	}
	us, err := s.Users(dir, "r")
	if err != nil {
		t.Fatal(err)
	}
	trips := map[string]int{}
	for _, u := range us {
		trips[u.Day] = u.ExpectedTrips
		tr := u.Truth
		if tr.Year < 2015 || tr.Timezone == "" || tr.StartTs <= 0 || tr.EndTs <= tr.StartTs || tr.FirstStart == [2]float64{} {
			t.Errorf("%s: truth %+v", u.Day, tr)
		}
		if u.Day == "shankari_2015-aug-27" && (tr.Year != 2015 || tr.Month != 8 || tr.Day != 27 || tr.Timezone != "America/Los_Angeles") {
			t.Errorf("aug-27 truth date %+v", tr)
		}
	}
	want := map[string]int{"shankari_2015-aug-27": 8, "shankari_2016-06-20": 6, "shankari_2016-08-10": 5,
		"shankari_2015-08-23": 3, "iphone_3_2016-02-22": 9, "sunil_2016-07-20": 2}
	if len(us) != 6 || len(trips) != 6 {
		t.Fatalf("default scenario has %d users over %d days, want 6 and 6", len(us), len(trips))
	}
	for d, n := range want {
		if trips[d] != n {
			t.Errorf("%s: %d ground-truth trips, want %d", d, trips[d], n)
		}
	}
}

// TestShippedScenarios loads every scenario in scenarios/ and resolves its users.
func TestShippedScenarios(t *testing.T) {
	t.Setenv(DataEnv, "")
	files, err := filepath.Glob("../../scenarios/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			s, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			dir, err := Locate(s.Population.SourceDir(), filepath.Dir(f), ".")
			if err != nil {
				t.Fatal(err)
			}
			if syn := s.Population.Synthetic; syn != nil {
				var us []User
				want := syn.Users
				if s.NeedsDays() {
					// Made as the run makes them, a dozen at most: a
					// day file each costs ~50 CPU-ms.
					syn.Users = min(syn.Users, 12)
					want = syn.Users
					us, err = s.Synthesize(context.Background(), dir, t.TempDir(), "r")
				} else {
					us, err = s.PlanSynthetic(dir, "r")
				}
				if err != nil || len(us) != want {
					t.Errorf("%d synthetic users (%v), want %d", len(us), err, want)
				}
				return
			}
			us, err := s.Users(dir, "r")
			if err != nil {
				t.Fatal(err)
			}
			if want := len(s.Population.RealDays.Days) * s.Population.RealDays.UsersPerDay; len(us) != want {
				t.Errorf("%d users, want %d", len(us), want)
			}
		})
	}
}

// TestSynthesize makes synthetic users from two real days: each has its own
// day file and ground truth, moved in time and space, with the source's trips.
func TestSynthesize(t *testing.T) {
	t.Setenv(DataEnv, "")
	s, err := Load("testdata/valid-synthetic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.Population.Synthetic.Users = 4
	dir, err := Locate("", "../../scenarios", ".")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	us, err := s.Synthesize(context.Background(), dir, out, "r")
	if err != nil {
		t.Fatal(err)
	}
	if len(us) != 4 {
		t.Fatalf("%d users", len(us))
	}
	want := map[int]bool{3: true, 2: true} // 08-23 has 3 trips, sunil 2
	for _, u := range us {
		if !want[u.ExpectedTrips] || u.Truth.EndTs <= u.Truth.StartTs || filepath.Dir(u.DayPath) != out {
			t.Errorf("user %+v", u)
		}
	}
	if _, err := s.Users(dir, "r"); err == nil {
		t.Error("Users must refuse a synthetic population")
	}
	// Planned without files, the same users: names, ids and keys.
	planned, err := s.PlanSynthetic(dir, "r")
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range planned {
		if w := us[i]; u.Name != w.Name || u.ID != w.ID || u.Key != w.Key || u.Day != w.Day || u.DayPath != "" {
			t.Errorf("planned user %d: %+v, made %+v", i, u, w)
		}
	}
	if !s.NeedsDays() {
		t.Error("NeedsDays false for a scenario that uploads")
	}
	s.Steps = []Step{{Do: Launch}, {Do: Pause}, {Do: Delete}}
	if s.NeedsDays() {
		t.Error("NeedsDays true for launch, pause, delete")
	}
}

// The trips must match exactly unless the scenario accepts the approximate
// comparison, which only a scenario checking trips may name.
func TestTripsComparison(t *testing.T) {
	full, err := Load("testdata/valid-full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c := full.Expectations.TripsComparison; c != TripsExact {
		t.Errorf("default comparison %q, want %q", c, TripsExact)
	}
	syn, err := Load("testdata/valid-synthetic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c := syn.Expectations.TripsComparison; c != TripsApprox {
		t.Errorf("comparison %q, want %q", c, TripsApprox)
	}
	b, err := os.ReadFile("testdata/valid-synthetic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "trips_match_ground_truth: true, ", "", 1)
	if _, err := Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), "trips_comparison: set without trips_match_ground_truth") {
		t.Errorf("a comparison without trips_match_ground_truth: %v", err)
	}
}
