package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
)

func realExamplesDir(t *testing.T) string { return realdata.DirT(t) }

func TestPipelineCheck(t *testing.T) {
	dir := realExamplesDir(t)
	day := filepath.Join(dir, "shankari_2015-08-23")
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"pipeline", "check", day, day + ".ground_truth"}, &out, &errb)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	for _, want := range []string{"exact comparison: PASS", "approx comparison: PASS", "ok   trip 2:", "section"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// Another day's ground truth does not match, and the command says so.
	out.Reset()
	err = run(context.Background(), []string{"pipeline", "check", day, filepath.Join(dir, "shankari_2016-08-10.ground_truth"), "--date", "2015-08-23"}, &out, &errb)
	if err == nil || !strings.Contains(out.String(), "FAIL") {
		t.Fatalf("mismatch not reported: %v\n%s", err, out.String())
	}
	if err := run(context.Background(), []string{"pipeline", "check", day, day + ".ground_truth", "--date", "23/08/2015"}, &out, &errb); err == nil {
		t.Error("bad date accepted")
	}
}
