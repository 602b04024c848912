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

// e-mission's multi-sync tests: the day arrives in two pushes, split by
// metadata.write_ts, and the pipeline runs after each; the result must still
// match the ground truth approximately (§1.3).
func TestMultiSync(t *testing.T) {
	for _, c := range []struct {
		name, date string
		split      float64
	}{
		{"iphone_3_2016-02-22", "2016-02-22", 1456192830}, // 2016-02-22T18:00:30-08:00
		{"shankari_2016-08-10", "2016-08-10", 1470850200}, // 2016-08-10T10:30:00-07:00
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			f, err := realdata.Open(filepath.Join(realdata.DirT(t), c.name))
			if err != nil {
				t.Fatal(err)
			}
			es, err := pipeline.ReadEntries(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			var first, second []pipeline.Entry
			for _, e := range es {
				e.UserID = "u"
				if e.Metadata.WriteTS < c.split {
					first = append(first, e)
				} else {
					second = append(second, e)
				}
			}
			st := pipeline.NewMemStore()
			if err := st.Insert(ctx, pipeline.Timeseries, first); err != nil {
				t.Fatal(err)
			}
			split := c.split
			r := &pipeline.Run{Store: st, UserID: "u", Now: func() float64 { return split }}
			if err := r.Execute(ctx); err != nil {
				t.Fatal(err)
			}
			if err := st.Insert(ctx, pipeline.Timeseries, second); err != nil {
				t.Fatal(err)
			}
			r.Now = nil
			if err := r.Execute(ctx); err != nil {
				t.Fatal(err)
			}
			got, err := Trips(ctx, st, atoi(c.date[:4]), atoi(c.date[5:7]), atoi(c.date[8:]))
			if err != nil {
				t.Fatal(err)
			}
			want, err := gt.Load(filepath.Join(realdata.DirT(t), c.name+".ground_truth"))
			if err != nil {
				t.Fatal(err)
			}
			if rep := gt.CompareApprox(want, got); !rep.OK() {
				var b strings.Builder
				_ = rep.Write(&b)
				t.Errorf("two-push run does not match:\n%s", b.String())
			}
		})
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}
