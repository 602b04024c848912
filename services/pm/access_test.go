package pm_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/services/pm"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// Every refusal of the PM's access control (docs/security.md): no credential
// 401, a wrong one 403, and a grant can do what it names and nothing more.

const (
	streamA = "background/location"
	streamB = "background/battery"
)

// code is err's HTTP status (0 for nil, -1 for an error without one).
func code(err error) int {
	if err == nil {
		return 0
	}
	var se *pmclient.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return -1
}

func wantCode(t *testing.T, what string, err error, want int) {
	t.Helper()
	if got := code(err); got != want {
		t.Errorf("%s: status %d (%v), want %d", what, got, err, want)
	}
}

// clock is a settable time for grant expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// ownedPM is an unsealed PM with documents in two streams (two of A, one of
// B) and a settable clock.
func ownedPM(t *testing.T) (*testPM, *clock) {
	t.Helper()
	clk := &clock{t: time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)}
	owner := access.NewToken(access.PrefixInstance)
	p := startPMAccess(t, t.TempDir(), store.Options{KDF: testKDF, InitialBudget: 1},
		pm.Options{Access: access.Instance{SHA256: access.Hash(owner)}, Now: clk.now}, owner)
	ctx := context.Background()
	if err := p.c.Unseal(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Insert(ctx, api.DefaultDatabase, api.Timeseries,
		doc("a1", streamA, 1), doc("a2", streamA, 2), doc("b1", streamB, 3)); err != nil {
		t.Fatal(err)
	}
	return p, clk
}

func doc(id, key string, ts float64) map[string]any {
	return map[string]any{"_id": id, "metadata": map[string]any{"key": key, "write_ts": ts}, "data": map[string]any{"ts": ts, "v": id}}
}

func (p *testPM) grant(t *testing.T, req api.GrantRequest) (api.Grant, *pmclient.Client) {
	t.Helper()
	g, err := p.c.IssueGrant(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.Token, access.PrefixGrant) || g.ID == "" {
		t.Fatalf("grant answer: %+v", g)
	}
	return g, p.client(g.Token)
}

// ids are the _ids of the documents of db.timeseries matching filter, as c
// sees them.
func ids(t *testing.T, c *pmclient.Client, filter map[string]any) []string {
	t.Helper()
	docs, err := c.Find(context.Background(), pmclient.FindRequest{Collection: api.Timeseries, Filter: filter})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range docs {
		out = append(out, d["_id"].(string))
	}
	sort.Strings(out)
	return out
}

