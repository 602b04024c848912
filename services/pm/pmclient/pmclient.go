// Package pmclient is the typed Go client of the permission manager (PM), the
// one service of a user's private cloud that holds their key and data.
//
// It speaks the same wire protocol as e-mission's Python client library
// (services/pm/api documents it). Summary:
//
//	c := pmclient.New("http://127.0.0.1:8080", nil)
//	c.Unseal(ctx, secret)                               // POST /cloud/key
//	ids, _ := c.Insert(ctx, api.DefaultDatabase, api.Timeseries, doc1, doc2)
//	docs, _ := c.Find(ctx, pmclient.FindRequest{
//		Database: api.DefaultDatabase, Collection: api.Timeseries,
//		Filter: map[string]any{"metadata.key": "background/filtered_location",
//			"data.ts": map[string]any{"$gte": start, "$lte": end}},
//		Sort: []api.SortField{api.Asc("data.ts")},
//	})
//	doc, _ := c.FindOne(ctx, req)                       // nil when nothing matches
//	res, _ := c.Update(ctx, pmclient.UpdateRequest{..., Query: f,
//		Data: map[string]any{"$set": m}, Upsert: true}) // IsMany for update_many
//	res, _ = c.ReplaceOne(ctx, pmclient.UpdateRequest{..., Data: newDoc})
//	n, _ := c.Delete(ctx, pmclient.DeleteRequest{..., Query: f, IsMany: true})
//	n, _ = c.Count(ctx, req); vals, _ := c.Distinct(ctx, req, "metadata.key")
//	ok, _ := c.SpendBudget(ctx, 0.1)                   // POST /privacy_budget
//	r, _ := c.Spend(ctx, api.SpendRequest{PrivacyCost: 0.1, QueryID: id, Service: "count"})
//	l, _ := c.Ledger(ctx)
//
// Documents come back as map[string]any decoded by encoding/json (numbers are
// float64); FindInto decodes into any type instead. Every _id, and every other
// ObjectId, is a 24-hex string; a 24-hex string sent in a document or filter is
// an ObjectId to the PM, as in the original library. Errors from the PM are
// *StatusError; IsSealed tells a 403 "sealed" answer apart.
package pmclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/services/pm/api"
)

// Request types, re-exported so callers need one import for the common case.
type (
	FindRequest   = api.FindRequest
	UpdateRequest = api.UpdateRequest
	DeleteRequest = api.DeleteRequest
	SortField     = api.SortField
)

// Client calls one PM. It is safe for concurrent use.
type Client struct {
	c *httpx.Client
}

// New returns a client of the PM at baseURL (scheme://host:port). A nil hc
// means http.DefaultClient.
func New(baseURL string, hc *http.Client, opts ...Option) *Client {
	o := []httpx.ClientOption{httpx.WithHTTPClient(hc), httpx.WithKinds(sealed)}
	return &Client{c: httpx.NewClient("pm", baseURL, append(o, opts...)...)}
}

// Option tunes a Client.
type Option = httpx.ClientOption

// WithToken sends the credential with every call: the owner's instance
// secret, or a grant the owner issued (docs/security.md). Empty sends none.
func WithToken(token string) Option { return httpx.WithBearer(token) }

// BaseURL is the PM's address.
func (c *Client) BaseURL() string { return c.c.Base() }

// StatusError is a non-2xx answer from the PM: its status and message.
type StatusError = httpx.StatusError

// ErrSealed matches (errors.Is) a 403 from a PM that has not been unsealed.
var ErrSealed = errors.New("pm is sealed")

func sealed(code int, msg string) error {
	switch {
	case code == http.StatusForbidden && strings.Contains(msg, "sealed"):
		return ErrSealed
	case code == http.StatusNotFound:
		return httpx.ErrNotFound
	}
	return nil
}

// IsSealed reports whether err is a PM's "sealed" refusal.
func IsSealed(err error) bool { return errors.Is(err, ErrSealed) }

