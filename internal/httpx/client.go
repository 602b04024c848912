package httpx

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
)

// DefaultMaxAnswer bounds the answer bodies a Client reads unless it says
// otherwise. It is generous: a PM's find of a user's whole usercache comes
// back in one answer.
const DefaultMaxAnswer = 256 << 20

// maxErrorAnswer bounds what is read of an error answer for its message.
const maxErrorAnswer = 64 << 10

// ErrNotFound matches (errors.Is) an answer with status 404, unless the
// client's classifier says otherwise.
var ErrNotFound = errors.New("not found")

// ErrNoAnswer matches (errors.Is) a request that got no answer at all: the
// connection was refused, reset or closed before the answer's headers.
var ErrNoAnswer = errors.New("no answer")

// StatusError is a non-2xx answer: its status and the server's message (the
// "error" of an ErrorBody, else the body's text).
type StatusError struct {
	Server  string // who answered, as the client names it ("pm", "router", ...)
	Method  string
	URL     string
	Code    int
	Message string
	// Kind is what the answer means to the caller, a sentinel error such as
	// ErrNotFound (nil when nothing in particular); errors.Is sees it.
	Kind error
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: %s %s: %d %s: %s", e.Server, e.Method, e.URL, e.Code, http.StatusText(e.Code), e.Message)
}

func (e *StatusError) Unwrap() error { return e.Kind }

// Client speaks JSON over HTTP to one server. It is safe for concurrent use.
type Client struct {
	name      string
	base      string
	hc        *http.Client
	header    http.Header
	maxAnswer int64
	classify  func(code int, msg string) error
}

// ClientOption tunes a Client.
type ClientOption func(*Client)

// WithHTTPClient sets the HTTP client (TLS, timeouts); nil keeps
// http.DefaultClient.
func WithHTTPClient(hc *http.Client) ClientOption {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithBearer sends "Authorization: Bearer token" with every request; an
// empty token sends nothing.
func WithBearer(token string) ClientOption {
	return func(c *Client) {
		if token != "" {
			c.header.Set("Authorization", "Bearer "+token)
		}
	}
}

// WithHeader sends the header with every request.
func WithHeader(key, value string) ClientOption {
	return func(c *Client) { c.header.Set(key, value) }
}

// WithMaxAnswer bounds the answer bodies read (default DefaultMaxAnswer).
func WithMaxAnswer(n int64) ClientOption {
	return func(c *Client) {
		if n > 0 {
			c.maxAnswer = n
		}
	}
}

// WithKinds sets what a non-2xx answer means to the caller: kind returns the
// sentinel its StatusError carries (errors.Is), or nil. Without it a 404 is
// ErrNotFound.
func WithKinds(kind func(code int, msg string) error) ClientOption {
	return func(c *Client) { c.classify = kind }
}

// NewClient returns a client of the server at base (scheme://host:port),
// named name in its errors.
func NewClient(name, base string, opts ...ClientOption) *Client {
	c := &Client{
		name: name, base: strings.TrimRight(base, "/"), hc: http.DefaultClient,
		header: http.Header{}, maxAnswer: DefaultMaxAnswer, classify: notFound,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func notFound(code int, _ string) error {
	if code == http.StatusNotFound {
		return ErrNotFound
	}
	return nil
}

// CheckBase checks that base is an http(s)://host[:port] address; name
// names the server in the error.
func CheckBase(name, base string) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s address %q: want http://host:port or https://host:port", name, base)
	}
	return nil
}

// Base is the server's address.
func (c *Client) Base() string { return c.base }

// HTTP is the HTTP client requests go through.
func (c *Client) HTTP() *http.Client { return c.hc }

// Get is Do with GET and no body.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.Do(ctx, http.MethodGet, path, nil, out)
}

// Post is Do with POST.
func (c *Client) Post(ctx context.Context, path string, in, out any) error {
	return c.Do(ctx, http.MethodPost, path, in, out)
}

// Do sends in (nil: no body) as JSON to path (below the base, query string
// included) and decodes a 2xx answer into out (nil: the answer is dropped).
// A non-2xx answer is a *StatusError; a request that got no answer wraps
// ErrNoAnswer; an answer over the limit is an error naming it.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	req, err := c.NewRequest(ctx, method, path, in)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		return fmt.Errorf("%s: %w: %w", c.name, ErrNoAnswer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return c.statusError(req, resp)
	}
	body := &limitedReader{r: resp.Body, n: c.maxAnswer}
	if out != nil {
		if err := json.NewDecoder(body).Decode(out); err != nil {
			if errors.Is(err, errTooLarge) {
				return fmt.Errorf("%s: %s %s: answer is larger than %d bytes", c.name, method, req.URL.Redacted(), c.maxAnswer)
			}
			return fmt.Errorf("%s: %s %s: decode answer: %w", c.name, method, req.URL.Redacted(), err)
		}
	}
	// Read what is left (a newline, or an answer nobody wanted) so the
	// connection can be used again.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorAnswer))
	return nil
}

// NewRequest builds the request Do sends: in (nil: no body) encoded as JSON
// with its Content-Type, and the client's headers.
func (c *Client) NewRequest(ctx context.Context, method, path string, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s: %s %s: encode request: %w", c.name, method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func (c *Client) statusError(req *http.Request, resp *http.Response) *StatusError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorAnswer))
	var eb ErrorBody
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	}
	e := &StatusError{Server: c.name, Method: req.Method, URL: req.URL.Redacted(), Code: resp.StatusCode, Message: msg}
	if c.classify != nil {
		e.Kind = c.classify(e.Code, e.Message)
	}
	return e
}

var errTooLarge = errors.New("answer too large")

// limitedReader reads at most n bytes of r, then fails with errTooLarge if
// more follow (io.LimitReader would end quietly and truncate the JSON).
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		var one [1]byte
		k, err := l.r.Read(one[:])
		if k > 0 {
			return 0, errTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	k, err := l.r.Read(p)
	l.n -= int64(k)
	return k, err
}
