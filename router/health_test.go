package router

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitHealthyReportsTheLastAnswer: a probe cut short by the end of the
// wait must not hide what the instance answered before. The instance answers
// its first probe 503 and holds the second until the wait ends, which the
// test brings about itself (no deadline to race on a loaded machine).
func TestWaitHealthyReportsTheLastAnswer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var probes atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if probes.Add(1) == 1 {
			http.Error(w, "never healthy", http.StatusServiceUnavailable)
			return
		}
		cancel() // the wait ends during this probe
		<-r.Context().Done()
	}))
	defer srv.Close()
	r := &Router{healthTimeout: time.Hour, client: srv.Client()}
	err := r.waitHealthy(ctx, srv.URL+"/healthz")
	if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("waitHealthy: %v, want ErrUnhealthy naming the 503", err)
	}
}
