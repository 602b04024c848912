package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
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

// The binary serves /healthz on UPC_COUNT_ADDR and stops cleanly when its
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
		done <- run(ctx, func(k string) string {
			if k == "UPC_COUNT_ADDR" {
				return addr
			}
			return ""
		}, &logs)
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
	var h map[string]string
	if resp.StatusCode != 200 || json.Unmarshal(b, &h) != nil || h["status"] != "ok" {
		t.Fatalf("healthz: %d %s", resp.StatusCode, b)
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
	err := run(context.Background(), func(string) string { return "not-an-address" }, io.Discard)
	if err == nil {
		t.Fatal("a bad address was accepted")
	}
}

func TestBadNoiseSeed(t *testing.T) {
	err := run(context.Background(), func(k string) string {
		if k == "UPC_EXPERIMENT_NOISE_SEED" {
			return "-1"
		}
		return "127.0.0.1:0"
	}, io.Discard)
	if err == nil {
		t.Fatal("a bad seed was accepted")
	}
}
