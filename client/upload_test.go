package client_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/services/pm"
	pmapi "github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/store"
)

// uploadPM is an unsealed in-process PM; older makes it answer the bulk
// update as a PM that predates it (404). It counts requests by path.
func uploadPM(t *testing.T, older bool) (*client.Client, string, map[string]*atomic.Int64) {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{InitialBudget: 1, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	secret := access.NewToken(access.PrefixInstance)
	h := pm.New(st, slog.New(slog.DiscardHandler), pm.Options{Access: access.Instance{SHA256: access.Hash(secret)}}).Handler()
	counts := map[string]*atomic.Int64{pmapi.PathUpdate: {}, pmapi.PathBulkUpdate: {}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := counts[r.URL.Path]; n != nil {
			n.Add(1)
		}
		if older && r.URL.Path == pmapi.PathBulkUpdate {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { srv.Close(); st.Close() })
	c := &client.Client{User: "u1", PMSecret: secret}
	if err := c.PM(srv.URL).UnsealRandom(context.Background(), strings.Repeat("cd", 32)); err != nil {
		t.Fatal(err)
	}
	return c, srv.URL, counts
}

// An upload in batches stores what the original's one upsert per entry
// stores, in a request per batch; a PM without the bulk update gets one
// request per entry; uploading again changes nothing.
func TestUploadBatches(t *testing.T) {
	ctx := context.Background()
	load := func() []client.Entry {
		entries, err := client.LoadDay(filepath.Join(realdata.DirT(t), "shankari_2016-08-10"))
		if err != nil {
			t.Fatal(err)
		}
		return entries
	}
	prepared := load()
	for _, e := range prepared {
		if _, err := client.Prepare(e, "u1"); err != nil {
			t.Fatal(err)
		}
	}
	want := client.Expected(prepared)
	for _, tc := range []struct {
		name           string
		batch          int
		older          bool
		updates, bulks int64
	}{
		{"one per entry", 1, false, int64(len(prepared)), 0},
		{"batches of 100", 100, false, 0, int64(len(prepared)+99) / 100},
		{"batches, older PM", 1000, true, int64(len(prepared)), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, addr, counts := uploadPM(t, tc.older)
			c.UploadBatch = tc.batch
			res, err := c.Upload(ctx, addr, load())
			if err != nil {
				t.Fatal(err)
			}
			if res.Entries != len(prepared) || res.Inserted != len(want) || res.Inserted+res.Updated != len(prepared) {
				t.Errorf("result %+v; %d entries, %d documents", res, len(prepared), len(want))
			}
			if u, b := counts[pmapi.PathUpdate].Load(), counts[pmapi.PathBulkUpdate].Load(); u != tc.updates || b != tc.bulks {
				t.Errorf("%d updates and %d bulk updates, want %d and %d", u, b, tc.updates, tc.bulks)
			}
			got, err := c.Download(ctx, addr, client.DownloadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := client.Compare(want, got); err != nil {
				t.Error(err)
			}
			again, err := c.Upload(ctx, addr, load())
			if err != nil || again.Inserted != 0 {
				t.Errorf("again: %+v %v", again, err)
			}
		})
	}
}
