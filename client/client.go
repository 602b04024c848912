package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/routerclient"
	pmapi "github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// Router is what the user's device needs of the service router: the
// versioned API's launch, pause, resume, delete and list
// (router/routerclient), called with the user's own router token.
type Router interface {
	Launch(ctx context.Context, req api.LaunchRequest) (api.Instance, error)
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	Delete(ctx context.Context, id string) error
	List(ctx context.Context, user string) ([]api.Instance, error)
}

// NewRouter adapts the router's typed client to Router.
func NewRouter(rc *routerclient.Client) Router { return routerAdapter{rc} }

type routerAdapter struct{ c *routerclient.Client }

func (r routerAdapter) Launch(ctx context.Context, req api.LaunchRequest) (api.Instance, error) {
	return r.c.LaunchWith(ctx, req)
}

func (r routerAdapter) Pause(ctx context.Context, id string) error {
	_, err := r.c.Pause(ctx, id)
	return err
}

func (r routerAdapter) Resume(ctx context.Context, id string) error {
	_, err := r.c.Resume(ctx, id)
	return err
}

func (r routerAdapter) Delete(ctx context.Context, id string) error { return r.c.Delete(ctx, id) }

func (r routerAdapter) List(ctx context.Context, user string) ([]api.Instance, error) {
	return r.c.List(ctx, user)
}

// Client is a user's device: one user, one router.
type Client struct {
	Router Router
	// User is the user's id; it tags their instances and their records.
	User string
	// HTTP reaches the instances (the PM and the services); nil means
	// http.DefaultClient.
	HTTP *http.Client
	// PMSecret is the owner's credential at the user's PM: the instance
	// secret the router sent once, in the answer to the PM's launch.
	// LaunchPM sets it; a device that launched earlier loads it.
	PMSecret string
	// SpendCap is the most ε a single service's grant may spend (0:
	// DefaultSpendCap).
	SpendCap float64
	// UploadBatch, above 1, makes Upload send this many upserts per request
	// (the PM's bulk update: one transaction, one fsync each); 0 or 1 sends
	// one request per entry, as the original.
	UploadBatch int
}

// DefaultUploadBatch is `upc client upload --batch`'s default: about 1.5 MB
// of entries per request, well below the PM's body limit.
const DefaultUploadBatch = 1000

// DefaultSpendCap bounds what one service instance may charge the user's
// budget under the grant the device gives it.
const DefaultSpendCap = 1.0

// GrantTTL is how long a grant for one service call lasts: the device
// revokes it when the call ends, and expiry bounds a grant left behind.
const GrantTTL = "1h"

// PM returns a client of the PM at address bearing the owner's credential.
func (c *Client) PM(address string) *pmclient.Client {
	return pmclient.New(address, c.HTTP, pmclient.WithToken(c.PMSecret))
}

// LaunchPM asks the router for a PM for the user and unseals it with key
// (the original launch_pm.py). When the PM cannot be unsealed it is deleted,
// so a failed launch leaves nothing running.
func (c *Client) LaunchPM(ctx context.Context, key string) (api.Instance, error) {
	if key == "" {
		return api.Instance{}, errors.New("launch pm: empty key")
	}
	inst, err := c.Router.Launch(ctx, api.LaunchRequest{Service: PMService, User: c.User})
	if err != nil {
		return api.Instance{}, fmt.Errorf("launch pm for %s: %w", c.User, err)
	}
	if inst.Secret == "" {
		// A router with access control always sends one; without it the PM
		// would answer anyone, so refuse to put the key in it.
		c.deleteQuietly(ctx, inst.ID)
		return api.Instance{}, fmt.Errorf("launch pm for %s: the router sent no instance secret (is it running with insecure_legacy?)", c.User)
	}
	c.PMSecret = inst.Secret
	if err := c.PM(inst.Address).Unseal(ctx, key); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := c.Router.Delete(dctx, inst.ID); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete the sealed pm %s: %w", inst.ID, derr))
		}
		return api.Instance{}, fmt.Errorf("unseal pm %s for %s: %w", inst.ID, c.User, err)
	}
	return inst, nil
}

func (c *Client) deleteQuietly(ctx context.Context, id string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = c.Router.Delete(dctx, id)
}

