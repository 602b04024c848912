package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/e-mission/upc/router/api"
)

// TestPostQueryRetriesOnlyUnanswered: a query whose connection is dropped
// before any answer is sent once more (its query id makes the budget charge
// once); a query the service answered, even with an error, is not.
func TestPostQueryRetriesOnlyUnanswered(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n := calls.Add(1); {
		case r.URL.Path == "/drop" && n == 1:
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close() // no answer at all
			}
		case r.URL.Path == "/fail":
			http.Error(w, `{"error": "broken"}`, http.StatusInternalServerError)
		default:
			w.Write([]byte(`{"success": true}`))
		}
	}))
	defer srv.Close()
	c := &Client{User: "u", HTTP: srv.Client()}
	svc := c.service("test", api.Instance{Address: srv.URL})
	var out map[string]any
	if err := c.postQuery(context.Background(), svc, "/drop", "q-1", map[string]int{"q": 1}, &out); err != nil {
		t.Fatalf("dropped once: %v", err)
	}
	if calls.Load() != 2 || out["success"] != true {
		t.Errorf("dropped once: %d calls, answer %v; want 2 calls and the answer", calls.Load(), out)
	}
	calls.Store(0)
	if err := c.postQuery(context.Background(), svc, "/fail", "q-1", map[string]int{"q": 1}, &out); err == nil {
		t.Error("a 500 answer passed")
	}
	if calls.Load() != 1 {
		t.Errorf("an answered query was sent %d times", calls.Load())
	}
}
