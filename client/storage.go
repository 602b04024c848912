package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/e-mission/upc/router/api"
	pmapi "github.com/e-mission/upc/services/pm/api"
)

// StorageRouter is the router's storage API, which router/routerclient
// serves (NewRouter's adapter has it): the user's stored data, the volumes
// or claims their PM leaves behind, found and erased.
type StorageRouter interface {
	Storage(ctx context.Context, user string) (api.Storage, error)
	Erase(ctx context.Context, user string) (api.Storage, error)
}

func (r routerAdapter) Storage(ctx context.Context, user string) (api.Storage, error) {
	return r.c.Storage(ctx, user)
}

func (r routerAdapter) Erase(ctx context.Context, user string) (api.Storage, error) {
	return r.c.Erase(ctx, user)
}

func (d digestRouter) Storage(ctx context.Context, user string) (api.Storage, error) {
	sr, err := storageOf(d.Router)
	if err != nil {
		return api.Storage{}, err
	}
	return sr.Storage(ctx, user)
}

func (d digestRouter) Erase(ctx context.Context, user string) (api.Storage, error) {
	sr, err := storageOf(d.Router)
	if err != nil {
		return api.Storage{}, err
	}
	return sr.Erase(ctx, user)
}

func storageOf(r Router) (StorageRouter, error) {
	sr, ok := r.(StorageRouter)
	if !ok {
		return nil, errors.New("this router client has no storage API")
	}
	return sr, nil
}

// Stored is the user's stored data as the router finds it.
func (c *Client) Stored(ctx context.Context) (api.Storage, error) {
	sr, err := storageOf(c.Router)
	if err != nil {
		return api.Storage{}, err
	}
	st, err := sr.Storage(ctx, c.User)
	if err != nil {
		return api.Storage{}, fmt.Errorf("find %s's stored data: %w", c.User, err)
	}
	return st, nil
}

// Erase destroys the user's stored data for good and returns what was
// removed. The router refuses (409, naming it) while the user's PM runs or
// is paused; with deletePM the user's PMs are deleted first.
func (c *Client) Erase(ctx context.Context, deletePM bool) (api.Storage, error) {
	sr, err := storageOf(c.Router)
	if err != nil {
		return api.Storage{}, err
	}
	if deletePM {
		ins, err := c.Router.List(ctx, c.User)
		if err != nil {
			return api.Storage{}, fmt.Errorf("erase %s's data: find their pm: %w", c.User, err)
		}
		for _, in := range ins {
			if strings.EqualFold(in.Service, PMService) {
				if err := c.Router.Delete(ctx, in.ID); err != nil {
					return api.Storage{}, fmt.Errorf("erase %s's data: delete their pm %s first: %w", c.User, in.ID, err)
				}
			}
		}
	}
	st, err := sr.Erase(ctx, c.User)
	if err != nil {
		return api.Storage{}, fmt.Errorf("erase %s's data: %w", c.User, err)
	}
	return st, nil
}

// Export is the user's data as ExportAll read it.
type Export struct {
	// Entries are every timeseries entry (a document with "metadata" and
	// "data" objects) of every collection, in the original's form.
	Entries []json.RawMessage
	// Collections counts the entries taken from each collection, and
	// Skipped the documents left out of each for not being entries (the
	// pipeline's progress in Stage_pipeline_state, which it makes again);
	// both keyed "database.collection".
	Collections map[string]int
	Skipped     map[string]int
}

var oidRE = regexp.MustCompile(`^[0-9a-f]{24}$`)

// ExportAll reads everything the user's PM at pmAddress holds, as its
// owner: every collection it lists (GET /v1/collections), each document
// decrypted by the PM under the key it was unsealed with. The entries come
// back in the form e-mission's client scripts upload and its exports write
// (the day files of testdata/real_examples): the documents as stored,
// numbers exactly as they were sent, each ObjectId as {"$oid": "..."}, in
// metadata.write_ts order. A file of them (a JSON array) uploads again with
// Upload.
func (c *Client) ExportAll(ctx context.Context, pmAddress string) (Export, error) {
	pm := c.PM(pmAddress)
	cols, err := pm.Collections(ctx)
	if err != nil {
		return Export{}, fmt.Errorf("export %s's data: list the collections: %w", c.User, err)
	}
	out := Export{Entries: []json.RawMessage{}, Collections: map[string]int{}, Skipped: map[string]int{}}
	type keyed struct {
		doc json.RawMessage
		ts  float64
	}
	var all []keyed
	for _, col := range cols {
		var docs []json.RawMessage
		err := pm.FindInto(ctx, pmapi.FindRequest{Database: col.Database, Collection: col.Collection, Filter: map[string]any{},
			Sort: []pmapi.SortField{pmapi.Asc("metadata.write_ts")}}, &docs)
		if err != nil {
			return Export{}, fmt.Errorf("export %s's data: read %s.%s: %w", c.User, col.Database, col.Collection, err)
		}
		name := col.Database + "." + col.Collection
		for _, d := range docs {
			e, ts, ok, err := originalForm(d)
			if err != nil {
				return Export{}, fmt.Errorf("export %s's data: a document of %s: %w", c.User, name, err)
			}
			if !ok {
				out.Skipped[name]++
				continue
			}
			out.Collections[name]++
			all = append(all, keyed{e, ts})
		}
	}
	slices.SortStableFunc(all, func(a, b keyed) int { return cmp.Compare(a.ts, b.ts) })
	for _, k := range all {
		out.Entries = append(out.Entries, k.doc)
	}
	return out, nil
}

// originalForm is doc as an entry of the original's form, with its
// metadata.write_ts; ok is false for a document that is not an entry.
func originalForm(doc json.RawMessage) (entry json.RawMessage, writeTS float64, ok bool, err error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		return nil, 0, false, err
	}
	isObject := func(raw json.RawMessage) bool { return bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) }
	if !isObject(top["metadata"]) || !isObject(top["data"]) {
		return nil, 0, false, nil
	}
	var md struct {
		WriteTS float64 `json:"write_ts"`
	}
	// A write_ts that is not a number sorts first; the entry is kept.
	_ = json.Unmarshal(top["metadata"], &md)
	var id string
	if json.Unmarshal(top["_id"], &id) == nil && oidRE.MatchString(id) {
		top["_id"], _ = json.Marshal(map[string]string{"$oid": id})
	}
	b, err := json.Marshal(top)
	if err != nil {
		return nil, 0, false, err
	}
	return b, md.WriteTS, true, nil
}
