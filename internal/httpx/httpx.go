// Package httpx holds the HTTP plumbing every UPC server shares: handlers that
// return errors, one adapter that turns those errors into JSON bodies with the
// right status, strict bounded JSON decoding, and graceful serving.
package httpx

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/netutil"
)

// DefaultMaxBody bounds request bodies unless a server chooses otherwise.
const DefaultMaxBody = 32 << 20

// Error is an error with an HTTP status. Msg goes to the client; Err (which
// may hold detail the client must not see) goes to the log only.
type Error struct {
	Code int
	Msg  string
	Err  error
	// RetryAfter, when positive, is sent as Retry-After (whole seconds,
	// rounded up): a 429 or 503 says when to come back.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error whose client message is the formatted text.
func Errorf(code int, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// BadRequest is shorthand for a 400 with the given message.
func BadRequest(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, format, args...)
}

// ErrorBody is the JSON shape of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// HandlerFunc is an http handler that returns an error instead of writing it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts h to an http.Handler. An *Error keeps its status and message;
// any other error is a 500 whose detail is logged, not sent.
func Handle(logger *slog.Logger, h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var he *Error
		if !errors.As(err, &he) {
			he = &Error{Code: http.StatusInternalServerError, Msg: "internal error", Err: err}
		}
		level := slog.LevelInfo
		if he.Code >= 500 {
			level = slog.LevelError
		}
		logger.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", he.Code, "err", he.Error())
		if he.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((he.RetryAfter+time.Second-1)/time.Second)))
		}
		WriteJSON(w, he.Code, ErrorBody{Error: he.Msg})
	})
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, code int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	return json.NewEncoder(w).Encode(v)
}

// DecodeOptions tune Decode.
type DecodeOptions struct {
	MaxBody      int64 // 0 means DefaultMaxBody
	AllowUnknown bool  // accept fields the target does not declare
	AllowEmpty   bool  // an empty body decodes to the zero value
	UseNumber    bool  // numbers in interface values decode as json.Number (exact)
}

// Decode reads one JSON value from the request body into v. Bodies over the
// limit, malformed JSON, trailing data, unknown fields (unless allowed) and
// wrong types are all 400s (413 for size) naming the problem.
func Decode(w http.ResponseWriter, r *http.Request, v any, opts DecodeOptions) error {
	limit := opts.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	if !opts.AllowUnknown {
		dec.DisallowUnknownFields()
	}
	if opts.UseNumber {
		dec.UseNumber()
	}
	if err := dec.Decode(v); err != nil {
		return decodeError(err, limit, opts.AllowEmpty)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return Errorf(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", limit)
		}
		return BadRequest("request body must hold a single JSON value")
	}
	return nil
}

func decodeError(err error, limit int64, allowEmpty bool) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		if allowEmpty {
			return nil
		}
		return BadRequest("request body is empty; expected a JSON object")
	case errors.As(err, &mbe):
		return Errorf(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", limit)
	case errors.As(err, &se):
		return BadRequest("malformed JSON at byte %d: %v", se.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return BadRequest("malformed JSON: body ends early")
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "body"
		}
		return BadRequest("field %q must be %s, not JSON %s", field, te.Type.String(), te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return BadRequest("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		return BadRequest("invalid JSON body: %v", err)
	}
}

// Serve runs srv on ln until ctx is done, then shuts it down gracefully,
// giving in-flight requests up to grace to finish.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

// Every UPC server's timeouts: a slow or silent client holds a connection
// for a bounded time only. Writes get long enough for the longest answer
// (a pipeline run over a large user, a whole usercache).
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 5 * time.Minute
	WriteTimeout      = 15 * time.Minute
	IdleTimeout       = 2 * time.Minute
)

// MaxConns bounds every UPC server's open connections (a PM serves one
// user's devices and services; a router, every user's launches).
const MaxConns = 1024

// NewServer is an HTTP server for h with UPC's timeouts.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: ReadHeaderTimeout, ReadTimeout: ReadTimeout,
		WriteTimeout: WriteTimeout, IdleTimeout: IdleTimeout}
}

// ListenAndServe listens on addr and calls Serve. It logs the bound address,
// which matters when addr asks for port 0.
func ListenAndServe(ctx context.Context, logger *slog.Logger, addr string, h http.Handler) error {
	return ListenAndServeTLS(ctx, logger, addr, h, nil)
}

// ListenAndServeTLS is ListenAndServe speaking TLS with tc; a nil tc serves
// plain HTTP. A plain request to a TLS listener is answered 400 by net/http.
func ListenAndServeTLS(ctx context.Context, logger *slog.Logger, addr string, h http.Handler, tc *tls.Config) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	// Past MaxConns open connections, new ones wait in the kernel's queue
	// instead of taking file descriptors (and memory) from those served;
	// the timeouts above bound how long any one holds its place.
	ln = netutil.LimitListener(ln, MaxConns)
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	logger.Info("listening", "addr", ln.Addr().String(), "tls", tc != nil)
	srv := NewServer(h)
	return Serve(ctx, srv, ln, 500*time.Millisecond)
}

// Healthz answers 200 {"status":"ok"}.
func Healthz(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