// FindPM returns the user's PM, as the router lists it, resumed if it was
// paused (see Wake).
func (c *Client) FindPM(ctx context.Context) (api.Instance, error) {
	ins, err := c.Router.List(ctx, c.User)
	if err != nil {
		return api.Instance{}, fmt.Errorf("find %s's pm: %w", c.User, err)
	}
	for _, in := range ins {
		if in.Service == "pm" || in.Service == PMService {
			if in.State == StatePaused {
				if err := c.Router.Resume(ctx, in.ID); err != nil {
					return api.Instance{}, fmt.Errorf("resume %s's paused pm %s: %w", c.User, in.ID, err)
				}
				in.State, in.Hint = StateRunning, ""
			}
			return in, nil
		}
	}
	return api.Instance{}, fmt.Errorf("%s has no pm running: launch one first", c.User)
}

// Wake finds the user's instance at address, as the router lists it, and
// resumes it if it is paused (by its owner, or by its service's idle
// policy): a paused instance answers nothing, and on Docker a call to it
// stalls until the client's timeout rather than failing, so a device asks
// the router first (one request) instead of waiting for a failure. The
// answer is the instance as it now runs.
func (c *Client) Wake(ctx context.Context, address string) (api.Instance, error) {
	ins, err := c.Router.List(ctx, c.User)
	if err != nil {
		return api.Instance{}, fmt.Errorf("find the instance at %s: %w", address, err)
	}
	want := strings.TrimRight(address, "/")
	for _, in := range ins {
		if strings.TrimRight(in.Address, "/") != want {
			continue
		}
		if in.State == StatePaused {
			if err := c.Router.Resume(ctx, in.ID); err != nil {
				return api.Instance{}, fmt.Errorf("resume the paused instance %s at %s: %w", in.ID, address, err)
			}
			in.State, in.Hint = StateRunning, ""
		}
		return in, nil
	}
	return api.Instance{}, fmt.Errorf("%w: %s has no instance at %s (launch prints it)", ErrNoInstance, c.User, address)
}

// Instance states as the router reports them.
const (
	StateRunning = "running"
	StatePaused  = "paused"
)

// ErrNoInstance: the router lists no instance of the user at that address.
var ErrNoInstance = errors.New("no such instance")

// UsercacheIndices are the indices the original UsercacheCollection sent with
// every request.
var UsercacheIndices = pmapi.Indices{
	"metadata.type\nmetadata.write_ts\nmetadata.key": []any{[]any{1, 1, 1}, false},
	"metadata.write_ts": []any{[]any{-1}, false},
	"data.ts":           []any{[]any{-1}, true},
}

// UploadResult counts what an upload did.
type UploadResult struct {
	Entries  int `json:"entries"`
	Inserted int `json:"inserted"`
	Updated  int `json:"updated"`
}

// Upload sends a day's entries to the PM as the original upload_data.py did:
// each entry, prepared (Prepare), is upserted into the usercache under
// (user, metadata.type, metadata.write_ts, metadata.key) with {"$set": entry},
// one request per entry, in file order, so duplicates collapse into one
// document. Entries are modified in place. Every entry is checked before the
// first is sent, so a malformed file writes nothing; after that it stops at
// the first failure, and running it again is safe (upserts are idempotent).
func (c *Client) Upload(ctx context.Context, pmAddress string, entries []Entry) (UploadResult, error) {
	pm := c.PM(pmAddress)
	res := UploadResult{Entries: len(entries)}
	var bad []error
	for i, e := range entries {
		if _, err := Prepare(e, c.User); err != nil {
			if len(bad) == 5 {
				bad = append(bad, errors.New("..."))
				break
			}
			bad = append(bad, fmt.Errorf("entry %d: %w", i, err))
		}
	}
	if len(bad) > 0 {
		return res, fmt.Errorf("upload: nothing sent: %w", errors.Join(bad...))
	}
	if c.UploadBatch > 1 {
		done, err := c.uploadBatches(ctx, pm, entries, &res)
		if err == nil || done > 0 || !isNotFound(err) {
			return res, err
		}
		// A PM older than the bulk update answers 404 to the first batch,
		// which wrote nothing: the entries go one by one.
	}
	for i, e := range entries {
		r, err := pm.Update(ctx, upsertRequest(e))
		if err != nil {
			return res, fmt.Errorf("upload entry %d: %w", i, err)
		}
		// The original raised when raw_result carried ok != 1.
		if ok, present := r.RawResult["ok"]; present {
			if f, isNum := ok.(float64); !isNum || f != 1 {
				return res, fmt.Errorf("upload entry %d: pm answered ok=%v", i, ok)
			}
		}
		if r.UpsertedID != nil {
			res.Inserted++
		} else {
			res.Updated++
		}
	}
	return res, nil
}

