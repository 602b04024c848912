package access_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/access"
)

// TestLastUse: authenticated requests are use; health probes and refused
// requests are not, and /healthz reports the idle time in seconds.
func TestLastUse(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	use := access.NewLastUse(clock)
	secret := access.NewToken(access.PrefixInstance)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", use.Healthz)
	mux.HandleFunc("GET /work", func(w http.ResponseWriter, _ *http.Request) {})
	// /long is a request of an hour (a long pipeline run): the instance is
	// not idle while serving it, and its idle time counts from its end.
	var h http.Handler
	mux.HandleFunc("GET /long", func(w http.ResponseWriter, r *http.Request) {
		now = now.Add(time.Hour)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		var hl access.Health
		if err := json.NewDecoder(rec.Body).Decode(&hl); err != nil || hl.IdleSeconds == nil || *hl.IdleSeconds != 0 {
			t.Errorf("idle while serving a request: %+v, %v; want 0", hl, err)
		}
	})
	h = access.Guard(access.Instance{SHA256: access.Hash(secret)}, slog.New(slog.DiscardHandler), use.Track(mux))

	call := func(path, tok string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	idle := func() int64 {
		t.Helper()
		rec := call("/healthz", "")
		var hl access.Health
		if err := json.NewDecoder(rec.Body).Decode(&hl); err != nil || hl.IdleSeconds == nil || hl.Status != "ok" {
			t.Fatalf("healthz %d %+v: %v", rec.Code, hl, err)
		}
		return *hl.IdleSeconds
	}
	now = now.Add(90 * time.Second)
	if got := idle(); got != 90 {
		t.Fatalf("idle since start: %d s, want 90", got)
	}
	call("/work", "")       // refused: 401
	call("/work", "upcs_x") // refused: 403
	if got := idle(); got != 90 {
		t.Fatalf("refused requests counted as use: idle %d s", got)
	}
	if rec := call("/work", secret); rec.Code != http.StatusOK {
		t.Fatalf("owner's call: %d", rec.Code)
	}
	now = now.Add(5 * time.Second)
	if got := idle(); got != 5 {
		t.Fatalf("after a use: idle %d s, want 5", got)
	}
	now = now.Add(5 * time.Second)
	if got := idle(); got != 10 {
		t.Fatalf("health probes counted as use: idle %d s, want 10", got)
	}
	if rec := call("/long", secret); rec.Code != http.StatusOK {
		t.Fatalf("long call: %d", rec.Code)
	}
	now = now.Add(3 * time.Second)
	if got := idle(); got != 3 {
		t.Fatalf("after an hour's request: idle %d s, want 3 (from its end)", got)
	}
}
