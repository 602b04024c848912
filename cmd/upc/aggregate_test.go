package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAggregateAndSynthBadInput: each bad invocation fails with a message
// naming the problem, before any router or engine is contacted.
func TestAggregateAndSynthBadInput(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "q.json")
	os.WriteFile(q, []byte(`{"offset": 100, "alpha": 0.05, "start_ts": 0, "end_ts": 1, "sel_region": null}`), 0o644)
	badQ := filepath.Join(dir, "bad.json")
	os.WriteFile(badQ, []byte(`{"offset": -1, "alpha": 2, "start_ts": 0, "end_ts": 1}`), 0o644)
	emptyDir := t.TempDir()
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("x"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no data nor query", []string{"aggregate", "count"}, []string{"--data is required", "--query is required"}},
		{"unknown kind", []string{"aggregate", "sum", "--data", dir, "--query", q}, []string{`"sum" is not count or metrics`}},
		{"bad query", []string{"aggregate", "count", "--data", dir, "--query", badQ}, []string{"alpha must be in (0, 1)", "offset must be"}},
		{"no day file", []string{"aggregate", "count", "--data", emptyDir, "--query", q}, []string{"no day file"}},
		{"missing query file", []string{"aggregate", "metrics", "--data", dir, "--query", filepath.Join("..", "..", "nope.json")}, []string{"read query"}},
		{"bad noise", []string{"aggregate", "count", "--data", dir, "--query", q, "--noise", "loud"}, []string{`noise "loud"`}},
		{"network mode without --local", []string{"aggregate", "count", "--data", dir, "--query", q, "--network-mode", "host"}, []string{"--network-mode and --host-ports go with --local"}},
		{"bad network mode", []string{"aggregate", "count", "--data", dir, "--query", q, "--local", "--network-mode", "macvlan"}, []string{`"macvlan" is not one of bridge, host`}},
		{"bad host ports", []string{"aggregate", "count", "--data", dir, "--query", q, "--local", "--network-mode", "host", "--host-ports", "2000-1000"}, []string{`--host-ports (docker.host_ports): "2000-1000"`}},
		{"warm pool without --local", []string{"aggregate", "count", "--data", dir, "--query", q, "--warm-pool", "3"}, []string{"--warm-pool goes with --local"}},
		{"warm pool too big", []string{"aggregate", "count", "--data", dir, "--query", q, "--local", "--warm-pool", "1001"}, []string{"--warm-pool 1001 is not in 0..1000"}},
		{"negative warm pool", []string{"aggregate", "count", "--data", dir, "--query", q, "--local", "--warm-pool", "-1"}, []string{"--warm-pool -1 is not in 0..1000"}},
		{"warm pool beyond the host ports", []string{"aggregate", "count", "--data", dir, "--query", q, "--local", "--network-mode", "host", "--host-ports", "30000-30001", "--warm-pool", "3"}, []string{"--warm-pool 3 is more than the 2 ports of --host-ports 30000-30001"}},
		{"figure without --out", []string{"aggregate", "figure", q}, []string{"--out is required"}},
		{"figure of a file that is no result", []string{"aggregate", "figure", "--out", t.TempDir(), q}, []string{"is not an aggregate result"}},
		{"synth without users", []string{"synth", "--out", t.TempDir()}, []string{"users: 0"}},
		{"synth into a foreign folder", []string{"synth", "--users", "1", "--out", foreign}, []string{"synth did not write"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(filepath.Join(dir, "user-a"), []byte("[]"), 0o644)
			var out, errOut bytes.Buffer
			cmd := newRootCmd(&out, &errOut)
			cmd.SetArgs(tc.args)
			err := cmd.ExecuteContext(context.Background())
			if err == nil {
				t.Fatalf("succeeded; stdout %s", out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

// TestAggregateFigureLabels: runs given as LABEL=RESULT.json are compared
// under their labels against --baseline, and a malformed label, an empty
// baseline or a missing --out is refused naming it, writing nothing.
func TestAggregateFigureLabels(t *testing.T) {
	dir := t.TempDir()
	write := func(name, started string, wall float64) string {
		p := filepath.Join(dir, name)
		b := fmt.Sprintf(`{"query": "count", "users": 256, "number_participants": 256, "network_mode": "host", "started": %q, "wall_ms": %g,
			"pool_fill": {"size": 256, "fill_ms": 20000, "claimed": 256}}`, started, wall)
		if err := os.WriteFile(p, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := write("old.json", "2026-12-07T03:24:00Z", 56900)
	neu := write("new.json", "2026-12-07T03:25:00Z", 40900)
	out := filepath.Join(dir, "fig")
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"aggregate", "figure", "--out", out, "--baseline", "before", "before=" + old, "after=" + neu}, &stdout, &stderr); err != nil {
		t.Fatalf("figure: %v (%s)", err, stderr.String())
	}
	md, err := os.ReadFile(filepath.Join(out, "paths.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"wall / before", "| 256 | before |", "| 256 | after |", "**0.72**"} {
		if !strings.Contains(string(md), w) {
			t.Errorf("paths.md lacks %q:\n%s", w, md)
		}
	}
	for _, f := range []string{"wall.svg", "wall.pdf", "phases.svg", "phases.pdf"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"empty label", []string{"--out", filepath.Join(dir, "x"), "=" + old}, `"=` + old + `": want LABEL=RESULT.json with both parts`},
		{"empty file", []string{"--out", filepath.Join(dir, "x"), "before="}, `"before=": want LABEL=RESULT.json with both parts`},
		{"empty baseline", []string{"--out", filepath.Join(dir, "x"), "--baseline", "", old}, "--baseline must name a path or a label"},
		{"no out", []string{old}, "--out is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), append([]string{"aggregate", "figure"}, tc.args...), &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v; want an error saying %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "x")); !os.IsNotExist(err) {
				t.Errorf("the refused run wrote its folder: %v", err)
			}
		})
	}
}
