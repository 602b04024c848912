package router

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestWaitHealthyReportsTheLastAnswer: a probe cut short by the health
// deadline itself must not hide what the instance answered before (here a
// slow 503, so the deadline always falls during a probe).
func TestWaitHealthyReportsTheLastAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(40 * time.Millisecond)
		http.Error(w, "never healthy", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	r := &Router{healthTimeout: 150 * time.Millisecond, client: srv.Client()}
	err := r.waitHealthy(context.Background(), srv.URL+"/healthz")
	if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("waitHealthy: %v, want ErrUnhealthy naming the 503", err)
	}
}