func (p *testPM) balance(t *testing.T) float64 {
	t.Helper()
	l, err := p.c.Ledger(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l.Remaining
}

// Every endpoint but /healthz and /readyz: none → 401, wrong → 403, and the refusal is
// logged with the method, path and remote address. Nothing changes.
func TestAccessNoOrWrongCredential(t *testing.T) {
	p, _ := ownedPM(t)
	other := access.NewToken(access.PrefixInstance)
	calls := []struct{ method, path, body string }{
		{"GET", api.PathStatus, ""},
		{"POST", api.PathKey, `{"key": "attacker"}`},
		{"POST", api.PathInsert, `{"collection": "Stage_timeseries", "data": {"metadata": {"key": "x"}}}`},
		{"POST", api.PathInsertDeprecated, `{"collection": "Stage_timeseries", "doc_or_docs": {"metadata": {"key": "x"}}}`},
		{"POST", api.PathFind, `{"collection": "Stage_timeseries", "filter": {}}`},
		{"POST", api.PathFindOne, `{"collection": "Stage_timeseries", "filter": {}}`},
		{"POST", api.PathCount, `{"collection": "Stage_timeseries", "filter": {}}`},
		{"POST", api.PathDistinct, `{"collection": "Stage_timeseries", "filter": {}, "distinct_key": "_id"}`},
		{"POST", api.PathUpdate, `{"collection": "Stage_timeseries", "query": {}, "data": {"$set": {"x": 1}}, "is_many": true}`},
		{"POST", api.PathUpdateDeprecated, `{"collection": "Stage_timeseries", "spec": {}, "document": {"$set": {"x": 1}}, "multi": true}`},
		{"POST", api.PathReplaceOne, `{"collection": "Stage_timeseries", "query": {}, "data": {"x": 1}}`},
		{"POST", api.PathDelete, `{"collection": "Stage_timeseries", "query": {}, "is_many": true}`},
		{"POST", api.PathBudget, `{"privacy_cost": 1}`},
		{"GET", api.PathBudgetLedger, ""},
		{"GET", api.PathCollections, ""},
		{"POST", api.PathBulkUpdate, `{"collection": "Stage_timeseries", "updates": [{"query": {}, "data": {"$set": {"x": 1}}, "is_many": true}]}`},
		{"POST", api.PathGrants, `{"service": "count", "read": ["*"], "spend": 1}`},
		{"GET", api.PathGrants, ""},
		{"DELETE", "/v1/grants/g1", ""},
		{"POST", api.PathGrantCheck, `{}`},
		{"GET", "/metrics", ""},
		{"GET", "/no/such/path", ""},
	}
	for _, cr := range []struct {
		name string
		hc   *http.Client
		want int
	}{{"none", p.srv.Client(), 401}, {"wrong", p.bearing(other), 403}, {"garbage", p.bearing("Basic x"), 403}} {
		for _, c := range calls {
			req, _ := http.NewRequest(c.method, p.srv.URL+c.path, strings.NewReader(c.body))
			resp, err := cr.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != cr.want {
				t.Errorf("%s credential: %s %s answered %d, want %d", cr.name, c.method, c.path, resp.StatusCode, cr.want)
			}
		}
	}
	if err := p.client("").Healthz(context.Background()); err != nil {
		t.Errorf("healthz needs no credential: %v", err)
	}
	if got := ids(t, p.c, nil); strings.Join(got, ",") != "a1,a2,b1" {
		t.Errorf("documents after the attempts: %v", got)
	}
	if b := p.balance(t); b != 1 {
		t.Errorf("balance after the attempts: %v", b)
	}
	logs := p.logs.String()
	for _, s := range []string{`"msg":"refused"`, `"method":"POST"`, `"path":"/data/find"`, `"remote":"127.0.0.1:`} {
		if !strings.Contains(logs, s) {
			t.Errorf("refusals not logged with %s", s)
		}
	}
	if strings.Contains(logs, other) {
		t.Error("a presented credential is in the logs")
	}
}

// A PM started with no access settings (the zero value) answers nothing but
// /healthz.
func TestAccessZeroValueRefusesAll(t *testing.T) {
	p := startPMAccess(t, t.TempDir(), store.Options{KDF: testKDF, InitialBudget: 1}, pm.Options{}, access.NewToken(access.PrefixInstance))
	ctx := context.Background()
	wantCode(t, "claim", p.c.Unseal(ctx, secret), 403)
	_, err := p.c.Status(ctx)
	wantCode(t, "status", err, 403)
	_, err = p.client("").Status(ctx)
	wantCode(t, "status without a credential", err, 401)
	if err := p.c.Healthz(ctx); err != nil {
		t.Error(err)
	}
}

// Legacy checks nothing: the original client library sends no credential.
func TestAccessLegacy(t *testing.T) {
	p := startPMAccess(t, t.TempDir(), store.Options{KDF: testKDF, InitialBudget: 1}, pm.Options{Access: access.Instance{Legacy: true}}, "")
	ctx := context.Background()
	if err := p.c.Unseal(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Insert(ctx, api.DefaultDatabase, api.Timeseries, doc("x", streamA, 1)); err != nil {
		t.Fatal(err)
	}
	if ok, err := p.c.SpendBudget(ctx, 0.5); !ok || err != nil {
		t.Fatal(ok, err)
	}
}

// Only the owner claims a fresh PM: no first-key-wins. An attacker (no
// credential, a wrong one, a grant) is refused before and after; the
// owner's claim then works and the attacker's key opens nothing.
func TestAccessClaimOnlyByOwner(t *testing.T) {
	p := startPM(t, t.TempDir(), 1)
	ctx := context.Background()
	_, gc := p.grant(t, api.GrantRequest{Service: "count", Read: []string{"*"}, Write: []string{"*"}, Spend: 1})
	wantCode(t, "claim without a credential", p.client("").Unseal(ctx, "attacker key"), 401)
	wantCode(t, "claim with a wrong credential", p.client(access.NewToken(access.PrefixInstance)).Unseal(ctx, "attacker key"), 403)
	wantCode(t, "claim with a grant", gc.Unseal(ctx, "attacker key"), 403)
	if st, err := p.c.Status(ctx); err != nil || !st.Sealed || st.Initialized {
		t.Fatalf("after the attempts: %+v %v", st, err)
	}
	if err := p.c.Unseal(ctx, secret); err != nil {
		t.Fatalf("the owner's claim: %v", err)
	}
	wantCode(t, "unseal again without a credential", p.client("").Unseal(ctx, secret), 401)
	// Restart on the same volume: the attacker's key is no key, and only
	// the owner's call with the right key unseals.
	p.stop()
	p = startPMAccess(t, p.dir, store.Options{KDF: testKDF, InitialBudget: 1}, pm.Options{Access: access.Instance{SHA256: access.Hash(p.owner)}}, p.owner)
	wantCode(t, "attacker after restart", p.client("").Unseal(ctx, secret), 401)
	wantCode(t, "owner with the attacker's key", p.c.Unseal(ctx, "attacker key"), 403)
	if err := p.c.Unseal(ctx, secret); err != nil {
		t.Fatal(err)
	}
}

// A grant reads only its streams: a find, find_one, count or distinct over
// everything answers only their documents; asking for another stream
// answers nothing of it.
func TestAccessGrantReadScope(t *testing.T) {
	p, _ := ownedPM(t)
	ctx := context.Background()
	_, gc := p.grant(t, api.GrantRequest{Service: "count", Read: []string{streamA}})
	if got := ids(t, gc, nil); strings.Join(got, ",") != "a1,a2" {
		t.Errorf("find all: %v", got)
	}
	if got := ids(t, gc, map[string]any{"metadata.key": streamB}); len(got) != 0 {
		t.Errorf("find of the other stream: %v", got)
	}
	for _, f := range []map[string]any{
		{"_id": "b1"},
		{"$or": []any{map[string]any{"metadata.key": streamB}, map[string]any{"_id": "b1"}}},
		{"metadata.key": map[string]any{"$in": []any{streamA, streamB}}, "data.ts": map[string]any{"$gte": 3}},
		{"data.v": "b1"},
	} {
		if got := ids(t, gc, f); len(got) != 0 {
			t.Errorf("find %v: %v", f, got)
		}
	}
	req := pmclient.FindRequest{Collection: api.Timeseries, Filter: map[string]any{"data.ts": map[string]any{"$gte": 2}}}
	if n, err := gc.Count(ctx, req); err != nil || n != 1 {
		t.Errorf("count: %d %v", n, err)
	}
	if vals, err := gc.Distinct(ctx, pmclient.FindRequest{Collection: api.Timeseries}, "metadata.key"); err != nil || len(vals) != 1 || vals[0] != streamA {
		t.Errorf("distinct: %v %v", vals, err)
	}
	if d, err := gc.FindOne(ctx, pmclient.FindRequest{Collection: api.Timeseries, Filter: map[string]any{"_id": "b1"}}); err != nil || d != nil {
		t.Errorf("find_one of the other stream: %v %v", d, err)
	}
	// A document whose metadata.key is an array holding the granted
	// stream is not of that stream.
	if _, err := p.c.Insert(ctx, api.DefaultDatabase, api.Timeseries, map[string]any{"_id": "arr", "metadata": map[string]any{"key": []any{streamA, streamB}}, "data": map[string]any{"ts": 9}}); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, gc, map[string]any{"data.ts": 9}); len(got) != 0 {
		t.Errorf("array key: %v", got)
	}
	// Other collections: the same rule.
	if _, err := p.c.Insert(ctx, api.DefaultDatabase, api.Usercache, doc("u1", streamB, 1)); err != nil {
		t.Fatal(err)
	}
	if docs, err := gc.Find(ctx, pmclient.FindRequest{Collection: api.Usercache}); err != nil || len(docs) != 0 {
		t.Errorf("usercache: %v %v", docs, err)
	}
	// A grant that reads nothing is refused; one that reads all sees all.
	_, none := p.grant(t, api.GrantRequest{Service: "count", Write: []string{streamA}})
	_, err := none.Find(ctx, pmclient.FindRequest{Collection: api.Timeseries})
	wantCode(t, "read with no read scope", err, 403)
	_, all := p.grant(t, api.GrantRequest{Service: "pipeline", Read: []string{"*"}})
	if got := ids(t, all, nil); len(got) != 4 {
		t.Errorf("wildcard read: %v", got)
	}
}

// A grant writes only its streams: inserts, updates, replacements, upserts
// and deletes outside them are refused (403) or touch nothing, and the
// other stream's documents are unchanged.
func TestAccessGrantWriteScope(t *testing.T) {
	p, _ := ownedPM(t)
	ctx := context.Background()
	_, gc := p.grant(t, api.GrantRequest{Service: "pipeline", Read: []string{"*"}, Write: []string{streamA}})
	before := ids(t, p.c, nil)

	if _, err := gc.Insert(ctx, api.DefaultDatabase, api.Timeseries, doc("a3", streamA, 4)); err != nil {
		t.Fatalf("insert in scope: %v", err)
	}
	_, err := gc.Insert(ctx, api.DefaultDatabase, api.Timeseries, doc("a4", streamA, 5), doc("b2", streamB, 5))
	wantCode(t, "insert_many with a document of another stream", err, 403)
	_, err = gc.InsertOne(ctx, api.DefaultDatabase, api.Timeseries, map[string]any{"_id": "nokey", "data": map[string]any{}})
	wantCode(t, "insert without a stream", err, 403)
	code, _ := p.post(t, api.PathInsertDeprecated, `{"collection": "Stage_timeseries", "doc_or_docs": {"metadata": {"key": "`+streamB+`"}}}`)
	if code != 200 { // the owner may
		t.Errorf("owner's deprecated insert: %d", code)
	}
	req, _ := http.NewRequest("POST", p.srv.URL+api.PathInsertDeprecated, strings.NewReader(`{"collection": "Stage_timeseries", "doc_or_docs": [{"metadata": {"key": "`+streamB+`"}}]}`))
	g2, _ := p.grant(t, api.GrantRequest{Service: "pipeline", Write: []string{streamA}})
	req.Header.Set("Authorization", "Bearer "+g2.Token)
	if resp, err := p.srv.Client().Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("deprecated insert of another stream: %v %v", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
	if _, err := p.c.Delete(ctx, pmclient.DeleteRequest{Collection: api.Timeseries, Query: map[string]any{"_id": map[string]any{"$nin": []any{"a1", "a2", "a3", "b1"}}}, IsMany: true}); err != nil {
		t.Fatal(err)
	}

	// Updates: the other stream is not matched; moving a document into
	// another stream is refused; an upsert into another stream is refused.
	res, err := gc.Update(ctx, pmclient.UpdateRequest{Collection: api.Timeseries, Query: map[string]any{}, Data: map[string]any{"$set": map[string]any{"data.x": 1}}, IsMany: true})
	if err != nil || res.MatchedCount != 3 {
		t.Errorf("update all: %+v %v", res, err)
	}
	res, err = gc.Update(ctx, pmclient.UpdateRequest{Collection: api.Timeseries, Query: map[string]any{"_id": "b1"}, Data: map[string]any{"$set": map[string]any{"data.v": "changed"}}})
	if err != nil || res.MatchedCount != 0 {
		t.Errorf("update of the other stream: %+v %v", res, err)
	}
	_, err = gc.Update(ctx, pmclient.UpdateRequest{Collection: api.Timeseries, Query: map[string]any{"_id": "a1"}, Data: map[string]any{"$set": map[string]any{"metadata.key": streamB}}})
	wantCode(t, "update moving a document to another stream", err, 403)
	_, err = gc.Update(ctx, pmclient.UpdateRequest{Collection: api.Timeseries, Query: map[string]any{"_id": "a1"}, Data: map[string]any{"$unset": map[string]any{"metadata": ""}}})
	wantCode(t, "update removing the stream", err, 403)
	_, err = gc.Update(ctx, pmclient.UpdateRequest{Collection: api.Timeseries, Query: map[string]any{"metadata.key": streamB, "_id": "new"}, Data: map[string]any{"$set": map[string]any{"data.v": 1}}, Upsert: true})
	wantCode(t, "upsert into another stream", err, 403)
	if _, err = gc.Update(ctx, pmclient.UpdateRequest{Collection: api.Timeseries, Query: map[string]any{"metadata.key": streamA, "_id": "a9"}, Data: map[string]any{"$set": map[string]any{"data.ts": 9}}, Upsert: true}); err != nil {
		t.Errorf("upsert in scope: %v", err)
	}
	_, err = gc.ReplaceOne(ctx, pmclient.UpdateRequest{Collection: api.Timeseries, Query: map[string]any{"_id": "a1"}, Data: map[string]any{"metadata": map[string]any{"key": streamB}}})
	wantCode(t, "replace into another stream", err, 403)
	res, err = gc.ReplaceOne(ctx, pmclient.UpdateRequest{Collection: api.Timeseries, Query: map[string]any{"_id": "b1"}, Data: map[string]any{"metadata": map[string]any{"key": streamA}}})
	if err != nil || res.MatchedCount != 0 {
		t.Errorf("replace of the other stream: %+v %v", res, err)
	}
	code, out := p.post(t, api.PathUpdateDeprecated, `{"collection": "Stage_timeseries", "spec": {"_id": "b1"}, "document": {"$set": {"data.v": "x"}}}`)
	if code != 200 {
		t.Errorf("owner's deprecated update: %d %v", code, out)
	}
	req, _ = http.NewRequest("POST", p.srv.URL+api.PathUpdateDeprecated, strings.NewReader(`{"collection": "Stage_timeseries", "spec": {"_id": "a1"}, "document": {"metadata": {"key": "`+streamB+`"}}}`))
	req.Header.Set("Authorization", "Bearer "+g2.Token)
	if resp, err := p.srv.Client().Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("deprecated replacement into another stream: %v %v", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}

	// Deletes touch only the grant's streams.
	n, err := gc.Delete(ctx, pmclient.DeleteRequest{Collection: api.Timeseries, Query: map[string]any{"_id": "b1"}})
	if err != nil || n != 0 {
		t.Errorf("delete of the other stream: %d %v", n, err)
	}
	n, err = gc.Delete(ctx, pmclient.DeleteRequest{Collection: api.Timeseries, Query: map[string]any{}, IsMany: true})
	if err != nil || n != 4 {
		t.Errorf("delete all: %d %v", n, err)
	}
	if got := ids(t, p.c, nil); strings.Join(got, ",") != "b1" {
		t.Errorf("after the grant's writes the owner sees %v (before: %v)", got, before)
	}
	if d, err := p.c.FindOne(ctx, pmclient.FindRequest{Collection: api.Timeseries, Filter: map[string]any{"_id": "b1"}}); err != nil || d["data"].(map[string]any)["v"] != "x" {
		t.Errorf("the other stream's document: %v %v", d, err)
	}
	// A grant that writes nothing may not write.
	_, ro := p.grant(t, api.GrantRequest{Service: "count", Read: []string{"*"}})
	_, err = ro.Insert(ctx, api.DefaultDatabase, api.Timeseries, doc("z", streamA, 1))
	wantCode(t, "insert with no write scope", err, 403)
	_, err = ro.Update(ctx, pmclient.UpdateRequest{Collection: api.Timeseries, Query: map[string]any{}, Data: map[string]any{"$set": map[string]any{"x": 1}}})
	wantCode(t, "update with no write scope", err, 403)
	_, err = ro.Delete(ctx, pmclient.DeleteRequest{Collection: api.Timeseries, Query: map[string]any{}, IsMany: true})
	wantCode(t, "delete with no write scope", err, 403)
	if got := ids(t, p.c, nil); len(got) != 1 {
		t.Errorf("after the read-only grant: %v", got)
	}
}

// A grant spends at most its cap: over it, 403 and nothing charged; the
// ledger names the grant and its service; a retry of a charge made replays.
func TestAccessGrantSpendCap(t *testing.T) {
	p, _ := ownedPM(t)
	ctx := context.Background()
	g, gc := p.grant(t, api.GrantRequest{Service: "count", Spend: 0.3})
	q := digest(t, "q-1")
	r, err := gc.Spend(ctx, api.SpendRequest{PrivacyCost: 0.2, QueryID: "q-1", Question: q, Service: "metrics"})
	if err != nil || !r.Success {
		t.Fatalf("spend within the cap: %+v %v", r, err)
	}
	_, err = gc.Spend(ctx, api.SpendRequest{PrivacyCost: 0.2, QueryID: "q-2", Question: digest(t, "q-2")})
	wantCode(t, "spend over the cap", err, 403)
	_, err = gc.SpendBudget(ctx, 0.11)
	wantCode(t, "spend over the cap without a query id", err, 403)
	if b := p.balance(t); math.Abs(b-0.8) > 1e-9 {
		t.Errorf("balance %v after a refused spend, want 0.8", b)
	}
	if r, err := gc.Spend(ctx, api.SpendRequest{PrivacyCost: 0.2, QueryID: "q-1", Question: q}); err != nil || !r.Replayed {
		t.Errorf("a retry of a charge made: %+v %v", r, err)
	}
	if r, err := gc.Spend(ctx, api.SpendRequest{PrivacyCost: 0.1}); err != nil || !r.Success {
		t.Errorf("the rest of the cap: %+v %v", r, err)
	}
	l, err := p.c.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var spends int
	for _, e := range l.Entries {
		if e.Kind == "denied" {
			t.Errorf("a refused grant spend is in the ledger: %+v", e)
		}
		if e.Kind == "spend" {
			spends++
			if e.Grant != g.ID || e.Service != "count" {
				t.Errorf("ledger entry %+v: want grant %s, service count", e, g.ID)
			}
		}
	}
	if spends != 2 || math.Abs(l.Remaining-0.7) > 1e-9 {
		t.Errorf("ledger: %d spends, %v remaining", spends, l.Remaining)
	}
	chk, err := gc.CheckGrant(ctx)
	if err != nil || math.Abs(chk.Spent-0.3) > 1e-9 || chk.Token != "" || chk.ID != g.ID {
		t.Errorf("check: %+v %v", chk, err)
	}
	gs, err := p.c.Grants(ctx)
	if err != nil || len(gs) != 1 || math.Abs(gs[0].Spent-0.3) > 1e-9 || gs[0].Token != "" {
		t.Errorf("list: %+v %v", gs, err)
	}
	// A grant with no spend may not spend at all.
	_, ro := p.grant(t, api.GrantRequest{Service: "count", Read: []string{"*"}})
	_, err = ro.SpendBudget(ctx, 0.01)
	wantCode(t, "spend with no spend in the grant", err, 403)
	// The owner is not capped by grants.
	if ok, err := p.c.SpendBudget(ctx, 0.5); !ok || err != nil {
		t.Errorf("owner's spend: %v %v", ok, err)
	}
}

// Expired, revoked and foreign grants are refused everywhere.
func TestAccessGrantExpiredRevokedForeign(t *testing.T) {
	p, clk := ownedPM(t)
	ctx := context.Background()
	full := api.GrantRequest{Service: "count", Read: []string{"*"}, Write: []string{"*"}, Spend: 1, TTL: "2h"}
	g, gc := p.grant(t, full)
	if got := ids(t, gc, nil); len(got) != 3 {
		t.Fatalf("a valid grant: %v", got)
	}
	if chk, err := gc.CheckGrant(ctx); err != nil || !chk.Expires.Equal(clk.now().Add(2*time.Hour)) {
		t.Errorf("check: %+v %v", chk, err)
	}
	clk.add(2 * time.Hour)
	_, err := gc.Find(ctx, pmclient.FindRequest{Collection: api.Timeseries})
	wantCode(t, "expired grant: find", err, 403)
	_, err = gc.SpendBudget(ctx, 0.1)
	wantCode(t, "expired grant: spend", err, 403)
	_, err = gc.CheckGrant(ctx)
	wantCode(t, "expired grant: check", err, 403)

	r, rc := p.grant(t, full)
	if err := p.c.RevokeGrant(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	_, err = rc.Find(ctx, pmclient.FindRequest{Collection: api.Timeseries})
	wantCode(t, "revoked grant: find", err, 403)
	_, err = rc.Insert(ctx, api.DefaultDatabase, api.Timeseries, doc("r", streamA, 1))
	wantCode(t, "revoked grant: insert", err, 403)
	_, err = rc.CheckGrant(ctx)
	wantCode(t, "revoked grant: check", err, 403)
	wantCode(t, "revoke an unknown grant", p.c.RevokeGrant(ctx, "nosuch"), 404)
	gs, err := p.c.Grants(ctx)
	if err != nil || len(gs) != 2 {
		t.Fatalf("list: %+v %v", gs, err)
	}
	for _, x := range gs {
		if (x.ID == r.ID) != x.Revoked || (x.ID != r.ID && x.ID != g.ID) {
			t.Errorf("listed %+v", x)
		}
	}

	// A grant issued by another PM opens nothing here.
	q, _ := ownedPM(t)
	fg, _ := q.grant(t, full)
	other := p.client(fg.Token)
	_, err = other.Find(ctx, pmclient.FindRequest{Collection: api.Timeseries})
	wantCode(t, "another PM's grant: find", err, 403)
	_, err = other.SpendBudget(ctx, 0.1)
	wantCode(t, "another PM's grant: spend", err, 403)
	_, err = other.CheckGrant(ctx)
	wantCode(t, "another PM's grant: check", err, 403)
	if b := p.balance(t); b != 1 {
		t.Errorf("balance: %v", b)
	}
	if got := ids(t, p.c, nil); len(got) != 3 {
		t.Errorf("documents: %v", got)
	}
}

// A grant's holder may not act as the owner: no grants issued, listed or
// revoked, no ledger, no claim. It may read /status and check its grant; the
// owner has no grant to check.
func TestAccessGrantIsNotOwner(t *testing.T) {
	p, _ := ownedPM(t)
	ctx := context.Background()
	g, gc := p.grant(t, api.GrantRequest{Service: "count", Read: []string{"*"}, Write: []string{"*"}, Spend: 1})
	_, err := gc.IssueGrant(ctx, api.GrantRequest{Service: "count", Read: []string{"*"}, Spend: 1})
	wantCode(t, "grant issues a grant", err, 403)
	_, err = gc.Grants(ctx)
	wantCode(t, "grant lists grants", err, 403)
	wantCode(t, "grant revokes a grant", gc.RevokeGrant(ctx, g.ID), 403)
	_, err = gc.Ledger(ctx)
	wantCode(t, "grant reads the ledger", err, 403)
	_, err = gc.Collections(ctx)
	wantCode(t, "grant lists the collections", err, 403)
	wantCode(t, "grant unseals", gc.Unseal(ctx, secret), 403)
	if st, err := gc.Status(ctx); err != nil || st.Sealed {
		t.Errorf("grant's status: %+v %v", st, err)
	}
	_, err = p.c.CheckGrant(ctx)
	wantCode(t, "owner checks a grant", err, 403)
	if gs, _ := p.c.Grants(ctx); len(gs) != 1 || gs[0].Revoked {
		t.Errorf("grants after the attempts: %+v", gs)
	}
}

// The owner lists the collections holding documents, with their counts
// (what an export reads); a sealed PM answers 403 saying so.
func TestCollectionsOwnerOnly(t *testing.T) {
	p, _ := ownedPM(t)
	ctx := context.Background()
	if _, err := p.c.InsertOne(ctx, "Other_database", api.Usercache, doc("u1", streamA, 4)); err != nil {
		t.Fatal(err)
	}
	got, err := p.c.Collections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []api.Collection{{Database: "Other_database", Collection: api.Usercache, Count: 1},
		{Database: api.DefaultDatabase, Collection: api.Timeseries, Count: 3}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("collections %v, want %v", got, want)
	}
	sealed := startPMAccess(t, t.TempDir(), store.Options{KDF: testKDF, InitialBudget: 1},
		pm.Options{Access: access.Instance{SHA256: access.Hash(p.owner)}}, p.owner)
	_, err = sealed.c.Collections(ctx)
	wantCode(t, "collections of a sealed PM", err, 403)
}

// The owner's grant requests are checked.
func TestAccessGrantRequestValidation(t *testing.T) {
	p, _ := ownedPM(t)
	ctx := context.Background()
	for _, req := range []api.GrantRequest{
		{Read: []string{"*"}},
		{Service: "count", TTL: "forever"},
		{Service: "count", TTL: "-1h"},
		{Service: "count", TTL: "721h"},
		{Service: "count", Spend: -1},
		{Service: "count", Read: []string{""}},
		{Service: strings.Repeat("s", 101)},
	} {
		_, err := p.c.IssueGrant(ctx, req)
		wantCode(t, "grant request "+req.Service[:min(len(req.Service), 8)]+" "+req.TTL, err, 400)
	}
	g, err := p.c.IssueGrant(ctx, api.GrantRequest{Service: "count"})
	if err != nil {
		t.Fatal(err)
	}
	// ownedPM's clock stands at 12:00: the default grant lasts an hour.
	if g.Spend != 0 || !g.Expires.Equal(time.Date(2026, 12, 5, 13, 0, 0, 0, time.UTC)) {
		t.Errorf("default grant: %+v", g)
	}
}
