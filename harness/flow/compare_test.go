package flow

import (
	"context"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/harness/lossless"
	"github.com/e-mission/upc/harness/runner"
	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/internal/realdata"
)

// realPath is a real day's file (or ground truth's), gzipped as the
// repository keeps them.
func realPath(t *testing.T, name string) string {
	t.Helper()
	p, err := realdata.Resolve(filepath.Join(realdata.DirT(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The compare step reads the day file itself: a download missing an entry,
// or one whose value was altered, fails it.
func TestCompareStep(t *testing.T) {
	dayPath := realPath(t, "shankari_2015-08-23")
	day, err := lossless.ReadDay(dayPath)
	if err != nil {
		t.Fatal(err)
	}
	// The download of an honest upload: the day's entries as the PM keeps
	// them (no _id, no user_id, no write_local_dt; this day has no
	// duplicate and no millisecond time stamp), in write_ts order.
	download := func() []map[string]any {
		d, _ := lossless.ReadDay(dayPath)
		for _, e := range d {
			delete(e, "_id")
			delete(e, "user_id")
			delete(e["metadata"].(map[string]any), "write_local_dt")
		}
		wts := func(e map[string]any) float64 { return e["metadata"].(map[string]any)["write_ts"].(float64) }
		sort.SliceStable(d, func(i, j int) bool { return wts(d[i]) < wts(d[j]) })
		return d
	}
	step := func(down []map[string]any) (runner.Outcome, error) {
		s := &session{u: scenario.User{DayPath: dayPath}, c: &client.Client{}, uploaded: true, downloaded: down}
		return s.Do(context.Background(), scenario.Step{Do: scenario.Compare})
	}
	o, err := step(download())
	if err != nil {
		t.Fatalf("an honest download: %v", err)
	}
	if o.Values["entries"] != float64(len(day)) {
		t.Errorf("outcome %+v", o)
	}
	dropped := download()
	dropped = append(dropped[:100], dropped[101:]...)
	if _, err := step(dropped); err == nil || !strings.Contains(err.Error(), "missing from the download") {
		t.Errorf("a dropped entry: %v", err)
	}
	altered := download()
	altered[200]["data"].(map[string]any)["ts"] = 0.0
	if _, err := step(altered); err == nil || !strings.Contains(err.Error(), "differs at data.ts") {
		t.Errorf("an altered entry: %v", err)
	}
	if _, err := (&session{u: scenario.User{DayPath: dayPath}, c: &client.Client{}}).Do(context.Background(), scenario.Step{Do: scenario.Compare}); err == nil {
		t.Error("compare with nothing uploaded passed")
	}
}
