package router

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
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
	err := r.waitHealthy(ctx, "0123456789ab", srv.URL+"/healthz")
	if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("waitHealthy: %v, want ErrUnhealthy naming the 503", err)
	}
}

// TestProbeWantsTheInstanceItself: over TLS, an answer from another instance
// of the same CA (an address reused before a proxy caught up) is not the new
// instance's health: the wait goes on and, ended, says who answered; the
// instance itself passes.
func TestProbeWantsTheInstanceItself(t *testing.T) {
	ca := certstest.New(t)
	certPEM, keyPEM, err := ca.CA.IssueInstance("aaaaaaaaaaaa", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var probes atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if probes.Add(1) == 3 {
			cancel()
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}} // httptest's own would win over GetCertificate
	srv.StartTLS()
	defer srv.Close()
	r := &Router{healthTimeout: 30 * time.Second, client: &http.Client{Transport: certs.InstanceTransport(ca.Pool())}}
	err = r.waitHealthy(ctx, "bbbbbbbbbbbb", srv.URL+"/healthz")
	if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "another instance (aaaaaaaaaaaa.instances.upc)") {
		t.Fatalf("another instance answering: %v, want ErrUnhealthy naming it", err)
	}
	if err := r.waitHealthy(context.Background(), "aaaaaaaaaaaa", srv.URL+"/healthz"); err != nil {
		t.Fatalf("the instance itself: %v", err)
	}
}
