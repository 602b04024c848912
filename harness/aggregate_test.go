package harness

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/harness/scenario"
)

// The shipped queries and the defaults parse as the aggregator reads them,
// and each costs a user at most the PM's default budget.
func TestAggregateQueries(t *testing.T) {
	sc, err := scenario.Load("../scenarios/aggregate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	steps := sc.AggregateSteps()
	if len(steps) != 2 || len(sc.UserSteps()) != 0 {
		t.Fatalf("aggregate scenario: %d aggregate and %d user steps, want 2 and 0", len(steps), len(sc.UserSteps()))
	}
	budget := initialBudget()
	if budget <= 0 {
		t.Fatalf("initial budget %v", budget)
	}
	for _, st := range append(steps, scenario.Step{Do: scenario.Aggregate, Query: scenario.QueryCount}, scenario.Step{Do: scenario.Aggregate, Query: scenario.QueryMetrics}) {
		_, q, err := Query(st, "../scenarios")
		if err != nil {
			t.Fatalf("%s: %v", st, err)
		}
		eps, err := q.Epsilon()
		if err != nil || eps.Total <= 0 || eps.Total > budget {
			t.Errorf("%s (%s): ε %v (%v), want within (0, %v]", st, st.QueryFile, eps.Total, err, budget)
		}
	}
	// Each step draws its own seeded noise over users of its own.
	if AggregateSeed(sc, 0) == AggregateSeed(sc, 1) {
		t.Error("aggregate steps share a seed")
	}
}

// A query file that is missing, or that the aggregator would refuse, fails
// the run before anything starts, naming the step and the problem.
func TestAggregateQueryRefused(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"offset": 10, "alpha": 2}`), 0o644)
	os.WriteFile(filepath.Join(dir, "extra.json"), []byte(`{"offset": 10, "alpha": 0.5, "start_ts": 0, "end_ts": 1, "sel_region": {}, "colour": 1}`), 0o644)
	for _, c := range []struct {
		step scenario.Step
		want string
	}{
		{scenario.Step{Do: scenario.Aggregate, Query: "count", QueryFile: "missing.json"}, "aggregate(count) query_file: open"},
		{scenario.Step{Do: scenario.Aggregate, Query: "count", QueryFile: "bad.json"}, "aggregate(count) query bad.json"},
		{scenario.Step{Do: scenario.Aggregate, Query: "count", QueryFile: "extra.json"}, `unknown field "colour"`},
		{scenario.Step{Do: scenario.Aggregate, Query: "metrics", QueryFile: "bad.json"}, "aggregate(metrics) query bad.json"},
		{scenario.Step{Do: scenario.Aggregate, Query: "sum"}, `query kind "sum" is not count or metrics`},
	} {
		_, _, err := Query(c.step, dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want it to name %q", c.step, err, c.want)
		}
	}
}

// The default count query's answer from the six real days' ground truths:
// every day but sunil's (east of the box) passes through north Mountain View.
func TestGroundTruthCount(t *testing.T) {
	days := []string{"shankari_2015-aug-27", "shankari_2016-06-20", "shankari_2016-08-10", "shankari_2015-08-23", "iphone_3_2016-02-22", "sunil_2016-07-20"}
	users, err := scenario.DayUsers(1, "../testdata/real_examples", "run", days, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, q, err := Query(scenario.Step{Do: scenario.Aggregate, Query: scenario.QueryCount}, ".")
	if err != nil {
		t.Fatal(err)
	}
	n, err := groundTruthCount(users, q)
	if err != nil || n != 5 {
		t.Errorf("ground-truth count = %d, %v; want 5", n, err)
	}
	n, err = groundTruthCount(users[5:], q)
	if err != nil || n != 0 {
		t.Errorf("sunil's ground-truth count = %d, %v; want 0", n, err)
	}
}

// A run the harness cannot carry out is refused before anything starts.
func TestAggregateRunRefused(t *testing.T) {
	dir := t.TempDir()
	sc := filepath.Join(dir, "s.yaml")
	os.WriteFile(sc, []byte("name: x\nbackend: docker\ndeployment: {agents: [{name: a, weight: 1}]}\npopulation: {real_days: {days: [shankari_2015-08-23], dir: "+
		filepath.Join(mustAbs(t, "../testdata/real_examples"))+"}}\nsteps: [{do: aggregate, query: count, query_file: none.json}]\n"), 0o644)
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{ScenarioPath: sc}, "aggregate(count) query_file: open"},
	} {
		_, err := Run(context.Background(), c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want it to name %q", c.o, err, c.want)
		}
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
