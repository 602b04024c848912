package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/client/clienttest"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/metrics"
)

// TestClientBadInput: each bad invocation of `upc client` fails with a
// message naming the problem, before anything is contacted.
func TestClientBadInput(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty-key")
	os.WriteFile(empty, nil, 0o600)
	badConf := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badConf, []byte("upc_mode: swarm\n"), 0o600)
	badCount := filepath.Join(dir, "count.json")
	os.WriteFile(badCount, []byte(`{"ofset": 100}`), 0o600)
	badMetrics := filepath.Join(dir, "metrics.json")
	os.WriteFile(badMetrics, []byte(strings.Replace(metricsQuery, "DAILY", "HOURLY", 1)), 0o600)
	t.Setenv("UPC_KEY", "")
	t.Setenv("UPC_KEY_FILE", "")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"launch without key", []string{"client", "launch", "--user", "u"}, "no key"},
		{"missing CA file", []string{"client", "--ca", filepath.Join(dir, "nope.crt"), "delete", "x"}, "CA bundle"},
		{"CA file that is no certificate", []string{"client", "--ca", empty, "delete", "x"}, "no PEM certificate"},
		{"launch with empty key file", []string{"client", "launch", "--user", "u", "--key-file", empty}, "is empty"},
		{"launch with missing key file", []string{"client", "launch", "--user", "u", "--key-file", filepath.Join(dir, "nope")}, "read key"},
		{"launch without user", []string{"client", "launch", "--key-file", "/etc/hostname"}, "--user is required"},
		{"upload without pm", []string{"client", "upload", "--user", "u", "day.json"}, "--pm is required"},
		{"upload without file", []string{"client", "upload", "--user", "u", "--pm", "http://127.0.0.1:1"}, "requires at least 1 arg"},
		{"upload of a missing file", []string{"client", "upload", "--user", "u", "--pm", "http://127.0.0.1:1", filepath.Join(dir, "nope")}, "read day file"},
		{"upload with batch 0", []string{"client", "upload", "--user", "u", "--pm", "http://127.0.0.1:1", "--batch", "0", "day.json"}, "--batch must be between 1 and 10000"},
		{"upload with a huge batch", []string{"client", "upload", "--user", "u", "--pm", "http://127.0.0.1:1", "--batch", "10001", "day.json"}, "--batch must be between 1 and 10000"},
		{"download without pm", []string{"client", "download", "--user", "u"}, "--pm is required"},
		{"pipeline without pm", []string{"client", "pipeline", "--user", "u"}, "--pm is required"},
		{"pipeline without user", []string{"client", "pipeline", "--pm", "http://127.0.0.1:1"}, "--user is required"},
		{"pipeline with an argument", []string{"client", "pipeline", "--user", "u", "--pm", "http://127.0.0.1:1", "day.json"}, "unknown command"},
		{"count without query", []string{"client", "count", "--user", "u", "--pm", "http://127.0.0.1:1"}, "--query is required"},
		{"count without pm", []string{"client", "count", "--user", "u", "--query", badCount}, "--pm is required"},
		{"count without pm nor query names both", []string{"client", "count", "--user", "u"}, "--pm is required\n--query is required"},
		{"count with a missing query file", []string{"client", "count", "--user", "u", "--pm", "http://127.0.0.1:1", "--query", filepath.Join(dir, "nope")}, "read query"},
		{"count with a bad query", []string{"client", "count", "--user", "u", "--pm", "http://127.0.0.1:1", "--query", badCount}, `unknown field "ofset"`},
		{"metrics without query", []string{"client", "metrics", "--user", "u", "--pm", "http://127.0.0.1:1"}, "--query is required"},
		{"metrics with a bad freq", []string{"client", "metrics", "--user", "u", "--pm", "http://127.0.0.1:1", "--query", badMetrics}, "HOURLY"},
		{"metrics with a count query", []string{"client", "metrics", "--user", "u", "--pm", "http://127.0.0.1:1", "--query", badCount}, "unknown field"},
		{"pipeline with a query", []string{"client", "pipeline", "--user", "u", "--pm", "http://127.0.0.1:1", "--query", badCount}, "unknown flag: --query"},
		{"pause without id", []string{"client", "pause"}, "accepts 1 arg"},
		{"bad config", []string{"client", "--config", badConf, "pause", "x"}, `upc_mode: "swarm"`},
		{"missing token file", []string{"client", "--token-file", filepath.Join(dir, "nope"), "delete", "x"}, "read router token"},
		{"bad router url", []string{"client", "--router", "::not a url", "resume", "x"}, "router"},
		{"bad required digest", []string{"client", "--require-digest", "pm=sha256:abc", "pause", "x"}, "--require-digest: \"pm=sha256:abc\" is not service=sha256:<64 hex digits>"},
		{"missing image manifest", []string{"client", "--images", filepath.Join(dir, "nope.json"), "pause", "x"}, "--images: read image manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), tc.args, &out, &errb)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("upc %s = %v, want an error containing %q", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
}

func TestImagesBuildBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no names", []string{"images", "build", "--bin", dir}, "requires at least 1 arg"},
		{"missing binary", []string{"images", "build", "--bin", dir, "--out", filepath.Join(dir, "m.json"), "pm"}, "is there a cmd/upc-pm?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.args, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("upc %s = %v, want %q", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "m.json")); !os.IsNotExist(err) {
		t.Error("a failed build wrote a manifest")
	}
}

// TestIntegrationClientCommands needs the Docker engine: the `upc client`
// commands, as a user runs them, against a real router and PM.
func TestIntegrationClientCommands(t *testing.T) {
	tr := clienttest.StartRouter(t, "pm")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte("a user's secret\n"), 0o600)
	user := "cli-user"
	tokenFile, secretFile := filepath.Join(dir, "token"), filepath.Join(dir, "pm-secret")
	os.WriteFile(tokenFile, []byte(tr.AddUser(t, user, api.RoleUser)+"\n"), 0o600)
	manifest := filepath.Join(dir, "images.json") // the deployment's: launches must run its images
	if err := tr.Images.Save(manifest); err != nil {
		t.Fatal(err)
	}
	upc := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		all := append([]string{"client", "--router", tr.URL, "--ca", tr.CAFile, "--token-file", tokenFile, "--pm-secret-file", secretFile, "--user", user, "--images", manifest}, args...)
		if err := run(context.Background(), all, &out, &errb); err != nil {
			t.Fatalf("upc %s: %v\n%s", strings.Join(all, " "), err, errb.String())
		}
		return out.String()
	}
	var inst api.Instance
	if err := json.Unmarshal([]byte(upc("launch", "--key-file", keyFile, "--secret-out", secretFile)), &inst); err != nil {
		t.Fatal(err)
	}
	if inst.ID == "" || !strings.HasPrefix(inst.Address, "https://") || inst.Digest != tr.Images.Images["pm"].ID || inst.Secret != "" {
		t.Fatalf("launch printed %+v (want no secret on standard output)", inst)
	}
	if fi, err := os.Stat(secretFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pm secret file: %v, %v; want mode 0600", fi, err)
	}
	day := filepath.Join(realdata.DirT(t), "shankari_2016-08-10")
	if out := upc("upload", "--pm", inst.Address, day); !strings.Contains(out, `"entries": 549`) {
		t.Errorf("upload printed %s", out)
	}
	outFile := filepath.Join(dir, "down.json")
	upc("download", "--pm", inst.Address, "--out", outFile)
	b, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.ParseDay(b)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := client.LoadDay(day)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := client.Prepare(e, user); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.Compare(client.Expected(entries), got); err != nil {
		t.Errorf("downloaded file differs from the uploaded day: %v", err)
	}
	for _, op := range []string{"pause", "resume", "delete"} {
		if out := upc(op, inst.ID); !strings.Contains(out, inst.ID) {
			t.Errorf("%s printed %q", op, out)
		}
	}
	// Gone: a second delete is an error naming the instance.
	var errb bytes.Buffer
	err = run(context.Background(), []string{"client", "--router", tr.URL, "--ca", tr.CAFile, "--token-file", tokenFile, "delete", inst.ID}, &bytes.Buffer{}, &errb)
	if err == nil || !strings.Contains(err.Error(), inst.ID) {
		t.Errorf("second delete = %v", err)
	}
}

// Queries about shankari_2016-08-10: whether the user was around the day's
// first trip start that day, and their trips by mode that local day.
const (
	countQuery = `{"offset": 100, "alpha": 0.05, "start_ts": 1470700800, "end_ts": 1470960000,
  "sel_region": {"geometry": {"type": "Polygon", "coordinates": [[[-122.091, 37.387], [-122.081, 37.387], [-122.081, 37.397], [-122.091, 37.397], [-122.091, 37.387]]]}}}`
	metricsQuery = `{"offset": 1100, "alpha": 0.5, "start_time": {"year": 2016, "month": 8, "day": 10, "timezone": "America/Los_Angeles"},
  "end_time": {"year": 2016, "month": 8, "day": 11, "timezone": "America/Los_Angeles"}, "freq": "DAILY", "metric": "count"}`
)

