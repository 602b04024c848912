package pm_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/testskip"
	"github.com/e-mission/upc/services/pm"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/pmtest"
	"github.com/e-mission/upc/services/pm/store"
)

// TestOriginalClientScripts runs the original e-mission-upc-aggregator
// client_scripts/upload_data.py and download_data.py, unchanged, against
// this PM. It needs a checkout of that repository (not vendored here: its
// code is not ours to copy) named by UPC_ORIGINAL_CLIENT, and a Python 3 with
// requests, pymongo (bson) and future (Debian: python3-requests,
// python3-pymongo, python3-future); UPC_PYTHON names the interpreter
// (default python3). Without UPC_ORIGINAL_CLIENT it says so and skips.
//
//	UPC_ORIGINAL_CLIENT=~/e-mission-upc-aggregator UPC_PYTHON=/usr/bin/python3 \
//	    go test -run OriginalClientScripts -v ./services/pm/
func TestOriginalClientScripts(t *testing.T) {
	repo := os.Getenv("UPC_ORIGINAL_CLIENT")
	if repo == "" {
		testskip.Skip(t, "UPC_ORIGINAL_CLIENT is not set: no checkout of the original client library to run")
	}
	py := os.Getenv("UPC_PYTHON")
	if py == "" {
		py = "python3"
	}
	// The original library sends no credential: the PM runs as the router
	// launches it for insecure_legacy.
	p := startPMAccess(t, t.TempDir(), store.Options{KDF: testKDF, InitialBudget: 1}, pm.Options{Access: access.Instance{Legacy: true}}, "")
	ctx := context.Background()
	if err := p.c.Unseal(ctx, secret); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(py, args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "PYTHONPATH="+repo)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", py, args, err, out)
		}
		return string(out)
	}
	for _, path := range pmtest.DayFiles(t)[:2] {
		uuid := "original-" + filepath.Base(path)
		run("client_scripts/upload_data.py", path, uuid, p.srv.URL)

		// What the script uploaded, read back with our client.
		docs, err := p.c.Find(ctx, pmclient.FindRequest{Collection: api.Usercache, Filter: map[string]any{"user_id": uuid},
			Sort: []api.SortField{api.Asc("metadata.write_ts")}})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, d := range pmtest.LoadDay(t, path) {
			md := d["metadata"].(map[string]any)
			want[mustJSON(t, []any{md["type"], md["write_ts"], md["key"]})] = true
		}
		if len(docs) != len(want) {
			t.Fatalf("%s: %d documents in the PM, %d distinct entries in the file", path, len(docs), len(want))
		}

		// download_data.py asks for the user's metadata.type "document"
		// entries only (what the server sends the phone): put three there.
		for i, w := range []float64{30, 10, 20} {
			if _, err := p.c.InsertOne(ctx, api.DefaultDatabase, api.Usercache, map[string]any{"user_id": uuid,
				"metadata": map[string]any{"type": "document", "key": "diary/trips-" + string(rune('a'+i)), "write_ts": w},
				"data":     map[string]any{"n": i}}); err != nil {
				t.Fatal(err)
			}
		}
		docs = append(docs, nil, nil, nil)
		out := filepath.Join(t.TempDir(), "out.json")
		run("client_scripts/download_data.py", out, uuid, p.srv.URL)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var got []map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("download wrote %q: %v", b, err)
		}
		var keys []string
		for _, d := range got {
			if _, ok := d["_id"]; ok {
				t.Error("download kept _id")
			}
			if _, ok := d["user_id"]; ok {
				t.Error("download kept user_id")
			}
			keys = append(keys, d["metadata"].(map[string]any)["key"].(string))
		}
		if strings.Join(keys, ",") != "diary/trips-b,diary/trips-c,diary/trips-a" {
			t.Fatalf("download_data.py wrote %v, want the three documents by write_ts", keys)
		}
		t.Logf("%s: upload_data.py stored %d entries; download_data.py fetched the %d documents", filepath.Base(path), len(docs)-3, len(got))
	}
	if strings.Contains(p.logs.String(), secret) {
		t.Error("the key is in the logs")
	}
}
