package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	a, b := sample(), sample()
	a.Run, b.Run = "run-a", "run-b"
	// The after run is slower at upload and drew other noise.
	for i := range b.Users {
		for j := range b.Users[i].Steps {
			if b.Users[i].Steps[j].Name == "upload" {
				b.Users[i].Steps[j].DurationMS *= 2
			}
		}
	}
	var sb strings.Builder
	Compare(&sb, a, a)
	if strings.Contains(sb.String(), "NO") || !strings.Contains(sb.String(), "yes") {
		t.Errorf("a run compared with itself differs:\n%s", sb.String())
	}
	b.Aggregates[0].Noisy = map[string]float64{"count": 4}
	b.Environment.Seeds = []Seed{{Name: "scenario", Value: 20151128}}
	sb.Reset()
	Compare(&sb, a, b)
	out := sb.String()
	for _, want := range []string{"before: run-a", "after:  run-b", "upload", "2.00", "aggregate#1 count", "NO", "aggregate#1 pm", "the aggregator exited with 1", "different seeds (scenario 20151127, then scenario 20151128)"} {
		if !strings.Contains(out, want) {
			t.Errorf("comparison lacks %q:\n%s", want, out)
		}
	}
	dir := t.TempDir()
	if err := WriteCompare(dir, a, b); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"compare.txt", "compare.svg", "compare.pdf", "error.svg", "error.pdf"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, JSONFile), []byte(`{"scenario": "x"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{`), 0o644)
	for path, want := range map[string]string{
		dir:                            "no run id",
		filepath.Join(dir, "bad.json"): "unexpected end",
		filepath.Join(dir, "none"):     "no such file",
	} {
		if _, err := Load(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%s) = %v, want %q", path, err, want)
		}
	}
}