// Unseal gives the PM the user's key (POST /cloud/key). A PM already
// unsealed, or a wrong key for its volume, answers 403.
func (c *Client) Unseal(ctx context.Context, key string) error {
	return c.c.Post(ctx, api.PathKey, api.KeyRequest{Key: key}, nil)
}

// UnsealRandom is Unseal for a key of 256 bits or more from a CSPRNG (64+
// hex digits): a new volume derives its key with HKDF instead of Argon2id.
func (c *Client) UnsealRandom(ctx context.Context, key string) error {
	return c.c.Post(ctx, api.PathKey, api.KeyRequest{Key: key, KeyKind: "random"}, nil)
}

// Status reports whether the PM is sealed.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	err := c.c.Get(ctx, api.PathStatus, &s)
	return s, err
}

// Healthz checks the PM answers.
func (c *Client) Healthz(ctx context.Context) error {
	return c.c.Get(ctx, api.PathHealthz, nil)
}

// Insert stores docs in db.coll and returns their _ids (generated ObjectIds
// where a document had none). The batch is all or nothing.
func (c *Client) Insert(ctx context.Context, db, coll string, docs ...map[string]any) ([]string, error) {
	if len(docs) == 0 {
		return nil, nil
	}
	return c.insertMany(ctx, db, coll, docs)
}

// InsertJSON is Insert for documents already encoded as JSON objects: the
// PM stores plain documents as they are, so nothing is decoded on either side.
func (c *Client) InsertJSON(ctx context.Context, db, coll string, docs []json.RawMessage) ([]string, error) {
	if len(docs) == 0 {
		return nil, nil
	}
	return c.insertMany(ctx, db, coll, docs)
}

func (c *Client) insertMany(ctx context.Context, db, coll string, docs any) ([]string, error) {
	var out api.InsertResponse
	err := c.c.Post(ctx, api.PathInsert, api.InsertRequest{
		Database: db, Collection: coll, Data: docs, IsMany: true,
	}, &out)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(out.InsertedIDs))
	for i, id := range out.InsertedIDs {
		ids[i] = idString(id)
	}
	return ids, nil
}

// idString renders an _id: ObjectIds (and string ids) as they are.
func idString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// InsertOne stores one document and returns its _id.
func (c *Client) InsertOne(ctx context.Context, db, coll string, doc map[string]any) (string, error) {
	var out api.InsertResponse
	if err := c.c.Post(ctx, api.PathInsert, api.InsertRequest{
		Database: db, Collection: coll, Data: doc,
	}, &out); err != nil {
		return "", err
	}
	if out.InsertedID == nil {
		return "", fmt.Errorf("pm: %s: answer has no inserted_id", api.PathInsert)
	}
	return idString(out.InsertedID), nil
}

// Find returns the matching documents.
func (c *Client) Find(ctx context.Context, req FindRequest) ([]map[string]any, error) {
	var out api.FindResponse
	err := c.c.Post(ctx, api.PathFind, req, &out)
	return out.Data, err
}

// FindInto decodes the matching documents into out, which must point to a
// slice (of structs, maps, ...).
func (c *Client) FindInto(ctx context.Context, req FindRequest, out any) error {
	// Data holds out, so the answer is decoded into it in one pass (the
	// decoder fills what a non-nil pointer in an interface points to).
	ans := struct {
		Data any `json:"data"`
	}{Data: out}
	return c.c.Post(ctx, api.PathFind, req, &ans)
}

// FindOne returns the first matching document, or nil when none matches.
func (c *Client) FindOne(ctx context.Context, req FindRequest) (map[string]any, error) {
	var out api.FindOneResponse
	err := c.c.Post(ctx, api.PathFindOne, req, &out)
	return out.Data, err
}

// Update applies req.Data ({"$set": ..., "$unset": ...}) to the first match
// (every match with IsMany), inserting when nothing matches and Upsert is set.
func (c *Client) Update(ctx context.Context, req UpdateRequest) (api.UpdateResponse, error) {
	var out api.UpdateResponse
	err := c.c.Post(ctx, api.PathUpdate, req, &out)
	return out, err
}

