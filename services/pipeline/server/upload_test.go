package server

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/services/internal/testpm"
	"github.com/e-mission/upc/services/pipeline/diary"
	gt "github.com/e-mission/upc/services/pipeline/groundtruth"
	"github.com/e-mission/upc/services/pipeline/pmstore"
	"github.com/e-mission/upc/services/pm/pmtest"
)

// The deployed path: the user's client uploads a day file into the PM's
// usercache (as upload_data.py did), the service moves it to the timeseries
// and runs the pipeline; the day still matches e-mission exactly.
func TestUploadedDayMatches(t *testing.T) {
	for _, c := range []struct{ day, date string }{
		{"shankari_2016-06-20", "2016-06-20"}, // duplicate entries collapse on upload
		{"sunil_2016-07-20", "2016-07-20"},    // iOS
	} {
		t.Run(c.day, func(t *testing.T) {
			ctx := context.Background()
			pmc := startPM(t)
			const user = "uploaded-user"
			entries, err := client.LoadDay(filepath.Join(pmtest.RealExamplesDir(t), c.day))
			if err != nil {
				t.Fatal(err)
			}
			uc := &client.Client{User: user, HTTP: testpm.BearerClient(testpm.OwnerOf(t, pmc))}
			if _, err := uc.Upload(ctx, pmc.BaseURL(), entries); err != nil {
				t.Fatal(err)
			}
			url := serve(t, testpm.Shared())
			code, body := post(t, url+"/run_pipeline", `{`+pmFields(t, pmc)+`, "uuid": "`+user+`"}`)
			if code != http.StatusOK {
				t.Fatalf("run_pipeline: %d %s", code, body)
			}
			day, err := time.Parse("2006-01-02", c.date)
			if err != nil {
				t.Fatal(err)
			}
			got, err := diary.Trips(ctx, pmstore.New(pmc, user), day.Year(), int(day.Month()), day.Day())
			if err != nil {
				t.Fatal(err)
			}
			want, err := gt.Load(filepath.Join(pmtest.RealExamplesDir(t), c.day+".ground_truth"))
			if err != nil {
				t.Fatal(err)
			}
			if rep := gt.CompareExact(want, got); !rep.OK() {
				var b strings.Builder
				_ = rep.Write(&b)
				t.Fatalf("uploaded day:\n%s", b.String())
			}
		})
	}
}
