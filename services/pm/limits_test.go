package pm_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/services/pm"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/store"
)

// TestQueryTimeLimit: a scan that runs past the PM's query time limit is
// stopped and answered 503 naming the limit; writes then go through.
func TestQueryTimeLimit(t *testing.T) {
	owner := access.NewToken(access.PrefixInstance)
	p := startPMAccess(t, t.TempDir(), store.Options{KDF: testKDF, InitialBudget: 1},
		pm.Options{Access: access.Instance{SHA256: access.Hash(owner)}, QueryTimeout: time.Nanosecond}, owner)
	if err := p.c.Unseal(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	var docs []string
	for i := range 200 {
		docs = append(docs, fmt.Sprintf(`{"metadata":{"key":"k","write_ts":%d},"data":{"n":%d}}`, i, i))
	}
	// An insert scans nothing, so even a 1 ns limit lets it through.
	if code, out := p.post(t, api.PathInsert, `{"stage_name":"s","is_many":true,"data":[`+strings.Join(docs, ",")+`]}`); code != 200 {
		t.Fatalf("insert: %d %v", code, out)
	}
	code, out := p.post(t, api.PathFind, `{"stage_name":"s","filter":{"data.n":{"$gte":10}}}`)
	if code != 503 || !strings.Contains(fmt.Sprint(out["error"]), "time limit") {
		t.Fatalf("a find past the time limit: %d %v, want 503 naming the limit", code, out)
	}
}

// TestOversizedInputAnswered400: the caps on documents, filters, updates,
// projections and sorts reach the client as 400s naming them.
func TestOversizedInputAnswered400(t *testing.T) {
	p := unsealedPM(t)
	wide := func(n int, val string) string {
		var b strings.Builder
		b.WriteByte('{')
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"f%d":%s`, i, val)
		}
		b.WriteByte('}')
		return b.String()
	}
	deep := strings.Repeat(`{"a":`, 150) + "1" + strings.Repeat("}", 150)
	sort := strings.TrimSuffix(strings.Repeat(`["data.ts",1],`, 33), ",")
	for _, c := range []struct{ name, path, body, want string }{
		{"wide document", api.PathInsert, `{"stage_name":"s","data":{"metadata":{"key":"k"},"data":` + wide(100_001, "1") + `}}`, "more than 100000 values"},
		{"deep document", api.PathInsert, `{"stage_name":"s","data":{"metadata":{"key":"k"},"data":` + deep + `}}`, "deeper than 100"},
		{"wide filter", api.PathFind, `{"stage_name":"s","filter":` + wide(10_001, "1") + `}`, "more than 10000 terms"},
		{"wide update", api.PathUpdate, `{"stage_name":"s","query":{},"data":{"$set":` + wide(1001, "1") + `}}`, "at most 1000"},
		{"wide projection", api.PathFind, `{"stage_name":"s","filter":{},"projection":` + wide(1001, "1") + `}`, "more than 1000 fields"},
		{"long sort", api.PathFind, `{"stage_name":"s","filter":{},"sort":[` + sort + `]}`, "at most 32"},
	} {
		code, out := p.post(t, c.path, c.body)
		if code != 400 || !strings.Contains(fmt.Sprint(out["error"]), c.want) {
			t.Errorf("%s: %d %v, want 400 naming %q", c.name, code, out["error"], c.want)
		}
	}
}
