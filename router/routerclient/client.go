// Package routerclient is the typed Go client of the router's versioned API.
package routerclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/e-mission/upc/router/api"
)

// Client calls one router.
type Client struct {
	base  string
	hc    *http.Client
	token string
}

// Option tunes a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (TLS, timeouts).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithToken sends "Authorization: Bearer token".
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// New returns a client of the router at base ("http://host:port").
func New(base string, opts ...Option) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("router address %q: want http(s)://host:port", base)
	}
	c := &Client{base: strings.TrimRight(base, "/"), hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is a non-2xx answer. errors.Is(err, ErrNotFound) holds for 404s.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("router: %s (%d)", e.Message, e.Status) }

// ErrNotFound matches answers with status 404.
var ErrNotFound = errors.New("not found")

func (e *Error) Is(target error) bool {
	return target == ErrNotFound && e.Status == http.StatusNotFound
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("router %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var eb api.Error
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = strings.TrimSpace(string(b))
		}
		return &Error{Status: resp.StatusCode, Message: eb.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("router %s: %s %s: decode answer: %w", c.base, method, path, err)
	}
	return nil
}

// Launch starts service for user; it returns once the instance answers.
func (c *Client) Launch(ctx context.Context, service, user string) (api.Instance, error) {
	var in api.Instance
	err := c.do(ctx, http.MethodPost, "/v1/instances", api.LaunchRequest{Service: service, User: user}, &in)
	return in, err
}

// Get returns one instance.
func (c *Client) Get(ctx context.Context, id string) (api.Instance, error) {
	var in api.Instance
	err := c.do(ctx, http.MethodGet, "/v1/instances/"+url.PathEscape(id), nil, &in)
	return in, err
}

// List returns the instances, all (user "") or one user's.
func (c *Client) List(ctx context.Context, user string) ([]api.Instance, error) {
	path := "/v1/instances"
	if user != "" {
		path += "?user=" + url.QueryEscape(user)
	}
	var out api.InstanceList
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return out.Instances, nil
}

// Pause freezes an instance.
func (c *Client) Pause(ctx context.Context, id string) (api.Instance, error) {
	var in api.Instance
	err := c.do(ctx, http.MethodPost, "/v1/instances/"+url.PathEscape(id)+"/pause", nil, &in)
	return in, err
}

// Resume unfreezes an instance.
func (c *Client) Resume(ctx context.Context, id string) (api.Instance, error) {
	var in api.Instance
	err := c.do(ctx, http.MethodPost, "/v1/instances/"+url.PathEscape(id)+"/resume", nil, &in)
	return in, err
}

// Delete removes an instance (the user's volumes stay).
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/instances/"+url.PathEscape(id), nil, nil)
}

// Clear removes every UPC instance.
func (c *Client) Clear(ctx context.Context) (int, error) {
	var out api.ClearResult
	err := c.do(ctx, http.MethodPost, "/v1/clear", nil, &out)
	return out.Removed, err
}

// SetupNetworks makes sure every machine has the UPC network.
func (c *Client) SetupNetworks(ctx context.Context) ([]string, error) {
	var out api.NetworksResult
	err := c.do(ctx, http.MethodPost, "/v1/networks", nil, &out)
	return out.Machines, err
}

// Health checks the router answers.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil)
}
