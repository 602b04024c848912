package lossless_test

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/harness/lossless"
	"github.com/e-mission/upc/internal/realdata"
)

// The check stays apart from the code it checks: no import of UPC's own.
func TestImportsNothingOfUPC(t *testing.T) {
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, p := range pkgs {
		if strings.HasSuffix(name, "_test") {
			continue
		}
		for fname, f := range p.Files {
			if strings.HasSuffix(fname, "_test.go") {
				continue
			}
			n++
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if strings.HasPrefix(path, "github.com/e-mission/upc") {
					t.Errorf("%s imports %s: the lossless check must read the day file on its own", fname, path)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no source file found")
	}
}

// day is a real day file's path (gzipped, as the repository keeps them).
func day(t *testing.T, name string) string {
	t.Helper()
	p, err := realdata.Resolve(filepath.Join(realdata.DirT(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// uploaded is what the PM holds after the client uploaded path, as the
// client's own code models it: each entry prepared (client.Prepare), after
// spoil when not nil (a bug in preparation), then merged per upsert key
// (client.Expected), which is what a download returns.
func uploaded(t *testing.T, path string, spoil func(e client.Entry)) []map[string]any {
	t.Helper()
	entries, err := client.LoadDay(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := client.Prepare(e, "u1"); err != nil {
			t.Fatal(err)
		}
		if spoil != nil {
			spoil(e)
		}
	}
	return client.Expected(entries)
}

// Every real day, uploaded as the client does it, passes: the rules stated
// here and the client's code agree, duplicates of one key included
// (shankari_2016-06-20 has 124, one of them with different data).
func TestRealDaysPass(t *testing.T) {
	days, err := realdata.Days(realdata.DirT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(days) < 6 {
		t.Fatalf("%d days, want the six real ones", len(days))
	}
	for _, d := range days {
		t.Run(d, func(t *testing.T) {
			p := day(t, d)
			entries, err := lossless.ReadDay(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := lossless.Check(entries, uploaded(t, p, nil)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A preparation that loses a field passes the client's own comparison (both
// of its sides come from the prepared entries) and fails this one.
func TestABugInPreparationShows(t *testing.T) {
	p := day(t, "shankari_2015-08-23")
	dropAccuracy := func(e client.Entry) {
		if d, ok := e["data"].(map[string]any); ok {
			delete(d, "accuracy")
		}
	}
	down := uploaded(t, p, dropAccuracy)
	prepared, err := client.LoadDay(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range prepared {
		if _, err := client.Prepare(e, "u1"); err != nil {
			t.Fatal(err)
		}
		dropAccuracy(e)
	}
	if err := client.Compare(client.Expected(prepared), down); err != nil {
		t.Fatalf("the client's comparison was expected to miss the bug: %v", err)
	}
	entries, err := lossless.ReadDay(p)
	if err != nil {
		t.Fatal(err)
	}
	err = lossless.Check(entries, down)
	if err == nil || !strings.Contains(err.Error(), "differs at data.accuracy: the day file has") || !strings.Contains(err.Error(), "the download nothing") {
		t.Fatalf("a lost field went unseen: %v", err)
	}
}

// Each way a download can differ from the day fails the check and is named.
func TestDifferencesFail(t *testing.T) {
	p := day(t, "shankari_2015-08-23")
	entries, err := lossless.ReadDay(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		spoil func(down []map[string]any) []map[string]any
		says  string
	}{
		{"a document dropped", func(d []map[string]any) []map[string]any { return append(d[:10], d[11:]...) }, "is missing from the download"},
		{"a coordinate altered", func(d []map[string]any) []map[string]any {
			for _, doc := range d {
				if data, _ := doc["data"].(map[string]any); data["latitude"] != nil {
					data["latitude"] = data["latitude"].(float64) + 1e-9
					break
				}
			}
			return d
		}, "differs at data.latitude"},
		{"metadata lost", func(d []map[string]any) []map[string]any {
			delete(d[5]["metadata"].(map[string]any), "time_zone")
			return d
		}, "differs at metadata.time_zone"},
		{"a time stamp left in ms", func(d []map[string]any) []map[string]any {
			data := d[7]["data"].(map[string]any)
			data["ts"] = data["ts"].(float64) * 1000
			return d
		}, "differs at data.ts"},
		{"a document doubled", func(d []map[string]any) []map[string]any {
			return append(d[:3], append([]map[string]any{d[2]}, d[3:]...)...)
		}, "is in the download 2 times"},
		{"a document too many", func(d []map[string]any) []map[string]any {
			var extra map[string]any
			b, _ := json.Marshal(d[len(d)-1])
			_ = json.Unmarshal(b, &extra)
			extra["metadata"].(map[string]any)["write_ts"] = 2e9
			return append(d, extra)
		}, "which no day entry has"},
		{"out of order", func(d []map[string]any) []map[string]any { d[0], d[1] = d[1], d[0]; return d }, "not in write_ts order"},
		{"nothing downloaded", func(d []map[string]any) []map[string]any { return nil }, "413 differences"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := lossless.Check(entries, c.spoil(uploaded(t, p, nil)))
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("got %v, want an error saying %q", err, c.says)
			}
		})
	}
}

// The upload's own changes pass: milliseconds, a missing type, ids.
func TestUploadRules(t *testing.T) {
	var day []map[string]any
	if err := json.Unmarshal([]byte(`[
		{"_id": {"$oid": "a"}, "user_id": {"$uuid": "x"}, "metadata": {"key": "k", "write_ts": 1440000000000, "write_local_dt": {"year": 2015}}, "data": {"ts": 1440000000500, "v": 1}},
		{"_id": {"$oid": "b"}, "metadata": {"key": "k", "type": "sensor-data", "write_ts": 1440000000}, "data": {"ts": 1440000000.5, "v": 2}, "extra": true}
	]`), &day); err != nil {
		t.Fatal(err)
	}
	// Both are one key: the second's fields replace the first's.
	down := []map[string]any{{"metadata": map[string]any{"key": "k", "type": "sensor-data", "write_ts": 1440000000.0},
		"data": map[string]any{"ts": 1440000000.5, "v": 2.0}, "extra": true}}
	if err := lossless.Check(day, down); err != nil {
		t.Fatal(err)
	}
	delete(down[0], "extra")
	if err := lossless.Check(day, down); err == nil || !strings.Contains(err.Error(), "differs at extra") {
		t.Fatalf("a lost top-level field: %v", err)
	}
	if _, err := lossless.ReadDay(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing day file read")
	}
}
