package pm_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// upsertOf is an update as the client's upload sends it.
func upsertOf(id, key string, ts float64) api.BulkUpdate {
	return api.BulkUpdate{
		Query:  map[string]any{"metadata.key": key, "metadata.write_ts": ts},
		Data:   map[string]any{"$set": doc(id, key, ts)},
		Upsert: true,
	}
}

// A bulk update applies its updates in order (a later one sees an earlier
// one's upsert), as one transaction; a repeat changes nothing.
func TestBulkUpdate(t *testing.T) {
	p, _ := ownedPM(t)
	ctx := context.Background()
	req := api.BulkUpdateRequest{Collection: api.Timeseries, Updates: []api.BulkUpdate{
		upsertOf("c1", streamB, 10), upsertOf("c2", streamB, 11), upsertOf("c1", streamB, 10),
		{Query: map[string]any{"_id": "a1"}, Data: map[string]any{"$set": map[string]any{"data.v": "changed"}}},
	}}
	res, err := p.c.BulkUpdate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.UpsertedCount != 2 || res.MatchedCount != 2 || res.ModifiedCount != 1 || len(res.UpsertedIDs) != 4 ||
		res.UpsertedIDs[0] != "c1" || res.UpsertedIDs[2] != nil {
		t.Errorf("answer %+v", res)
	}
	if got := strings.Join(ids(t, p.c, nil), ","); got != "a1,a2,b1,c1,c2" {
		t.Errorf("documents %s", got)
	}
	if res, err = p.c.BulkUpdate(ctx, req); err != nil || res.UpsertedCount != 0 || res.ModifiedCount != 0 || res.MatchedCount != 4 {
		t.Errorf("repeat: %+v %v", res, err)
	}
	// The latest entry is found through the index after a bulk update.
	docs, err := p.c.Find(ctx, pmclient.FindRequest{Collection: api.Timeseries, Filter: map[string]any{},
		Sort: []api.SortField{{Field: "data.ts", Dir: -1}}, Limit: 1})
	if err != nil || len(docs) != 1 || docs[0]["_id"] != "c2" {
		t.Errorf("latest entry %v %v", docs, err)
	}
}

// Refusals: a grant (owner only), an empty or oversized batch, a malformed
// update anywhere in it, an update that fails while applied: each answers
// with a clear error and writes nothing.
func TestBulkUpdateRefusals(t *testing.T) {
	p, _ := ownedPM(t)
	ctx := context.Background()
	before := strings.Join(ids(t, p.c, nil), ",")
	a1 := func() any {
		docs, err := p.c.Find(ctx, pmclient.FindRequest{Collection: api.Timeseries, Filter: map[string]any{"_id": "a1"}})
		if err != nil || len(docs) != 1 {
			t.Fatalf("a1: %v %v", docs, err)
		}
		return docs[0]["data"].(map[string]any)["v"]
	}
	_, gc := p.grant(t, api.GrantRequest{Service: "count", Read: []string{"*"}, Write: []string{"*"}, Spend: 1})
	good := upsertOf("n1", streamA, 50)
	many := make([]api.BulkUpdate, api.MaxBulkUpdates+1)
	for i := range many {
		many[i] = upsertOf(fmt.Sprintf("m%d", i), streamA, float64(100+i))
	}
	for _, tc := range []struct {
		name    string
		c       *pmclient.Client
		updates []api.BulkUpdate
		code    int
		msg     string
	}{
		{"a grant", gc, []api.BulkUpdate{good}, 403, "only this PM's owner"},
		{"empty", p.c, nil, 400, "updates is empty"},
		{"oversized", p.c, many, 413, "at most 10000"},
		{"malformed filter", p.c, []api.BulkUpdate{good, {Query: map[string]any{"a": map[string]any{"$where": 1}}, Data: good.Data}}, 400, "update 1: query"},
		{"no update document", p.c, []api.BulkUpdate{good, {Query: map[string]any{}}}, 400, "update 1: data"},
		{"a replacement", p.c, []api.BulkUpdate{good, {Query: map[string]any{}, Data: map[string]any{"x": 1}}}, 400, "update 1: data"},
		{"fails while applied", p.c, []api.BulkUpdate{good,
			{Query: map[string]any{"_id": "a1"}, Data: map[string]any{"$set": map[string]any{"data.v": "changed"}}},
			{Query: map[string]any{"_id": "a2"}, Data: map[string]any{"$inc": map[string]any{"data.v": 1}}}}, 400, "update 2"},
	} {
		_, err := tc.c.BulkUpdate(ctx, api.BulkUpdateRequest{Collection: api.Timeseries, Updates: tc.updates})
		wantCode(t, tc.name, err, tc.code)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want it to say %q", tc.name, err, tc.msg)
		}
		if got := strings.Join(ids(t, p.c, nil), ","); got != before {
			t.Errorf("%s: documents %s, want %s", tc.name, got, before)
		}
		if v := a1(); v != "a1" {
			t.Errorf("%s: a1's data.v is %v", tc.name, v)
		}
	}
	// A body over the PM's limit is refused before it is read whole.
	big := api.BulkUpdateRequest{Collection: api.Timeseries, Updates: []api.BulkUpdate{{Query: map[string]any{},
		Data: map[string]any{"$set": map[string]any{"x": strings.Repeat("x", 9<<20)}}}}}
	_, err := p.c.BulkUpdate(ctx, big)
	wantCode(t, "body over the limit", err, 413)
	if got := strings.Join(ids(t, p.c, nil), ","); got != before {
		t.Errorf("after the oversized body: documents %s", got)
	}
}
