package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/metrics"
	pipeapi "github.com/e-mission/upc/services/pipeline/api"
	pmapi "github.com/e-mission/upc/services/pm/api"
)

// Catalog names of the services a user launches, as the original client
// scripts spelled them (the router's catalog takes them as aliases).
const (
	PMService       = "PM"
	PipelineService = "Pipeline"
	MetricsService  = "Metrics"
	CountService    = "Count"
)

// ErrNoBudget matches (errors.Is) a query the service refused with
// success=false: the user's privacy budget could not pay for it.
var ErrNoBudget = errors.New("the user's privacy budget cannot pay for the query")

// PipelineResult is what a pipeline run wrote, by key.
type PipelineResult = pipeapi.Result

// service is a JSON client of a service instance, bearing its secret.
func (c *Client) service(name string, inst api.Instance) *httpx.Client {
	return httpx.NewClient(name, inst.Address, httpx.WithHTTPClient(c.HTTP), httpx.WithBearer(inst.Secret))
}

// GrantRequest is what the device lets a service do at the user's PM: the
// pipeline reads and writes every stream, queries read and spend at most
// the spend cap. Service names are the catalog's canonical ones, which the
// router checks the grant against.
func (c *Client) GrantRequest(service string) pmapi.GrantRequest {
	name := strings.ToLower(service)
	g := pmapi.GrantRequest{Service: name, Read: []string{pmapi.Wildcard}, TTL: GrantTTL}
	switch name {
	case "pipeline":
		g.Write = []string{pmapi.Wildcard}
	default:
		g.Spend = cmp.Or(c.SpendCap, DefaultSpendCap)
	}
	return g
}

// LaunchService has the user's PM grant service what it needs and launches
// an instance of it bound to that PM: the router checks the grant at the PM
// and hands both to the instance, which then reaches no other PM. The
// returned grant id is for revoking it when the work is done.
func (c *Client) LaunchService(ctx context.Context, service string, pm api.Instance) (api.Instance, string, error) {
	g, err := c.PM(pm.Address).IssueGrant(ctx, c.GrantRequest(service))
	if err != nil {
		return api.Instance{}, "", fmt.Errorf("grant %s at %s's pm: %w", service, c.User, err)
	}
	inst, err := c.Router.Launch(ctx, api.LaunchRequest{Service: service, User: c.User, PM: pm.ID, Grant: g.Token})
	if err != nil {
		c.revokeQuietly(ctx, pm, g.ID)
		return api.Instance{}, "", fmt.Errorf("launch %s for %s: %w", service, c.User, err)
	}
	return inst, g.ID, nil
}

func (c *Client) revokeQuietly(ctx context.Context, pm api.Instance, grant string) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return c.PM(pm.Address).RevokeGrant(rctx, grant)
}

// WithService launches service for the user through the router, bound to
// their PM pm by a grant, calls call with its instance, then deletes the
// instance and revokes the grant whatever happened, as the original client
// scripts deleted theirs.
func (c *Client) WithService(ctx context.Context, service string, pm api.Instance, call func(inst api.Instance) error) error {
	inst, grant, err := c.LaunchService(ctx, service, pm)
	if err != nil {
		return err
	}
	err = call(inst)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if derr := c.Router.Delete(dctx, inst.ID); derr != nil {
		err = errors.Join(err, fmt.Errorf("delete %s instance %s: %w", service, inst.ID, derr))
	}
	if rerr := c.revokeQuietly(ctx, pm, grant); rerr != nil {
		err = errors.Join(err, fmt.Errorf("revoke the %s grant: %w", service, rerr))
	}
	return err
}

// RunPipeline has the pipeline instance svc run the intake pipeline over
// the user's data in the PM at req.PMAddress (POST /v1/run) and returns
// what it wrote; req.UUID defaults to the user's id. An answer of
// success=false is an error.
func (c *Client) RunPipeline(ctx context.Context, svc api.Instance, req pipeapi.Request) (PipelineResult, error) {
	if req.UUID == "" {
		req.UUID = c.User
	}
	var res PipelineResult
	if err := c.service("pipeline", svc).Post(ctx, pipeapi.PathRun, req, &res); err != nil {
		return res, err
	}
	if !res.Success {
		return res, fmt.Errorf("pipeline at %s: the service answered success=false", svc.Address)
	}
	return res, nil
}

// Count asks the count instance svc how many of the user's trips match
// req.Query (POST /v1/count_query); req.UUID defaults to the user's id and
// req.PMAddress names their PM. The service charges the user's privacy
// budget: when it cannot pay, the answer comes back with ErrNoBudget. With
// a QueryID, a request that got no answer at all is sent once more (the
// budget is charged once either way).
func (c *Client) Count(ctx context.Context, svc api.Instance, req count.Request) (count.ResponseV1, error) {
	if req.UUID == "" {
		req.UUID = c.User
	}
	var res count.ResponseV1
	err := c.postQuery(ctx, c.service("count", svc), "/v1/count_query", req.QueryID, req, &res)
	switch {
	case err != nil:
	case !res.Success:
		err = fmt.Errorf("count at %s: %w", svc.Address, ErrNoBudget)
	case res.Results == nil:
		err = fmt.Errorf("count at %s: the service answered success without results", svc.Address)
	}
	return res, err
}

// Metrics asks the metrics instance svc for the user's metrics by local
// date (POST /v1/metrics/local_date); req.UUID defaults to the user's id and
// req.PMAddress names their PM. Budget and retries are as for Count.
func (c *Client) Metrics(ctx context.Context, svc api.Instance, req metrics.LocalDateRequest) (metrics.LocalDateResponseV1, error) {
	if req.UUID == "" {
		req.UUID = c.User
	}
	var res metrics.LocalDateResponseV1
	err := c.postQuery(ctx, c.service("metrics", svc), "/v1/metrics/local_date", req.QueryID, req, &res)
	if err == nil && !res.Success {
		err = fmt.Errorf("metrics at %s: %w", svc.Address, ErrNoBudget)
	}
	return res, err
}

// postQuery posts a query, once more if it carries an id and the first
// request got no answer at all: a busy service dropping a connection does
// not fail the user, and the id keeps the budget charged once.
func (c *Client) postQuery(ctx context.Context, svc *httpx.Client, path, queryID string, in, out any) error {
	err := svc.Post(ctx, path, in, out)
	if queryID == "" || !errors.Is(err, httpx.ErrNoAnswer) || ctx.Err() != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return err
	case <-time.After(200 * time.Millisecond):
	}
	return svc.Post(ctx, path, in, out)
}