// BulkUpdate applies req.Updates in order as one transaction: all or
// nothing. A PM older than the endpoint answers 404.
func (c *Client) BulkUpdate(ctx context.Context, req api.BulkUpdateRequest) (api.BulkUpdateResponse, error) {
	var out api.BulkUpdateResponse
	err := c.c.Post(ctx, api.PathBulkUpdate, req, &out)
	return out, err
}

// ReplaceOne replaces the first match with req.Data (keeping its _id).
func (c *Client) ReplaceOne(ctx context.Context, req UpdateRequest) (api.UpdateResponse, error) {
	var out api.UpdateResponse
	err := c.c.Post(ctx, api.PathReplaceOne, req, &out)
	return out, err
}

// Delete removes the first match (every match with IsMany) and returns how
// many were removed.
func (c *Client) Delete(ctx context.Context, req DeleteRequest) (int64, error) {
	var out api.DeleteResponse
	err := c.c.Post(ctx, api.PathDelete, req, &out)
	return out.DeletedCount, err
}

// Count counts the matches (honouring Skip and Limit when
// req.WithLimitAndSkip).
func (c *Client) Count(ctx context.Context, req FindRequest) (int64, error) {
	var out api.CountResponse
	err := c.c.Post(ctx, api.PathCount, req, &out)
	return out.Count, err
}

// Distinct returns the distinct values of key (a dotted path) among matches.
func (c *Client) Distinct(ctx context.Context, req FindRequest, key string) ([]any, error) {
	req.DistinctKey = key
	var out api.DistinctResponse
	err := c.c.Post(ctx, api.PathDistinct, req, &out)
	return out.Distinct, err
}

// SpendBudget deducts cost from the user's privacy budget as the original
// API did, reporting whether there was enough left.
func (c *Client) SpendBudget(ctx context.Context, cost float64) (bool, error) {
	r, err := c.Spend(ctx, api.SpendRequest{PrivacyCost: api.Cost(cost)})
	return r.Success, err
}

// Spend deducts req.PrivacyCost. With a QueryID, a retry is charged once and
// gets the first answer again (Replayed).
func (c *Client) Spend(ctx context.Context, req api.SpendRequest) (api.SpendResponse, error) {
	var out api.SpendResponse
	err := c.c.Post(ctx, api.PathBudget, req, &out)
	return out, err
}

// Ledger returns the budget's balance and history.
func (c *Client) Ledger(ctx context.Context) (api.Ledger, error) {
	var out api.Ledger
	err := c.c.Get(ctx, api.PathBudgetLedger, &out)
	return out, err
}

// Collections lists the collections holding documents, with how many
// (owner only).
func (c *Client) Collections(ctx context.Context) ([]api.Collection, error) {
	var out api.Collections
	err := c.c.Get(ctx, api.PathCollections, &out)
	return out.Collections, err
}

// IssueGrant asks the PM for a grant (owner only). The answer carries the
// grant's token, the only time it is sent.
func (c *Client) IssueGrant(ctx context.Context, req api.GrantRequest) (api.Grant, error) {
	var g api.Grant
	err := c.c.Post(ctx, api.PathGrants, req, &g)
	return g, err
}

// Grants lists the grants issued, tokens left out (owner only).
func (c *Client) Grants(ctx context.Context) ([]api.Grant, error) {
	var l api.GrantList
	err := c.c.Get(ctx, api.PathGrants, &l)
	return l.Grants, err
}

// RevokeGrant revokes a grant at once (owner only).
func (c *Client) RevokeGrant(ctx context.Context, id string) error {
	return c.c.Do(ctx, http.MethodDelete, strings.Replace(api.PathGrant, "{id}", url.PathEscape(id), 1), nil, nil)
}

// CheckGrant answers the grant this client bears (WithToken), if it is valid
// at this PM: not expired, not revoked, signed by it.
func (c *Client) CheckGrant(ctx context.Context) (api.Grant, error) {
	var g api.Grant
	err := c.c.Post(ctx, api.PathGrantCheck, struct{}{}, &g)
	return g, err
}
