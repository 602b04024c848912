package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The binary serves /healthz on UPC_PIPELINE_ADDR and stops cleanly when its
// context ends (main cancels it on SIGTERM).
func TestServeAndShutDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, env(map[string]string{"UPC_PIPELINE_ADDR": addr}), &logs)
	}()
	var resp *http.Response
	for i := 0; ; i++ {
		resp, err = http.Get("http://" + addr + "/healthz")
		if err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("not serving: %v\n%s", err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var h map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(b, &h) != nil || h["status"] != "ok" {
		t.Fatalf("healthz: %d %s", resp.StatusCode, b)
	}
	// Every other call bears the instance secret.
	for token, want := range map[string]int{"": 401, "upcs_wrong": 403, secret: 400} {
		req, _ := http.NewRequest("POST", "http://"+addr+"/run_pipeline", strings.NewReader("{}"))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST /run_pipeline bearing %q: %d, want %d", token, resp.StatusCode, want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no shutdown within 5 s")
	}
}

func TestBadAddress(t *testing.T) {
	err := run(context.Background(), env(map[string]string{"UPC_PIPELINE_ADDR": "not-an-address"}), io.Discard)
	if err == nil {
		t.Fatal("a bad address was accepted")
	}
}

// secret is the instance secret the tests' service answers.
const secret = "upcs_main-test-secret"

// env is a getenv over vars, with the access the router would set.
func env(vars map[string]string) func(string) string {
	return func(k string) string {
		if k == access.EnvSHA256 {
			if v, ok := vars[k]; ok {
				return v
			}
			return access.Hash(secret)
		}
		if k == certs.EnvPlain {
			if v, ok := vars[k]; ok {
				return v
			}
			return "1" // these tests speak plain HTTP to the binary; TLS: container_test
		}
		return vars[k]
	}
}

// Without a certificate, and neither legacy nor explicitly plain, the
// service does not start: deny by default.
func TestRefusesWithoutCertificate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := run(ctx, env(map[string]string{"UPC_PIPELINE_ADDR": "127.0.0.1:0", certs.EnvPlain: ""}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no TLS certificate") {
		t.Errorf("no certificate: %v", err)
	}
}

// Without access settings, or with a half binding, the service does not
// start.
func TestRefusesWithoutAccess(t *testing.T) {
	for _, vars := range []map[string]string{
		{access.EnvSHA256: ""},
		{access.EnvSHA256: "", access.EnvLegacy: "0"},
		{access.EnvSHA256: "abc"},
		{access.EnvPMAddress: "http://pm:8080"},
	} {
		vars["UPC_PIPELINE_ADDR"] = "127.0.0.1:0"
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := run(ctx, env(vars), io.Discard)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "access") {
			t.Errorf("%v: %v", vars, err)
		}
	}
}