func upsertRequest(e Entry) pmapi.UpdateRequest {
	return pmapi.UpdateRequest{
		StageName: pmapi.Usercache,
		Indices:   UsercacheIndices,
		Query:     UpsertQuery(e),
		Data:      map[string]any{"$set": e},
		Upsert:    true,
	}
}

// uploadBatches sends the entries' upserts c.UploadBatch at a time, each
// batch one bulk update (all or nothing), and returns how many batches the
// PM applied.
func (c *Client) uploadBatches(ctx context.Context, pm *pmclient.Client, entries []Entry, res *UploadResult) (int, error) {
	done := 0
	for lo := 0; lo < len(entries); lo += c.UploadBatch {
		hi := min(lo+c.UploadBatch, len(entries))
		req := pmapi.BulkUpdateRequest{StageName: pmapi.Usercache, Indices: UsercacheIndices, Updates: make([]pmapi.BulkUpdate, 0, hi-lo)}
		for _, e := range entries[lo:hi] {
			u := upsertRequest(e)
			req.Updates = append(req.Updates, pmapi.BulkUpdate{Query: u.Query, Data: u.Data, Upsert: true})
		}
		r, err := pm.BulkUpdate(ctx, req)
		if err != nil {
			return done, fmt.Errorf("upload entries %d-%d (none of them written): %w", lo, hi-1, err)
		}
		if len(r.UpsertedIDs) != hi-lo {
			return done, fmt.Errorf("upload entries %d-%d: the pm answered for %d", lo, hi-1, len(r.UpsertedIDs))
		}
		for _, id := range r.UpsertedIDs {
			if id != nil {
				res.Inserted++
			} else {
				res.Updated++
			}
		}
		done++
	}
	return done, nil
}

func isNotFound(err error) bool {
	var se *httpx.StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

// DownloadOptions narrow a download.
type DownloadOptions struct {
	// Type keeps only entries of this metadata.type. The original
	// download_data.py fetched "document" (what the server wrote for the
	// phone); empty fetches every entry of the user.
	Type string
}

// Download returns the user's usercache entries from the PM as the original
// download_data.py did: without _id and user_id, sorted by metadata.write_ts.
func (c *Client) Download(ctx context.Context, pmAddress string, o DownloadOptions) ([]Entry, error) {
	filter := map[string]any{"user_id": c.User}
	if o.Type != "" {
		filter["metadata.type"] = o.Type
	}
	docs, err := c.PM(pmAddress).Find(ctx, pmapi.FindRequest{
		StageName:  pmapi.Usercache,
		Indices:    UsercacheIndices,
		Filter:     filter,
		Projection: map[string]any{"_id": false, "user_id": false},
		Sort:       []pmapi.SortField{pmapi.Asc("metadata.write_ts")},
	})
	if err != nil {
		return nil, fmt.Errorf("download for %s: %w", c.User, err)
	}
	if docs == nil {
		docs = []Entry{}
	}
	return docs, nil
}

// Pause pauses the user's instance: it keeps its state and stops answering.
func (c *Client) Pause(ctx context.Context, id string) error {
	if err := c.Router.Pause(ctx, id); err != nil {
		return fmt.Errorf("pause %s: %w", id, err)
	}
	return nil
}

// Resume resumes a paused instance.
func (c *Client) Resume(ctx context.Context, id string) error {
	if err := c.Router.Resume(ctx, id); err != nil {
		return fmt.Errorf("resume %s: %w", id, err)
	}
	return nil
}

// Delete removes the instance; the user's data volume is kept.
func (c *Client) Delete(ctx context.Context, id string) error {
	if err := c.Router.Delete(ctx, id); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}