// TestIntegrationClientServices needs the Docker engine: `upc client
// pipeline`, `count` and `metrics` as a user runs them after launch and
// upload, against a real router and the real service images. Each launches
// its service, prints the answer and deletes the service; a query the
// budget cannot pay fails, printing the refusal.
func TestIntegrationClientServices(t *testing.T) {
	tr := clienttest.StartRouter(t, "pm", "pipeline", "count", "metrics")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	os.WriteFile(keyFile, []byte("another user's secret\n"), 0o600)
	countFile, metricsFile, costlyFile := filepath.Join(dir, "count.json"), filepath.Join(dir, "metrics.json"), filepath.Join(dir, "costly.json")
	os.WriteFile(countFile, []byte(countQuery), 0o600)
	os.WriteFile(metricsFile, []byte(metricsQuery), 0o600)
	os.WriteFile(costlyFile, []byte(strings.Replace(countQuery, `"offset": 100`, `"offset": 1`, 1)), 0o600)
	user := "cli-services-user"
	token := tr.AddUser(t, user, api.RoleUser)
	tokenFile, secretFile := filepath.Join(dir, "token"), filepath.Join(dir, "pm-secret")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	upcErr := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		all := append([]string{"client", "--router", tr.URL, "--ca", tr.CAFile, "--token-file", tokenFile, "--pm-secret-file", secretFile, "--user", user}, args...)
		err := run(context.Background(), all, &out, &errb)
		if err != nil {
			t.Logf("upc %s: %v\n%s", strings.Join(all, " "), err, errb.String())
		}
		return out.String(), err
	}
	upc := func(args ...string) string {
		t.Helper()
		out, err := upcErr(args...)
		if err != nil {
			t.Fatalf("upc client %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	var pmInst api.Instance
	if err := json.Unmarshal([]byte(upc("launch", "--key-file", keyFile, "--secret-out", secretFile)), &pmInst); err != nil {
		t.Fatal(err)
	}
	upc("upload", "--pm", pmInst.Address, filepath.Join(realdata.DirT(t), "shankari_2016-08-10"))

	var pres client.PipelineResult
	if err := json.Unmarshal([]byte(upc("pipeline", "--pm", pmInst.Address)), &pres); err != nil {
		t.Fatal(err)
	}
	if !pres.Success || pres.Written["analysis/cleaned_trip"] == 0 {
		t.Errorf("pipeline printed %+v: want trips written", pres)
	}
	// The export holds every entry after the pipeline too: the phone's,
	// moved to the timeseries, and the pipeline's results; its progress
	// records are no entries, counted apart.
	exportFile := filepath.Join(dir, "export.json")
	var xout, xerr bytes.Buffer
	if err := run(context.Background(), []string{"user", "--router", tr.URL, "--ca", tr.CAFile, "--token-file", tokenFile,
		"--pm-secret-file", secretFile, "--user", user, "export", "--out", exportFile}, &xout, &xerr); err != nil {
		t.Fatalf("export after the pipeline: %v\n%s", err, xerr.String())
	}
	var xres struct {
		Entries     int            `json:"entries"`
		Collections map[string]int `json:"collections"`
		Skipped     map[string]int `json:"skipped"`
	}
	if err := json.Unmarshal(xout.Bytes(), &xres); err != nil {
		t.Fatal(err)
	}
	if xres.Collections["Stage_database.Stage_timeseries"] == 0 || xres.Collections["Stage_database.Stage_analysis_timeseries"] == 0 ||
		xres.Skipped["Stage_database.Stage_pipeline_state"] == 0 {
		t.Errorf("export after the pipeline printed %s: want the timeseries, the analysis results and the pipeline's state skipped", xout.String())
	}
	if exported, err := client.LoadDay(exportFile); err != nil || len(exported) != xres.Entries {
		t.Errorf("export file: %d entries, %v; want %d", len(exported), err, xres.Entries)
	} else {
		keys := map[string]bool{}
		for i, e := range exported {
			md, _ := e["metadata"].(map[string]any)
			key, _ := md["key"].(string)
			keys[key] = true
			if _, err := client.Prepare(e, user); err != nil {
				t.Fatalf("exported entry %d (%s) does not upload: %v", i, key, err)
			}
		}
		if !keys["analysis/cleaned_trip"] || !keys["background/location"] {
			t.Errorf("the export's streams %v lack the trips or the locations", keys)
		}
	}

	var cres count.ResponseV1
	if err := json.Unmarshal([]byte(upc("count", "--pm", pmInst.Address, "--query", countFile, "--query-id", "cli-q1")), &cres); err != nil {
		t.Fatal(err)
	}
	if !cres.Success || cres.Results == nil || *cres.Results != 1 || cres.QueryID != "cli-q1" || cres.PrivacyCost <= 0 {
		t.Errorf("count printed %+v: want 1, charged under cli-q1", cres)
	}

	var mres metrics.LocalDateResponseV1
	if err := json.Unmarshal([]byte(upc("metrics", "--pm", pmInst.Address, "--query", metricsFile)), &mres); err != nil {
		t.Fatal(err)
	}
	if !mres.Success || len(mres.Results) != len(client.DefaultModes) || mres.PrivacyCost <= 0 {
		t.Errorf("metrics printed %+v: want a value for each mode", mres)
	}

	// Over the grant's cap (1 ε by default) the PM refuses the service
	// outright; within a cap the user raised, the budget itself refuses.
	if out, err := upcErr("count", "--pm", pmInst.Address, "--query", costlyFile); err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "may spend 1 ε") || out != "" {
		t.Errorf("a query over the grant's cap: %v, printed %q; want the PM's 403 naming the cap", err, out)
	}
	out, err := upcErr("count", "--pm", pmInst.Address, "--query", costlyFile, "--spend-cap", "5")
	if !errors.Is(err, client.ErrNoBudget) || !strings.Contains(out, `"success": false`) {
		t.Errorf("a query the budget cannot pay: %v, printed %q", err, out)
	}

	// Only the PM is left: every service instance was deleted.
	left, err := tr.Client(t, token).List(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].ID != pmInst.ID {
		t.Errorf("instances left for %s: %+v, want only the PM", user, left)
	}
	upc("delete", pmInst.ID)
}
