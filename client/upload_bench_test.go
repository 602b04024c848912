package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pm"
	pmapi "github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// BenchmarkUploadDay uploads one real day (shankari_2015-08-23, 413 entries)
// into a real PM (its store on disk, fsync on, served over loopback HTTP) the
// way the original upload_data.py did (one upsert per entry), and, in the same
// run, as one batched insert of the same prepared entries: the baseline that
// shows what mirroring the original costs. Each iteration uses a new user.
func BenchmarkUploadDay(b *testing.B) {
	day := filepath.Join(realdata.DirT(b), "shankari_2015-08-23")
	st, err := store.Open(b.TempDir(), store.Options{InitialBudget: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	owner := access.NewToken(access.PrefixInstance)
	srv := httptest.NewServer(pm.New(st, slog.New(slog.DiscardHandler), pm.Options{MaxBody: 32 << 20,
		Access: access.Instance{SHA256: access.Hash(owner)}}).Handler())
	defer srv.Close()
	ctx := context.Background()
	if err := pmclient.New(srv.URL, nil, pmclient.WithToken(owner)).Unseal(ctx, "bench secret"); err != nil {
		b.Fatal(err)
	}
	n := 0
	b.Run("mode=upsert-per-entry", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			entries, err := client.LoadDay(day)
			if err != nil {
				b.Fatal(err)
			}
			n++
			c := &client.Client{User: fmt.Sprintf("bench-upsert-%d", n), PMSecret: owner}
			b.StartTimer()
			res, err := c.Upload(ctx, srv.URL, entries)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(res.Entries), "entries/op")
		}
	})
	b.Run("mode=batch-insert", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			entries, err := client.LoadDay(day)
			if err != nil {
				b.Fatal(err)
			}
			n++
			user := fmt.Sprintf("bench-batch-%d", n)
			for _, e := range entries {
				if _, err := client.Prepare(e, user); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
			if _, err := pmclient.New(srv.URL, nil, pmclient.WithToken(owner)).Insert(ctx, pmapi.DefaultDatabase, pmapi.Usercache, entries...); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(entries)), "entries/op")
		}
	})
}
