package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/services/count"
	"github.com/e-mission/upc/services/metrics"
	pipeapi "github.com/e-mission/upc/services/pipeline/api"
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

// service is a JSON client of the service instance at address.
func (c *Client) service(name, address string) *httpx.Client {
	return httpx.NewClient(name, address, httpx.WithHTTPClient(c.HTTP))
}

// WithService launches service for the user through the router, calls call
// with its instance and deletes the instance whatever happened, as the
// original client scripts did.
func (c *Client) WithService(ctx context.Context, service string, call func(inst api.Instance) error) error {
	inst, err := c.Router.Launch(ctx, api.LaunchRequest{Service: service, User: c.User})
	if err != nil {
		return fmt.Errorf("launch %s for %s: %w", service, c.User, err)
	}
	err = call(inst)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if derr := c.Router.Delete(dctx, inst.ID); derr != nil {
		err = errors.Join(err, fmt.Errorf("delete %s instance %s: %w", service, inst.ID, derr))
	}
	return err
}

// RunPipeline has the pipeline instance at address run the intake pipeline
// over the user's data in the PM at pmAddress (POST /v1/run) and returns
// what it wrote. An answer of success=false is an error.
func (c *Client) RunPipeline(ctx context.Context, address, pmAddress string) (PipelineResult, error) {
	var res PipelineResult
	if err := c.service("pipeline", address).Post(ctx, pipeapi.PathRun, pipeapi.Request{PMAddress: pmAddress, UUID: c.User}, &res); err != nil {
		return res, err
	}
	if !res.Success {
		return res, fmt.Errorf("pipeline at %s: the service answered success=false", address)
	}
	return res, nil
}

// Count asks the count instance at address how many of the user's trips
// match req.Query (POST /v1/count_query); req.UUID defaults to the user's id
// and req.PMAddress names their PM. The service charges the user's privacy
// budget: when it cannot pay, the answer comes back with ErrNoBudget. With
// a QueryID, a request that got no answer at all is sent once more (the
// budget is charged once either way).
func (c *Client) Count(ctx context.Context, address string, req count.Request) (count.ResponseV1, error) {
	if req.UUID == "" {
		req.UUID = c.User
	}
	var res count.ResponseV1
	err := c.postQuery(ctx, c.service("count", address), "/v1/count_query", req.QueryID, req, &res)
	switch {
	case err != nil:
	case !res.Success:
		err = fmt.Errorf("count at %s: %w", address, ErrNoBudget)
	case res.Results == nil:
		err = fmt.Errorf("count at %s: the service answered success without results", address)
	}
	return res, err
}

// Metrics asks the metrics instance at address for the user's metrics by
// local date (POST /v1/metrics/local_date); req.UUID defaults to the user's
// id and req.PMAddress names their PM. Budget and retries are as for Count.
func (c *Client) Metrics(ctx context.Context, address string, req metrics.LocalDateRequest) (metrics.LocalDateResponseV1, error) {
	if req.UUID == "" {
		req.UUID = c.User
	}
	var res metrics.LocalDateResponseV1
	err := c.postQuery(ctx, c.service("metrics", address), "/v1/metrics/local_date", req.QueryID, req, &res)
	if err == nil && !res.Success {
		err = fmt.Errorf("metrics at %s: %w", address, ErrNoBudget)
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
