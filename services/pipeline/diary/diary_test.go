package diary

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pipeline"
	gt "github.com/e-mission/upc/services/pipeline/groundtruth"
)

// The six real days with their ground truth: the Android days must match
// e-mission exactly, the iOS days at least approximately.
var days = []struct {
	name, date string
	exact      bool
}{
	{"shankari_2015-aug-27", "2015-08-27", true},
	{"shankari_2016-06-20", "2016-06-20", true},
	{"shankari_2016-08-10", "2016-08-10", true},
	{"shankari_2015-08-23", "2015-08-23", true},
	{"iphone_3_2016-02-22", "2016-02-22", false},
	{"sunil_2016-07-20", "2016-07-20", false},
}

func runDay(t testing.TB, name, date string) []gt.Trip {
	t.Helper()
	f, err := realdata.Open(filepath.Join(realdata.DirT(t), name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := RunFile(context.Background(), f, date)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestRealDays(t *testing.T) {
	for _, d := range days {
		t.Run(d.name, func(t *testing.T) {
			want, err := gt.Load(filepath.Join(realdata.DirT(t), d.name+".ground_truth"))
			if err != nil {
				t.Fatal(err)
			}
			got := runDay(t, d.name, d.date)
			rep := gt.CompareExact(want, got)
			if !d.exact && !rep.OK() {
				rep = gt.CompareApprox(want, got)
			}
			if !rep.OK() {
				var b strings.Builder
				_ = rep.Write(&b)
				t.Errorf("%s does not match its ground truth:\n%s", d.name, b.String())
			}
		})
	}
}

var _ = pipeline.DefaultSeed
