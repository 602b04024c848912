// Package routerclient is the typed Go client of the router's versioned API.
package routerclient

import (
	"context"
	"net/http"
	"net/url"

	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/router/api"
)

// Client calls one router.
type Client struct {
	c *httpx.Client
}

// Option tunes a Client.
type Option = httpx.ClientOption

// WithHTTPClient sets the HTTP client (TLS, timeouts).
func WithHTTPClient(hc *http.Client) Option { return httpx.WithHTTPClient(hc) }

// WithToken sends "Authorization: Bearer token".
func WithToken(token string) Option { return httpx.WithBearer(token) }

// New returns a client of the router at base ("http://host:port").
func New(base string, opts ...Option) (*Client, error) {
	if err := httpx.CheckBase("router", base); err != nil {
		return nil, err
	}
	return &Client{c: httpx.NewClient("router", base, opts...)}, nil
}

// Error is a non-2xx answer. errors.Is(err, ErrNotFound) holds for 404s.
type Error = httpx.StatusError

// ErrNotFound matches answers with status 404.
var ErrNotFound = httpx.ErrNotFound

// Launch starts service for user; it returns once the instance answers.
func (c *Client) Launch(ctx context.Context, service, user string) (api.Instance, error) {
	var in api.Instance
	err := c.c.Do(ctx, http.MethodPost, "/v1/instances", api.LaunchRequest{Service: service, User: user}, &in)
	return in, err
}

// LaunchWith is Launch with every field of the request: a service bound
// to a PM by one of its grants. The answer's Secret is the instance's
// credential, sent only now.
func (c *Client) LaunchWith(ctx context.Context, req api.LaunchRequest) (api.Instance, error) {
	var in api.Instance
	err := c.c.Do(ctx, http.MethodPost, "/v1/instances", req, &in)
	return in, err
}

// Whoami is the caller's identity (its token left out).
func (c *Client) Whoami(ctx context.Context) (api.User, error) {
	var u api.User
	err := c.c.Do(ctx, http.MethodGet, "/v1/whoami", nil, &u)
	return u, err
}

// AddUser creates an identity (admin only); the answer holds its token.
func (c *Client) AddUser(ctx context.Context, name, role string) (api.User, error) {
	var u api.User
	err := c.c.Do(ctx, http.MethodPost, "/v1/users", api.NewUser{Name: name, Role: role}, &u)
	return u, err
}

// Users lists the identities (admin only), tokens left out.
func (c *Client) Users(ctx context.Context) ([]api.User, error) {
	var l api.UserList
	err := c.c.Do(ctx, http.MethodGet, "/v1/users", nil, &l)
	return l.Users, err
}

// RemoveUser revokes an identity's token (admin only).
func (c *Client) RemoveUser(ctx context.Context, name string) error {
	return c.c.Do(ctx, http.MethodDelete, "/v1/users/"+url.PathEscape(name), nil, nil)
}

// Get returns one instance.
func (c *Client) Get(ctx context.Context, id string) (api.Instance, error) {
	var in api.Instance
	err := c.c.Do(ctx, http.MethodGet, "/v1/instances/"+url.PathEscape(id), nil, &in)
	return in, err
}

// List returns the instances, all (user "") or one user's.
func (c *Client) List(ctx context.Context, user string) ([]api.Instance, error) {
	path := "/v1/instances"
	if user != "" {
		path += "?user=" + url.QueryEscape(user)
	}
	var out api.InstanceList
	if err := c.c.Do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return out.Instances, nil
}

// Pause freezes an instance.
func (c *Client) Pause(ctx context.Context, id string) (api.Instance, error) {
	var in api.Instance
	err := c.c.Do(ctx, http.MethodPost, "/v1/instances/"+url.PathEscape(id)+"/pause", nil, &in)
	return in, err
}

// Resume unfreezes an instance.
func (c *Client) Resume(ctx context.Context, id string) (api.Instance, error) {
	var in api.Instance
	err := c.c.Do(ctx, http.MethodPost, "/v1/instances/"+url.PathEscape(id)+"/resume", nil, &in)
	return in, err
}

// Delete removes an instance (the user's volumes stay).
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.c.Do(ctx, http.MethodDelete, "/v1/instances/"+url.PathEscape(id), nil, nil)
}

// Storage lists user's stored data: the per-user volumes (Docker) or claims
// (Kubernetes) that outlive their instances.
func (c *Client) Storage(ctx context.Context, user string) (api.Storage, error) {
	var out api.Storage
	err := c.c.Do(ctx, http.MethodGet, "/v1/storage/"+url.PathEscape(user), nil, &out)
	return out, err
}

// Erase destroys user's stored data for good and answers what it removed;
// refused (409) while an instance holding it runs.
func (c *Client) Erase(ctx context.Context, user string) (api.Storage, error) {
	var out api.Storage
	err := c.c.Do(ctx, http.MethodDelete, "/v1/storage/"+url.PathEscape(user), nil, &out)
	return out, err
}

// Clear removes every UPC instance.
func (c *Client) Clear(ctx context.Context) (int, error) {
	var out api.ClearResult
	err := c.c.Do(ctx, http.MethodPost, "/v1/clear", nil, &out)
	return out.Removed, err
}

// SetupNetworks makes sure every machine has the UPC network.
func (c *Client) SetupNetworks(ctx context.Context) ([]string, error) {
	var out api.NetworksResult
	err := c.c.Do(ctx, http.MethodPost, "/v1/networks", nil, &out)
	return out.Machines, err
}

// Health checks the router answers.
func (c *Client) Health(ctx context.Context) error {
	return c.c.Do(ctx, http.MethodGet, "/healthz", nil, nil)
}
