package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client calls a machine agent's HTTP API. Its methods mirror Engine's.
type Client struct {
	base  string
	hc    *http.Client
	token string
}

// NewClient calls the agent at base (http://host:port or https://...); hc
// nil means http.DefaultClient.
func NewClient(base string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("agent address %q: want http://host:port or https://host:port", base)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(base, "/"), hc: hc}, nil
}

// WithToken makes c send "Authorization: Bearer token" (agent.token_file).
func (c *Client) WithToken(token string) *Client {
	c.token = token
	return c
}

// Addr is the agent's base URL.
func (c *Client) Addr() string { return c.base }

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
		return fmt.Errorf("agent %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var eb struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = strings.TrimSpace(string(b))
		}
		err := fmt.Errorf("agent %s: %s %s: %s (%s)", c.base, method, path, eb.Error, resp.Status)
		switch resp.StatusCode {
		case http.StatusNotFound:
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		case http.StatusBadRequest:
			err = fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("agent %s: %s %s: decode answer: %w", c.base, method, path, err)
	}
	return nil
}

// Ping checks the agent and its engine answer.
func (c *Client) Ping(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil)
}

// EnsureNetwork asks the agent to create its network if missing.
func (c *Client) EnsureNetwork(ctx context.Context) (NetworkInfo, error) {
	var n NetworkInfo
	err := c.do(ctx, http.MethodPost, "/v1/network", nil, &n)
	return n, err
}

// Launch starts one instance on the agent's machine.
func (c *Client) Launch(ctx context.Context, req LaunchRequest) (Container, error) {
	var out Container
	err := c.do(ctx, http.MethodPost, "/v1/containers", req, &out)
	return out, err
}

// List reports the agent's labelled containers.
func (c *Client) List(ctx context.Context) ([]Container, error) {
	var out ContainerList
	if err := c.do(ctx, http.MethodGet, "/v1/containers", nil, &out); err != nil {
		return nil, err
	}
	return out.Containers, nil
}

// Pause freezes an instance.
func (c *Client) Pause(ctx context.Context, instance string) error {
	return c.do(ctx, http.MethodPost, "/v1/containers/"+url.PathEscape(instance)+"/pause", nil, nil)
}

// Unpause resumes an instance.
func (c *Client) Unpause(ctx context.Context, instance string) error {
	return c.do(ctx, http.MethodPost, "/v1/containers/"+url.PathEscape(instance)+"/unpause", nil, nil)
}

// Remove removes an instance (per-user volumes stay).
func (c *Client) Remove(ctx context.Context, instance string) error {
	return c.do(ctx, http.MethodDelete, "/v1/containers/"+url.PathEscape(instance), nil, nil)
}

// UserVolumes lists user's per-user volumes on the agent's machine.
func (c *Client) UserVolumes(ctx context.Context, user string) ([]string, error) {
	var out VolumeList
	if err := c.do(ctx, http.MethodGet, "/v1/volumes?user="+url.QueryEscape(user), nil, &out); err != nil {
		return nil, err
	}
	return out.Volumes, nil
}

// Clear removes every labelled instance on the agent's machine.
func (c *Client) Clear(ctx context.Context) (int, error) {
	var out ClearResult
	err := c.do(ctx, http.MethodPost, "/v1/clear", nil, &out)
	return out.Removed, err
}
