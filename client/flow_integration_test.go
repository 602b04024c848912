package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/client/clienttest"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/routerclient"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// TestIntegrationClientFlow needs the Docker engine: the user's client
// against the real router (in process, driving the local engine) and a real
// PM container built from cmd/upc-pm. Launch and unseal, upload a real day,
// download and compare, pause (no answers), resume (answers, same data),
// delete (gone from the router).
func TestIntegrationClientFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tr := clienttest.StartRouter(t, "pm")
	m := tr.Images
	user := "user-" + time.Now().Format("150405.000")
	rc := tr.Client(t, tr.AddUser(t, user, api.RoleUser))
	// A device holding the deployment's manifest: the PM must run its image.
	c := &client.Client{Router: client.RequireDigests(client.NewRouter(rc), m.Digests()), User: user, HTTP: tr.HTTP()}

	inst, err := c.LaunchPM(ctx, "correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if inst.ID == "" || inst.Address == "" || inst.Digest != m.Images["pm"].ID {
		t.Errorf("instance = %+v, want the pinned digest %s", inst, m.Images["pm"].ID)
	}
	st, err := c.PM(inst.Address).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pm %s at %s, status %+v", inst.ID, inst.Address, st)

	entries, err := client.LoadDay(filepath.Join(realdata.DirT(t), "shankari_2015-08-23"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := c.Upload(ctx, inst.Address, entries)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("uploaded %d entries in %s: %d inserted, %d updated", res.Entries, time.Since(start).Round(time.Millisecond), res.Inserted, res.Updated)
	want := client.Expected(entries)
	if res.Inserted != len(want) || res.Inserted+res.Updated != len(entries) {
		t.Errorf("upload result %+v, want %d inserted of %d", res, len(want), len(entries))
	}
	got, err := c.Download(ctx, inst.Address, client.DownloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Compare(want, got); err != nil {
		t.Fatalf("download differs from upload: %v", err)
	}
	for i := 1; i < len(got); i++ {
		if wts(got[i]) < wts(got[i-1]) {
			t.Fatalf("download not sorted by write_ts at %d", i)
		}
	}
	// Uploading the same day again changes nothing: every entry is an update.
	again, err := client.LoadDay(filepath.Join(realdata.DirT(t), "shankari_2015-08-23"))
	if err != nil {
		t.Fatal(err)
	}
	if res2, err := c.Upload(ctx, inst.Address, again); err != nil || res2.Inserted != 0 {
		t.Errorf("second upload = %+v, %v; want no inserts", res2, err)
	}
	// The original download fetched only "document" entries: none in a phone's upload.
	if docs, err := c.Download(ctx, inst.Address, client.DownloadOptions{Type: "document"}); err != nil || len(docs) != 0 {
		t.Errorf("download --type document = %d docs, %v", len(docs), err)
	}

	// Paused: the PM keeps its state and does not answer.
	if err := c.Pause(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	short := pmclient.New(inst.Address, tr.CA.Client(500*time.Millisecond))
	if err := short.Healthz(ctx); err == nil {
		t.Error("paused pm answered")
	}
	if err := c.Resume(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.PM(inst.Address).Healthz(ctx); err != nil {
		t.Fatalf("resumed pm does not answer: %v", err)
	}
	got2, err := c.Download(ctx, inst.Address, client.DownloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Compare(want, got2); err != nil {
		t.Errorf("after pause and resume: %v", err)
	}

	if err := c.Delete(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	// Gone: to its former owner, a missing instance is refused like anyone
	// else's (403), so nobody learns which ids exist.
	if _, err := rc.Get(ctx, inst.ID); statusOf(err) != http.StatusForbidden {
		t.Errorf("Get after delete = %v, want 403", err)
	}
	if err := short.Healthz(ctx); err == nil {
		t.Error("deleted pm still answers")
	}
}

// TestIntegrationLaunchBadRouter: a router that is not there gives a clear
// error and nothing to clean up.
func TestIntegrationLaunchBadRouter(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	rc, err := routerclient.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := &client.Client{Router: client.NewRouter(rc), User: "u"}
	if _, err := c.LaunchPM(context.Background(), "k"); err == nil {
		t.Fatal("launch through a closed router succeeded")
	}
	if _, err := c.LaunchPM(context.Background(), ""); err == nil {
		t.Fatal("launch with an empty key succeeded")
	}
}

func wts(e client.Entry) float64 {
	md, _ := e["metadata"].(map[string]any)
	f, _ := md["write_ts"].(float64)
	return f
}

// TestIntegrationClientRefusesAnUnpromisedImage: a device promised another
// build of the PM than the one the router runs refuses the PM it gets,
// before giving it the key, and deletes it: the router keeps nothing of it.
func TestIntegrationClientRefusesAnUnpromisedImage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tr := clienttest.StartRouter(t, "pm")
	user := "user-" + time.Now().Format("150405.000")
	rc := tr.Client(t, tr.AddUser(t, user, api.RoleUser))
	promised := "sha256:" + strings.Repeat("0", 64)
	c := &client.Client{Router: client.RequireDigests(client.NewRouter(rc), map[string]string{"pm": promised}), User: user}
	_, err := c.LaunchPM(ctx, "correct horse battery staple")
	want := "runs image " + tr.Images.Images["pm"].Ref + " as " + tr.Images.Images["pm"].ID + ", not the required " + promised
	if !errors.Is(err, client.ErrDigest) || !strings.Contains(err.Error(), want) {
		t.Fatalf("launch pm: %v, want ErrDigest %q", err, want)
	}
	if ins, err := rc.List(ctx, user); err != nil || len(ins) != 0 {
		t.Errorf("after the refusal the router lists %+v %v, want nothing", ins, err)
	}
}
