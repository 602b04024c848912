package agent

import (
	"context"
	"net/http"
	"net/url"

	"github.com/e-mission/upc/internal/httpx"
)

// Client calls a machine agent's HTTP API. Its methods mirror Engine's; an
// answer of 404 matches ErrNotFound and one of 400 ErrInvalid (errors.Is),
// as the engine's own errors do; one of 401 or 403 matches ErrForbidden, one
// of 409 ErrConflict.
type Client struct {
	hc *http.Client
	c  *httpx.Client
}

// NewClient calls the agent at base (http://host:port or https://...); hc
// nil means http.DefaultClient.
func NewClient(base string, hc *http.Client) (*Client, error) {
	if err := httpx.CheckBase("agent", base); err != nil {
		return nil, err
	}
	return &Client{hc: hc, c: newClient(base, hc)}, nil
}

func newClient(base string, hc *http.Client, opts ...httpx.ClientOption) *httpx.Client {
	return httpx.NewClient("agent", base, append([]httpx.ClientOption{httpx.WithHTTPClient(hc), httpx.WithKinds(kind)}, opts...)...)
}

func kind(code int, _ string) error {
	switch code {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusBadRequest:
		return ErrInvalid
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrForbidden
	case http.StatusConflict:
		return ErrConflict
	}
	return nil
}

// WithToken makes c send "Authorization: Bearer token" (agent.token_file).
func (c *Client) WithToken(token string) *Client {
	c.c = newClient(c.c.Base(), c.hc, httpx.WithBearer(token))
	return c
}

// Addr is the agent's base URL.
func (c *Client) Addr() string { return c.c.Base() }

// Ping checks the agent and its engine answer.
func (c *Client) Ping(ctx context.Context) error {
	return c.c.Do(ctx, http.MethodGet, "/healthz", nil, nil)
}

// EnsureNetwork asks the agent to create its network if missing.
func (c *Client) EnsureNetwork(ctx context.Context) (NetworkInfo, error) {
	var n NetworkInfo
	err := c.c.Do(ctx, http.MethodPost, "/v1/network", nil, &n)
	return n, err
}

// Launch starts one instance on the agent's machine.
func (c *Client) Launch(ctx context.Context, req LaunchRequest) (Container, error) {
	var out Container
	err := c.c.Do(ctx, http.MethodPost, "/v1/containers", req, &out)
	return out, err
}

// List reports the agent's labelled containers.
func (c *Client) List(ctx context.Context) ([]Container, error) {
	var out ContainerList
	if err := c.c.Do(ctx, http.MethodGet, "/v1/containers", nil, &out); err != nil {
		return nil, err
	}
	return out.Containers, nil
}

// Pause freezes an instance.
func (c *Client) Pause(ctx context.Context, instance string) error {
	return c.c.Do(ctx, http.MethodPost, "/v1/containers/"+url.PathEscape(instance)+"/pause", nil, nil)
}

// Unpause resumes an instance.
func (c *Client) Unpause(ctx context.Context, instance string) error {
	return c.c.Do(ctx, http.MethodPost, "/v1/containers/"+url.PathEscape(instance)+"/unpause", nil, nil)
}

// Remove removes an instance (per-user volumes stay).
func (c *Client) Remove(ctx context.Context, instance string) error {
	return c.c.Do(ctx, http.MethodDelete, "/v1/containers/"+url.PathEscape(instance), nil, nil)
}

// UserVolumes lists user's per-user volumes on the agent's machine.
func (c *Client) UserVolumes(ctx context.Context, user string) ([]UserVolume, error) {
	var out VolumeList
	if err := c.c.Do(ctx, http.MethodGet, "/v1/volumes?user="+url.QueryEscape(user), nil, &out); err != nil {
		return nil, err
	}
	return out.Volumes, nil
}

// RemoveUserVolumes removes user's per-user volumes on the agent's machine
// and reports them (409, ErrConflict, while a container mounts one).
func (c *Client) RemoveUserVolumes(ctx context.Context, user string) ([]UserVolume, error) {
	var out VolumeList
	if err := c.c.Do(ctx, http.MethodDelete, "/v1/volumes?user="+url.QueryEscape(user), nil, &out); err != nil {
		return nil, err
	}
	return out.Volumes, nil
}

// Clear removes every labelled instance on the agent's machine.
func (c *Client) Clear(ctx context.Context) (int, error) {
	var out ClearResult
	err := c.c.Do(ctx, http.MethodPost, "/v1/clear", nil, &out)
	return out.Removed, err
}

// PoolLaunch starts one warm-pool container on the agent's machine.
func (c *Client) PoolLaunch(ctx context.Context, req LaunchRequest) (Container, error) {
	req.Pool = true
	var out Container
	err := c.c.Do(ctx, http.MethodPost, "/v1/pool", req, &out)
	return out, err
}

// Claim binds a warm-pool container to a user (409, ErrConflict, when it is
// claimed already or the user has data on that machine).
func (c *Client) Claim(ctx context.Context, req ClaimRequest) (Container, error) {
	var out Container
	err := c.c.Do(ctx, http.MethodPost, "/v1/pool/"+url.PathEscape(req.Instance)+"/claim", req, &out)
	return out, err
}

// DrainPool removes the agent's unclaimed warm-pool containers.
func (c *Client) DrainPool(ctx context.Context) (int, error) {
	var out ClearResult
	err := c.c.Do(ctx, http.MethodPost, "/v1/pool/drain", nil, &out)
	return out.Removed, err
}
