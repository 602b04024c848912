package pm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/services/pm"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/pmtest"
	"github.com/e-mission/upc/services/pm/store"
)

// testKDF keeps unsealing fast in tests; the format records it, as it would
// record the production costs.
var testKDF = store.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

const secret = "correct horse battery staple 42"

type testPM struct {
	srv   *httptest.Server
	st    *store.Store
	c     *pmclient.Client // bears the owner's secret
	hc    *http.Client     // bears the owner's secret
	owner string           // the owner's instance secret ("" for a legacy PM)
	dir   string
	logs  *syncBuffer
}

// bearer adds a credential to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// bearing is an HTTP client of the test server sending token.
func (p *testPM) bearing(token string) *http.Client {
	return &http.Client{Transport: bearer{token, p.srv.Client().Transport}}
}

// client is a PM client bearing token ("" for none).
func (p *testPM) client(token string) *pmclient.Client {
	return pmclient.New(p.srv.URL, p.srv.Client(), pmclient.WithToken(token))
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startPM serves the real store in dir over HTTP. Closing happens at cleanup
// unless the test stops it first.
func startPM(t testing.TB, dir string, budget float64) *testPM {
	t.Helper()
	return startPMWith(t, dir, store.Options{KDF: testKDF, InitialBudget: budget})
}

// startPMWith starts a PM whose owner (p.owner) bears a fresh instance
// secret, as the router launches one.
func startPMWith(t testing.TB, dir string, o store.Options) *testPM {
	t.Helper()
	owner := access.NewToken(access.PrefixInstance)
	return startPMAccess(t, dir, o, pm.Options{Access: access.Instance{SHA256: access.Hash(owner)}}, owner)
}

// startPMAccess starts a PM with opts (MaxBody set here); owner is the
// secret p.c and p.hc bear.
func startPMAccess(t testing.TB, dir string, o store.Options, opts pm.Options, owner string) *testPM {
	t.Helper()
	st, err := store.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.MaxBody = 8 << 20
	srv := httptest.NewServer(pm.New(st, logger, opts).Handler())
	p := &testPM{srv: srv, st: st, owner: owner, dir: dir, logs: logs}
	p.c, p.hc = p.client(owner), srv.Client()
	if owner != "" {
		p.hc = p.bearing(owner)
	}
	t.Cleanup(p.stop)
	return p
}

func (p *testPM) stop() {
	if p.srv != nil {
		p.srv.Close()
		p.st.Close()
		p.srv = nil
	}
}

func unsealedPM(t testing.TB) *testPM {
	t.Helper()
	p := startPM(t, t.TempDir(), 1.0)
	if err := p.c.Unseal(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	return p
}

// post sends a raw JSON body and returns the status and decoded answer
// (numbers exact).
func (p *testPM) post(t testing.TB, path, body string) (int, map[string]any) {
	t.Helper()
	resp, err := p.hc.Post(p.srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("POST %s: answer %d is not a JSON object: %q", path, resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// usercacheIndices is what shared_apis/index_classes.py's UsercacheCollection
// sends with every request.
const usercacheIndices = `{"metadata.type\nmetadata.write_ts\nmetadata.key": [[1, 1, 1], false], "metadata.write_ts": [[-1], false], "data.ts": [[-1], true]}`

// uploadLikeTheScript does what client_scripts/upload_data.py does for each
// entry, sending the same JSON as fake_mongo_types.FakeUpdateResult; it
// returns the documents the PM should then hold, keyed by the upsert key.
func uploadLikeTheScript(t testing.TB, p *testPM, uuid string, entries []map[string]any) map[string]map[string]any {
	t.Helper()
	want := map[string]map[string]any{}
	for _, d := range entries {
		delete(d, "_id")
		md := d["metadata"].(map[string]any)
		delete(md, "write_local_dt")
		if _, ok := md["type"]; !ok {
			md["type"] = "sensor-data"
		}
		d["user_id"] = uuid
		q := map[string]any{"user_id": uuid, "metadata.type": md["type"], "metadata.write_ts": md["write_ts"], "metadata.key": md["key"]}
		body := fmt.Sprintf(`{"stage_name": "Stage_usercache", "indices": %s, "query": %s, "data": %s, "is_many": false, "upsert": true, "bypass_document_validation": false, "collation": null}`,
			usercacheIndices, mustJSON(t, q), mustJSON(t, map[string]any{"$set": d}))
		code, out := p.post(t, api.PathUpdate, body)
		if code != 200 {
			t.Fatalf("upload: %d %v", code, out)
		}
		raw := out["raw_result"].(map[string]any)
		if raw["ok"] != json.Number("1") {
			t.Fatalf("raw_result.ok = %v", raw["ok"])
		}
		want[mustJSON(t, q)] = d
	}
	return want
}

// downloadLikeTheScript sends what download_data.py's find sends (through
// FakeCursor.load_data), but for every document of the user.
func downloadLikeTheScript(t testing.TB, p *testPM, uuid string) []any {
	t.Helper()
	body := fmt.Sprintf(`{"stage_name": "Stage_usercache", "indices": %s, "filter": {"user_id": %q}, "projection": {"_id": false, "user_id": false}, "skip": 0, "limit": 0, "no_cursor_timeout": false, "cursor_type": 0, "sort": [["metadata.write_ts", 1]], "allow_partial_results": false, "oplog_replay": false, "modifiers": null, "batch_size": 0, "manipulate": true, "collation": null, "hint": null, "max_scan": null, "max_time_ms": null, "max": null, "min": null, "return_key": false, "show_record_id": false, "snapshot": false, "comment": null}`,
		usercacheIndices, uuid)
	code, out := p.post(t, api.PathFind, body)
	if code != 200 {
		t.Fatalf("download: %d %v", code, out)
	}
	return out["data"].([]any)
}

// Every real day goes up as upload_data.py sends it and comes back as
// download_data.py asks for it, unchanged; then the same day goes in whole
// (with its _ids) through insert_many and comes back byte for byte.
func TestRoundTripRealDays(t *testing.T) {
	// What is checked here is losslessness, not durability: skip the fsyncs
	// of ~8000 commits.
	p := startPMWith(t, t.TempDir(), store.Options{KDF: testKDF, InitialBudget: 1, NoSync: true})
	ctx := context.Background()
	if err := p.c.Unseal(ctx, secret); err != nil {
		t.Fatal(err)
	}
	for i, path := range pmtest.DayFiles(t) {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			uuid := fmt.Sprintf("user-%d-%s", i, name)
			want := uploadLikeTheScript(t, p, uuid, pmtest.LoadDay(t, path))
			got := downloadLikeTheScript(t, p, uuid)
			if len(got) != len(want) {
				t.Fatalf("downloaded %d documents, uploaded %d distinct", len(got), len(want))
			}
			wantSet := map[string]int{}
			for _, d := range want {
				c := cloneJSON(t, d)
				delete(c, "user_id")
				wantSet[pmtest.Canonical(t, c)]++
			}
			prev := -1e308
			for _, g := range got {
				gm := g.(map[string]any)
				k := pmtest.Canonical(t, gm)
				if wantSet[k] == 0 {
					t.Fatalf("downloaded a document that was not uploaded: %.300s", k)
				}
				wantSet[k]--
				w, _ := gm["metadata"].(map[string]any)["write_ts"].(json.Number).Float64()
				if w < prev {
					t.Fatal("download is not sorted by metadata.write_ts")
				}
				prev = w
			}

			// insert_many of the whole file, _ids included.
			orig := pmtest.LoadDay(t, path)
			coll := "roundtrip_" + fmt.Sprint(i)
			ids, err := p.c.Insert(ctx, api.DefaultDatabase, coll, cloneDocs(t, orig)...)
			if err != nil {
				t.Fatal(err)
			}
			for j, id := range ids {
				if id != orig[j]["_id"] {
					t.Fatalf("inserted id %s, document had %v", id, orig[j]["_id"])
				}
			}
			code, out := p.post(t, api.PathFind, fmt.Sprintf(`{"database":%q,"collection":%q,"filter":{}}`, api.DefaultDatabase, coll))
			if code != 200 {
				t.Fatal(code, out)
			}
			back := out["data"].([]any)
			if len(back) != len(orig) {
				t.Fatalf("%d documents back, %d in", len(back), len(orig))
			}
			for j := range orig { // natural order is insertion order
				if a, b := pmtest.Canonical(t, orig[j]), pmtest.Canonical(t, back[j]); a != b {
					t.Fatalf("document %d changed:\n in  %.400s\n out %.400s", j, a, b)
				}
			}
		})
	}
}

func cloneJSON(t testing.TB, d map[string]any) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(mustJSON(t, d)))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func cloneDocs(t testing.TB, ds []map[string]any) []map[string]any {
	out := make([]map[string]any, len(ds))
	for i, d := range ds {
		out[i] = cloneJSON(t, d)
	}
	return out
}

// The response fields fake_mongo_types.py reads are all there, in the types
// it expects.
func TestOriginalLibraryWireShapes(t *testing.T) {
	p := unsealedPM(t)
	ix := `"indices": {"metadata.key": [["hashed"], false], "metadata.write_ts": [[-1], false], "data.ts": [[-1], true], "data.loc": [["2dsphere"], true]}`
	steps := []struct {
		path, body string
		keys       []string
	}{
		{api.PathInsert, `{"stage_name": "Stage_timeseries", ` + ix + `, "data": {"metadata": {"key": "a/b", "write_ts": 5}, "data": {"ts": 4}}, "is_many": false, "bypass_document_validation": false}`, []string{"acknowledged", "inserted_id"}},
		{api.PathInsert, `{"database": "Stage_database", "collection": "Stage_timeseries", ` + ix + `, "data": [{"metadata": {"key": "a/b", "write_ts": 6}, "data": {"ts": 5}}, {"metadata": {"key": "c/d", "write_ts": 7}}], "is_many": true, "ordered": true, "bypass_document_validation": false}`, []string{"acknowledged", "inserted_ids"}},
		{api.PathInsertDeprecated, `{"stage_name": "Stage_timeseries", ` + ix + `, "doc_or_docs": {"metadata": {"key": "e/f"}}, "manipulate": true, "check_keys": true, "continue_on_error": false, "w": 1}`, []string{"resp"}},
		{api.PathFindOne, `{"stage_name": "Stage_timeseries", ` + ix + `, "filter": {"metadata.key": "a/b"}, "projection": null, "skip": 0, "limit": 0, "no_cursor_timeout": false, "cursor_type": 0, "sort": [["data.ts", -1]], "allow_partial_results": false, "oplog_replay": false, "modifiers": null, "batch_size": 0, "manipulate": true, "collation": null, "hint": null, "max_scan": null, "max_time_ms": null, "max": null, "min": null, "return_key": false, "show_record_id": false, "snapshot": false, "comment": null}`, []string{"data"}},
		{api.PathCount, `{"stage_name": "Stage_timeseries", ` + ix + `, "filter": {"metadata.key": "a/b"}, "projection": null, "skip": 1, "limit": 0, "sort": null, "with_limit_and_skip": true}`, []string{"count"}},
		{api.PathDistinct, `{"stage_name": "Stage_timeseries", ` + ix + `, "filter": null, "projection": null, "skip": 0, "limit": 0, "sort": null, "distinct_key": "metadata.key"}`, []string{"distinct"}},
		{api.PathUpdate, `{"stage_name": "Stage_timeseries", ` + ix + `, "query": {"metadata.key": "a/b"}, "data": {"$set": {"data.x": 1}}, "is_many": true, "upsert": false, "bypass_document_validation": false, "collation": null}`, []string{"acknowledged", "matched_count", "modified_count", "raw_result", "upserted_id"}},
		{api.PathReplaceOne, `{"stage_name": "Stage_timeseries", ` + ix + `, "query": {"metadata.key": "c/d"}, "data": {"metadata": {"key": "c/d", "write_ts": 8}}, "is_many": false, "upsert": false, "bypass_document_validation": false, "collation": null}`, []string{"acknowledged", "matched_count", "modified_count", "raw_result", "upserted_id"}},
		{api.PathUpdateDeprecated, `{"stage_name": "Stage_timeseries", ` + ix + `, "spec": {"metadata.key": "e/f"}, "document": {"$set": {"y": 2}}, "upsert": false, "manipulate": false, "check_keys": true, "multi": false}`, []string{"resp"}},
		{api.PathDelete, `{"stage_name": "Stage_timeseries", ` + ix + `, "query": {"metadata.key": "e/f"}, "is_many": false, "collation": null}`, []string{"acknowledged", "deleted_count", "raw_result"}},
		{api.PathBudget, `{"privacy_cost": 0.25}`, []string{"success"}},
		{api.PathBudget, `{"privacy_cost": "0.25"}`, []string{"success"}},
	}
	for _, s := range steps {
		code, out := p.post(t, s.path, s.body)
		if code != 200 {
			t.Fatalf("%s: %d %v", s.path, code, out)
		}
		for _, k := range s.keys {
			if _, ok := out[k]; !ok {
				t.Errorf("%s: answer %v lacks %q", s.path, out, k)
			}
		}
		t.Logf("%s → %s", s.path, mustJSON(t, out))
	}
	// Checks of the values the library turns into ObjectIds and counts.
	_, out := p.post(t, api.PathFindOne, `{"stage_name": "Stage_timeseries", "filter": {"metadata.key": "a/b"}, "sort": [["data.ts", -1]]}`)
	doc := out["data"].(map[string]any)
	if id, _ := doc["_id"].(string); len(id) != 24 {
		t.Errorf("_id %v is not a 24-hex string", doc["_id"])
	}
	if doc["data"].(map[string]any)["ts"] != json.Number("5") || doc["data"].(map[string]any)["x"] != json.Number("1") {
		t.Errorf("find_one with sort data.ts desc gave %v", doc)
	}
	_, out = p.post(t, api.PathCount, `{"stage_name": "Stage_timeseries", "filter": {}}`)
	if out["count"] != json.Number("3") {
		t.Errorf("count after inserting 4 and deleting 1: %v", out["count"])
	}
	_, out = p.post(t, api.PathFind, `{"stage_name": "Stage_timeseries", "filter": {"metadata.key": "c/d"}}`)
	if d := out["data"].([]any); len(d) != 1 || mustJSON(t, d[0].(map[string]any)["metadata"]) != `{"key":"c/d","write_ts":8}` {
		t.Errorf("replace_one result: %v", d)
	}
	l, err := p.c.Ledger(context.Background())
	if err != nil || l.Remaining != 0.5 || len(l.Entries) != 2 {
		t.Errorf("ledger after two spends of 0.25: %+v, %v", l, err)
	}
}

func TestSealedUntilKey(t *testing.T) {
	p := startPM(t, t.TempDir(), 1.0)
	ctx := context.Background()
	paths := []string{api.PathInsert, api.PathInsertDeprecated, api.PathFind, api.PathFindOne, api.PathUpdate,
		api.PathUpdateDeprecated, api.PathReplaceOne, api.PathDelete, api.PathCount, api.PathDistinct, api.PathBudget, api.PathBulkUpdate}
	for _, path := range paths {
		code, out := p.post(t, path, `{"stage_name":"Stage_timeseries","filter":{},"privacy_cost":0.1}`)
		if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(out["error"]), "sealed") {
			t.Errorf("%s while sealed: %d %v", path, code, out)
		}
	}
	if _, err := p.c.Find(ctx, pmclient.FindRequest{Collection: "x"}); !pmclient.IsSealed(err) {
		t.Errorf("client error while sealed: %v", err)
	}
	if s, _ := p.c.Status(ctx); !s.Sealed || s.Initialized {
		t.Errorf("status %+v", s)
	}
	if err := p.c.Unseal(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if err := p.c.Unseal(ctx, secret); err == nil || err.(*pmclient.StatusError).Code != 403 {
		t.Errorf("second key: %v, want 403", err)
	}
	if _, err := p.c.Find(ctx, pmclient.FindRequest{Collection: "x"}); err != nil {
		t.Errorf("find after unseal: %v", err)
	}
	if strings.Contains(p.logs.String(), secret) {
		t.Error("the key is in the logs")
	}
}

// The first-generation key bodies: a bare string and a bare integer.
func TestKeyBodyForms(t *testing.T) {
	for _, body := range []string{`"just-a-string"`, `123456789012345678901234567890`, `{"key":"in an object"}`} {
		p := startPM(t, t.TempDir(), 1)
		if code, out := p.post(t, api.PathKey, body); code != 200 {
			t.Errorf("key body %s: %d %v", body, code, out)
		}
	}
}

// A random key is derived with HKDF: the volume records it, a restart
// unseals with the same key, a wrong one is refused, and a key too short to
// be 256 random bits or an unknown kind is a 400.
func TestRandomKeyKind(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	key := strings.Repeat("0123456789abcdef", 4)
	p := startPM(t, dir, 1)
	for body, want := range map[string]string{
		`{"key": "abcdef", "key_kind": "random"}`:                           "at least 64 hex digits",
		`{"key": "` + strings.Repeat("zz", 32) + `", "key_kind": "random"}`: "at least 64 hex digits",
		`{"key": "` + key + `", "key_kind": "raw"}`:                         "key_kind must be",
		`{"key": "` + key + `", "kind": "random"}`:                          "unknown field",
	} {
		code, out := p.post(t, api.PathKey, body)
		if code != 400 || !strings.Contains(fmt.Sprint(out), want) {
			t.Errorf("%s: %d %v, want 400 naming %q", body, code, out, want)
		}
	}
	if err := p.c.UnsealRandom(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.InsertOne(ctx, api.DefaultDatabase, api.Timeseries, map[string]any{"a": 1}); err != nil {
		t.Fatal(err)
	}
	p.stop()
	hdr, err := os.ReadFile(filepath.Join(dir, store.FileName))
	if err != nil || !strings.Contains(string(hdr), `"kdf":"hkdf-sha256"`) {
		t.Fatalf("the volume does not record HKDF: %v", err)
	}
	p = startPM(t, dir, 1)
	if err := p.c.UnsealRandom(ctx, strings.Repeat("f", 64)); err == nil || !strings.Contains(err.Error(), "wrong key") {
		t.Fatalf("another random key: %v", err)
	}
	if err := p.c.UnsealRandom(ctx, key); err != nil {
		t.Fatalf("the key after a restart: %v", err)
	}
	if n, err := p.c.Count(ctx, pmclient.FindRequest{Collection: api.Timeseries}); err != nil || n != 1 {
		t.Fatalf("count after restart: %d %v", n, err)
	}
}

// A plain document is stored and served as the client sent it, field order
// included, through both insert endpoints; the decoding path would sort the
// fields. A find the index cannot decide still answers, decoded.
func TestPlainDocumentsKeepTheirBytes(t *testing.T) {
	p := startPM(t, t.TempDir(), 1)
	if err := p.c.Unseal(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	for path, body := range map[string]string{
		api.PathInsert:           `{"collection": "c", "is_many": true, "data": [{"_id": "1", "z": 1, "a": {"y": 2, "b": 3}, "metadata": {"key": "k"}}]}`,
		api.PathInsertDeprecated: `{"collection": "c", "doc_or_docs": {"_id": "2", "z": 1, "a": {"y": 2, "b": 3}, "metadata": {"key": "k"}}}`,
	} {
		if code, out := p.post(t, path, body); code != 200 {
			t.Fatalf("%s: %d %v", path, code, out)
		}
	}
	find := func(filter string) string {
		resp, err := p.hc.Post(p.srv.URL+api.PathFind, "application/json",
			strings.NewReader(`{"collection": "c", "filter": `+filter+`, "sort": [["_id", 1]]}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	want := `{"data":[{"_id":"1","z":1,"a":{"y":2,"b":3},"metadata":{"key":"k"}},{"_id":"2","z":1,"a":{"y":2,"b":3},"metadata":{"key":"k"}}]}`
	if got := strings.TrimSpace(find(`{"metadata.key": "k"}`)); got != want {
		t.Errorf("indexed find answered\n%s\nwant\n%s", got, want)
	}
	if got := find(`{"z": 1}`); !strings.Contains(got, `"_id":"1"`) || !strings.Contains(got, `"_id":"2"`) {
		t.Errorf("unindexed find answered %s", got)
	}
}

func TestRestartAndWrongKey(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	p := startPM(t, dir, 1.0)
	if err := p.c.Unseal(ctx, secret); err != nil {
		t.Fatal(err)
	}
	day := pmtest.LoadDay(t, pmtest.DayFiles(t)[0])
	if _, err := p.c.Insert(ctx, api.DefaultDatabase, api.Timeseries, day...); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.c.SpendBudget(ctx, 0.3); !ok || err != nil {
		t.Fatal(ok, err)
	}
	p.stop()

	p = startPM(t, dir, 1.0)
	before := hashDir(t, dir)
	err := p.c.Unseal(ctx, "not the key")
	var se *pmclient.StatusError
	if err == nil || !errorsAs(err, &se) || se.Code != 403 || !strings.Contains(se.Message, "wrong key") {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := p.c.Count(ctx, pmclient.FindRequest{Collection: api.Timeseries}); !pmclient.IsSealed(err) {
		t.Fatalf("after a wrong key the PM must stay sealed: %v", err)
	}
	if after := hashDir(t, dir); after != before {
		t.Fatal("a wrong key changed the data directory")
	}
	if err := p.c.Unseal(ctx, secret); err != nil {
		t.Fatalf("right key after a wrong one: %v", err)
	}
	n, err := p.c.Count(ctx, pmclient.FindRequest{Collection: api.Timeseries})
	if err != nil || n != int64(len(day)) {
		t.Fatalf("count after restart: %d, %v; want %d", n, err, len(day))
	}
	docs, err := p.c.Find(ctx, pmclient.FindRequest{Collection: api.Timeseries, Filter: map[string]any{"_id": day[7]["_id"]}})
	if err != nil || len(docs) != 1 || pmtest.Canonical(t, docs[0]) != pmtest.Canonical(t, day[7]) {
		t.Fatalf("document after restart: %v %v", docs, err)
	}
	l, err := p.c.Ledger(ctx)
	if err != nil || l.Remaining != 0.7 {
		t.Fatalf("budget after restart: %+v %v", l, err)
	}
	if strings.Contains(p.logs.String(), "not the key") {
		t.Error("a key is in the logs")
	}
}

func TestConcurrentInsertsAndSpends(t *testing.T) {
	p := unsealedPM(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				_, err := p.c.Insert(ctx, api.DefaultDatabase, api.Timeseries,
					map[string]any{"metadata": map[string]any{"key": "k", "write_ts": g*1000 + i}, "data": map[string]any{"ts": float64(i)}},
					map[string]any{"metadata": map[string]any{"key": "k2"}})
				if err != nil {
					errs <- err
				}
				if _, err := p.c.Count(ctx, pmclient.FindRequest{Collection: api.Timeseries, Filter: map[string]any{"metadata.key": "k"}}); err != nil {
					errs <- err
				}
			}
		}()
	}
	// 250 spends of 0.01 from 1.0: exactly 100 succeed, whatever the interleaving.
	var okCount, denied sync.Map
	for i := 0; i < 250; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := p.c.SpendBudget(ctx, 0.01)
			if err != nil {
				errs <- err
				return
			}
			if ok {
				okCount.Store(i, true)
			} else {
				denied.Store(i, true)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n, err := p.c.Count(ctx, pmclient.FindRequest{Collection: api.Timeseries})
	if err != nil || n != 8*25*2 {
		t.Fatalf("count %d, %v; want %d", n, err, 8*25*2)
	}
	succeeded := 0
	okCount.Range(func(_, _ any) bool { succeeded++; return true })
	if succeeded != 100 {
		t.Errorf("%d spends of 0.01 succeeded from a budget of 1.0, want 100", succeeded)
	}
	l, err := p.c.Ledger(ctx)
	if err != nil || l.Remaining != 0 || len(l.Entries) != 250 {
		t.Errorf("ledger: remaining %v, %d entries, %v", l.Remaining, len(l.Entries), err)
	}
}

// digest is a question digest for tests.
func digest(t *testing.T, question string) string {
	t.Helper()
	d, err := api.QuestionDigest("test", question)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A query id buys one question, once; the budget cannot be refunded by any
// client: refund-then-respend, one id for many questions and retries never
// charge less than the answers given.
func TestBudgetIdempotentNoRefund(t *testing.T) {
	p := unsealedPM(t)
	ctx := context.Background()
	q1 := digest(t, "q-1")
	var wg sync.WaitGroup
	var replays sync.Map
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := p.c.Spend(ctx, api.SpendRequest{PrivacyCost: 0.4, QueryID: "q-1", Service: "count", Question: q1})
			if err != nil || !r.Success {
				t.Errorf("spend: %+v %v", r, err)
			}
			replays.Store(i, r.Replayed)
		}()
	}
	wg.Wait()
	first := 0
	replays.Range(func(_, v any) bool {
		if !v.(bool) {
			first++
		}
		return true
	})
	if first != 1 {
		t.Errorf("%d of 20 identical spends were charged, want 1", first)
	}
	for name, req := range map[string]api.SpendRequest{
		"other cost":     {PrivacyCost: 0.5, QueryID: "q-1", Question: q1},
		"other question": {PrivacyCost: 0.4, QueryID: "q-1", Question: digest(t, "another window")},
	} {
		if _, err := p.c.Spend(ctx, req); err == nil || err.(*pmclient.StatusError).Code != 409 {
			t.Errorf("same query id, %s: %v, want 409", name, err)
		}
	}
	if _, err := p.c.Spend(ctx, api.SpendRequest{PrivacyCost: 0.4, QueryID: "q-3"}); err == nil || err.(*pmclient.StatusError).Code != 400 {
		t.Errorf("a query id without its question: %v, want 400", err)
	}
	r, err := p.c.Spend(ctx, api.SpendRequest{PrivacyCost: 0.7, QueryID: "q-2", Question: digest(t, "q-2")})
	if err != nil || r.Success || r.Remaining != 0.6 {
		t.Fatalf("spend over budget: %+v %v", r, err)
	}
	// Refund then re-spend: no client can refund.
	resp, err := p.hc.Post(p.srv.URL+"/privacy_budget/refund", "application/json", strings.NewReader(`{"query_id":"q-1"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("refund endpoint answered %d", resp.StatusCode)
	}
	if r, _ := p.c.Spend(ctx, api.SpendRequest{PrivacyCost: 0.4, QueryID: "q-1", Service: "count", Question: q1}); !r.Replayed || r.Remaining != 0.6 {
		t.Errorf("re-spend after a refund attempt: %+v", r)
	}
	l, _ := p.c.Ledger(ctx)
	var kinds []string
	for _, e := range l.Entries {
		kinds = append(kinds, e.Kind+":"+e.QueryID)
	}
	if got := strings.Join(kinds, ","); got != "spend:q-1,denied:q-2" {
		t.Errorf("ledger %s", got)
	}
	if l.Entries[0].Service != "count" || l.Entries[0].Time == "" || l.Entries[0].Question != q1 || l.Head == nil || l.Head.Seq != 2 {
		t.Errorf("ledger %+v lacks service, time, question or head", l)
	}
}

func TestBadInputs(t *testing.T) {
	p := unsealedPM(t)
	ctx := context.Background()
	if _, err := p.c.Insert(ctx, api.DefaultDatabase, "c", map[string]any{"_id": "fixed", "a": 1}); err != nil {
		t.Fatal(err)
	}
	huge := `{"stage_name":"c","data":{"x":"` + strings.Repeat("a", 9<<20) + `"},"is_many":false}`
	tests := []struct {
		name, path, body string
		code             int
		want             string
	}{
		{"malformed JSON", api.PathFind, `{"stage_name":"c",`, 400, "malformed JSON"},
		{"not an object", api.PathFind, `[1,2]`, 400, "must be"},
		{"empty body", api.PathInsert, ``, 400, "empty"},
		{"trailing data", api.PathFind, `{"stage_name":"c"} {}`, 400, "single JSON value"},
		{"unknown field", api.PathFind, `{"stage_name":"c","filtr":{}}`, 400, "unknown field"},
		{"no collection", api.PathFind, `{"filter":{}}`, 400, "no collection"},
		{"bad collection name", api.PathFind, `{"collection":"a$b"}`, 400, "not valid"},
		{"filter of wrong type", api.PathFind, `{"stage_name":"c","filter":[1]}`, 400, "filter"},
		{"unknown operator", api.PathFind, `{"stage_name":"c","filter":{"a":{"$regex":"x"}}}`, 400, "unknown operator $regex"},
		{"unknown top-level operator", api.PathCount, `{"stage_name":"c","filter":{"$where":"1"}}`, 400, "unknown top-level operator"},
		{"bad sort", api.PathFind, `{"stage_name":"c","sort":[["a",2]]}`, 400, "sort direction"},
		{"bad sort shape", api.PathFind, `{"stage_name":"c","sort":["a"]}`, 400, "pair"},
		{"negative skip", api.PathFind, `{"stage_name":"c","skip":-1}`, 400, "skip"},
		{"skip not integer", api.PathFind, `{"stage_name":"c","skip":"x"}`, 400, "skip"},
		{"mixed projection", api.PathFind, `{"stage_name":"c","projection":{"a":1,"b":0}}`, 400, "mix"},
		{"bad indices", api.PathFind, `{"stage_name":"c","indices":{"a\nb":[[1],false]}}`, 400, "one type per path"},
		{"bad geo", api.PathFind, `{"stage_name":"c","filter":{"l":{"$geoWithin":{"$geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1]]]}}}}}`, 400, "at least 4"},
		{"insert non-document", api.PathInsert, `{"stage_name":"c","data":5,"is_many":false}`, 400, "must be a document"},
		{"insert_many empty", api.PathInsert, `{"stage_name":"c","data":[],"is_many":true}`, 400, "non-empty list"},
		{"insert_many with a bad document", api.PathInsert, `{"stage_name":"c","data":[{"a":1},{"$b":2}],"is_many":true}`, 400, "not allowed"},
		{"insert dotted field", api.PathInsert, `{"stage_name":"c","data":{"a.b":1},"is_many":false}`, 400, "not allowed"},
		{"duplicate _id in batch", api.PathInsert, `{"stage_name":"c","data":[{"_id":"x1"},{"_id":"x1"}],"is_many":true}`, 409, "duplicate _id"},
		{"duplicate _id in collection", api.PathInsert, `{"stage_name":"c","data":[{"_id":"x2"},{"_id":"fixed"}],"is_many":true}`, 409, "duplicate _id"},
		{"update without operators", api.PathUpdate, `{"stage_name":"c","query":{},"data":{"a":2}}`, 400, "must use operators"},
		{"update unknown operator", api.PathUpdate, `{"stage_name":"c","query":{},"data":{"$push":{"a":2}}}`, 400, "unknown update operator"},
		{"update changes _id", api.PathUpdate, `{"stage_name":"c","query":{},"data":{"$set":{"_id":"other"}},"is_many":true}`, 400, "immutable"},
		{"update missing data", api.PathUpdate, `{"stage_name":"c","query":{}}`, 400, "required"},
		{"replace with operators", api.PathReplaceOne, `{"stage_name":"c","query":{},"data":{"$set":{"a":1}}}`, 400, "cannot contain update operators"},
		{"multi legacy replacement", api.PathUpdateDeprecated, `{"stage_name":"c","spec":{},"document":{"a":1},"multi":true}`, 400, "need operators"},
		{"distinct without key", api.PathDistinct, `{"stage_name":"c"}`, 400, "distinct_key"},
		{"budget negative", api.PathBudget, `{"privacy_cost":-1}`, 400, "> 0"},
		{"budget not a number", api.PathBudget, `{"privacy_cost":"lots"}`, 400, "number"},
		{"budget bool", api.PathBudget, `{"privacy_cost":true}`, 400, "number"},
		{"budget without cost", api.PathBudget, `{"query_id":"q"}`, 400, "privacy_cost is required"},
		{"budget null cost", api.PathBudget, `{"privacy_cost":null}`, 400, "privacy_cost is required"},
		{"budget below the least ε", api.PathBudget, `{"privacy_cost":1e-10}`, 400, "least ε"},
		{"budget query id without question", api.PathBudget, `{"privacy_cost":0.1,"query_id":"q"}`, 400, "question"},
		{"key with unknown field", api.PathKey, `{"secret":"x"}`, 400, "unknown field"},
		{"huge body", api.PathInsert, huge, 413, "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := p.post(t, tc.path, tc.body)
			msg := fmt.Sprint(out["error"])
			if code != tc.code || !strings.Contains(msg, tc.want) {
				t.Errorf("%d %q, want %d with %q", code, msg, tc.code, tc.want)
			}
		})
	}
	// Nothing was half-written: the collection holds its one document and
	// the budget is whole.
	docs, err := p.c.Find(ctx, pmclient.FindRequest{Collection: "c"})
	if err != nil || len(docs) != 1 || docs[0]["_id"] != "fixed" || docs[0]["a"] != 1.0 {
		t.Errorf("after bad inputs: %v %v", docs, err)
	}
	if l, _ := p.c.Ledger(ctx); l.Remaining != 1 {
		t.Errorf("budget after bad inputs: %v", l.Remaining)
	}
	if err := p.c.Healthz(ctx); err != nil {
		t.Error(err)
	}
}

func TestUpsertUpdateDeleteSemantics(t *testing.T) {
	p := unsealedPM(t)
	ctx := context.Background()
	req := pmclient.UpdateRequest{Collection: api.Usercache,
		Query:  map[string]any{"user_id": "u", "metadata.key": "k", "metadata.write_ts": 1.5},
		Data:   map[string]any{"$set": map[string]any{"data.v": 1}},
		Upsert: true}
	r, err := p.c.Update(ctx, req)
	if err != nil || r.UpsertedID == nil || r.MatchedCount != 0 {
		t.Fatalf("upsert: %+v %v", r, err)
	}
	r, err = p.c.Update(ctx, req)
	if err != nil || r.UpsertedID != nil || r.MatchedCount != 1 || r.ModifiedCount != 0 {
		t.Fatalf("same upsert again (no change): %+v %v", r, err)
	}
	doc, err := p.c.FindOne(ctx, pmclient.FindRequest{Collection: api.Usercache, Filter: map[string]any{"metadata.key": "k"}})
	if err != nil || doc["user_id"] != "u" || doc["metadata"].(map[string]any)["write_ts"] != 1.5 || doc["data"].(map[string]any)["v"] != 1.0 {
		t.Fatalf("upserted document %v %v", doc, err)
	}
	if doc["_id"] != r.RawResult["upserted"] && doc["_id"] == nil {
		t.Fatal("no _id")
	}
	if _, err := p.c.Insert(ctx, api.DefaultDatabase, api.Usercache, map[string]any{"metadata": map[string]any{"key": "k"}}, map[string]any{"metadata": map[string]any{"key": "k"}}); err != nil {
		t.Fatal(err)
	}
	r, err = p.c.Update(ctx, pmclient.UpdateRequest{Collection: api.Usercache, Query: map[string]any{"metadata.key": "k"},
		Data: map[string]any{"$unset": map[string]any{"data": ""}}, IsMany: true})
	if err != nil || r.MatchedCount != 3 || r.ModifiedCount != 1 {
		t.Fatalf("update_many $unset: %+v %v", r, err)
	}
	vals, err := p.c.Distinct(ctx, pmclient.FindRequest{Collection: api.Usercache}, "metadata.key")
	if err != nil || len(vals) != 1 || vals[0] != "k" {
		t.Fatalf("distinct: %v %v", vals, err)
	}
	n, err := p.c.Delete(ctx, pmclient.DeleteRequest{Collection: api.Usercache, Query: map[string]any{"metadata.key": "k"}})
	if err != nil || n != 1 {
		t.Fatalf("delete_one: %d %v", n, err)
	}
	n, err = p.c.Delete(ctx, pmclient.DeleteRequest{Collection: api.Usercache, Query: map[string]any{}, IsMany: true})
	if err != nil || n != 2 {
		t.Fatalf("delete_many: %d %v", n, err)
	}
	// FindInto, skip, limit, sort.
	for i := 0; i < 5; i++ {
		p.c.InsertOne(ctx, api.DefaultDatabase, "s", map[string]any{"i": i})
	}
	var got []struct{ I int }
	if err := p.c.FindInto(ctx, pmclient.FindRequest{Collection: "s", Sort: []api.SortField{api.Desc("i")}, Skip: 1, Limit: 2}, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].I != 3 || got[1].I != 2 {
		t.Fatalf("sort desc, skip 1, limit 2: %+v", got)
	}
}

func hashDir(t testing.TB, dir string) string {
	t.Helper()
	files := readAll(t, dir)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s:%x;", n, sha(files[n]))
	}
	return b.String()
}
