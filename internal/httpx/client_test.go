package httpx

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestClientAgainstHandle: the client and the server side agree: a body goes
// out as JSON with the client's headers, a 2xx answer is decoded, an error
// answer becomes a *StatusError carrying the status and the server's message.
func TestClientAgainstHandle(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	mux := http.NewServeMux()
	mux.Handle("POST /echo", Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		if r.Header.Get("Authorization") != "Bearer s3cret" || r.Header.Get("Content-Type") != "application/json" {
			return Errorf(http.StatusUnauthorized, "headers %v", r.Header)
		}
		var in struct{ N int }
		if err := Decode(w, r, &in, DecodeOptions{}); err != nil {
			return err
		}
		return WriteJSON(w, http.StatusOK, map[string]int{"n": in.N + 1})
	}))
	mux.Handle("GET /missing", Handle(logger, func(http.ResponseWriter, *http.Request) error {
		return Errorf(http.StatusNotFound, "no such thing")
	}))
	mux.HandleFunc("GET /plain", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "plain text trouble", http.StatusBadGateway)
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `"`+strings.Repeat("x", 100)+`"`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()
	c := NewClient("test", srv.URL+"/", WithBearer("s3cret"))

	var out struct{ N int }
	if err := c.Post(ctx, "/echo", map[string]int{"N": 41}, &out); err != nil || out.N != 42 {
		t.Fatalf("echo: %+v, %v", out, err)
	}

	err := c.Post(ctx, "/echo", map[string]any{"N": 1, "extra": true}, &out)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest || se.Message != `unknown field "extra"` || se.Server != "test" {
		t.Fatalf("unknown field: %#v", err)
	}
	if !strings.Contains(err.Error(), "400 Bad Request") || !strings.Contains(err.Error(), "/echo") {
		t.Errorf("error text %q: want the status and the path", err)
	}

	err = c.Get(ctx, "/missing", nil)
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &se) || se.Message != "no such thing" {
		t.Fatalf("404: %v", err)
	}

	err = c.Get(ctx, "/plain", nil)
	if !errors.As(err, &se) || se.Code != http.StatusBadGateway || se.Message != "plain text trouble" || errors.Is(err, ErrNotFound) {
		t.Fatalf("plain error: %v", err)
	}

	var s string
	if err := NewClient("test", srv.URL, WithMaxAnswer(50)).Get(ctx, "/big", &s); err == nil || !strings.Contains(err.Error(), "larger than 50 bytes") {
		t.Fatalf("answer over the limit: %v", err)
	}
	if err := NewClient("test", srv.URL, WithMaxAnswer(102)).Get(ctx, "/big", &s); err != nil || len(s) != 100 {
		t.Fatalf("answer at the limit: %v", err)
	}

	errBad := errors.New("bad")
	kinds := NewClient("test", srv.URL, WithKinds(func(code int, _ string) error {
		if code == http.StatusBadGateway {
			return errBad
		}
		return nil
	}))
	if err := kinds.Get(ctx, "/plain", nil); !errors.Is(err, errBad) {
		t.Errorf("classified answer: %v", err)
	}
	if err := kinds.Get(ctx, "/missing", nil); errors.Is(err, ErrNotFound) {
		t.Errorf("a classifier replaces the default: %v", err)
	}

	srv.Close()
	if err := c.Get(ctx, "/missing", nil); !errors.Is(err, ErrNoAnswer) {
		t.Errorf("closed server: %v, want ErrNoAnswer", err)
	}
}

func TestCheckBase(t *testing.T) {
	for base, ok := range map[string]bool{
		"http://h:1": true, "https://h": true, "h:1": false, "ftp://h": false, "::not a url": false, "http://": false,
	} {
		if err := CheckBase("thing", base); (err == nil) != ok {
			t.Errorf("CheckBase(%q) = %v", base, err)
		} else if err != nil && !strings.Contains(err.Error(), "thing address") {
			t.Errorf("CheckBase(%q) = %v: want the name", base, err)
		}
	}
}
