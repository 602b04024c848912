package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
)

// TestAgentServesMutualTLS runs the agent (on the real engine) with
// machines_use_tls: plain HTTP gets 400; only a client presenting the
// router's certificate (or a monitor's) from the bundle's CA gets past the
// handshake, and then the token still counts (a monitor reads /metrics
// alone); a client trusting another CA refuses the agent. Needs Docker.
func TestAgentServesMutualTLS(t *testing.T) {
	ca, other := certstest.New(t), certstest.New(t)
	dir := t.TempDir()
	write := func(name string, body []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	crt, key, err := ca.CA.Issue(certs.Request{Name: "agent.test", Hosts: []string{"127.0.0.1"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	const token = "upca_0123456789abcdef0123456789abcdef0123456"
	write("ca.crt", ca.CertPEM)
	write("agent.crt", crt)
	write("agent.key", key)
	write("agent.token", []byte(token+"\n"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var b [4]byte
	rand.Read(b[:])
	network, name := "upc-test-agent-"+hex.EncodeToString(b[:]), "agenttls"+hex.EncodeToString(b[:])
	write("upc.yaml", []byte(fmt.Sprintf("machines_use_tls: true\ncertificate_bundle_path: ca.crt\nnetwork: %s\n"+
		"agent: {listen: %q, token_file: agent.token, tls_cert_path: agent.crt, tls_key_path: agent.key}\n", network, addr)))
	cli, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.NetworkRemove(context.Background(), network, client.NetworkRemoveOptions{})
		cli.Close()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs strings.Builder
	go func() { done <- run(ctx, []string{"--config", filepath.Join(dir, "upc.yaml"), "--name", name}, &logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop")
		}
	})

	with := func(roots *certstest.CA, cert *tls.Certificate) *http.Client {
		tr := certs.Transport(roots.Pool(), cert)
		tr.DisableKeepAlives = true
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	get := func(c *http.Client, url, tok string) (int, error) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	router, _ := ca.CA.RouterClient(time.Hour)
	base := "https://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, err := get(with(ca, &router), base+"/healthz", "")
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent never answered the router over TLS: %d %v\n%s", code, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, err := get(with(ca, &router), base+"/v1/containers", token); err != nil || code != 200 {
		t.Errorf("the router with its token: %d %v", code, err)
	}
	if code, err := get(with(ca, &router), base+"/v1/containers", ""); err != nil || code != 401 {
		t.Errorf("the router's certificate without the token: %d %v, want 401", code, err)
	}
	// A monitor's certificate reads /metrics and /readyz, and gets nothing
	// else without the token.
	monitor := ca.ClientCert(t, certs.MonitorName)
	for path, want := range map[string]int{"/metrics": 200, "/readyz": 200, "/v1/containers": 401} {
		if code, err := get(with(ca, &monitor), base+path, ""); err != nil || code != want {
			t.Errorf("a monitor's certificate: %s answered %d %v, want %d", path, code, err, want)
		}
	}
	if code, err := get(with(ca, &router), base+"/metrics", ""); err != nil || code != 200 {
		t.Errorf("the router's certificate: /metrics answered %d %v, want 200", code, err)
	}
	foreignMonitor := other.ClientCert(t, certs.MonitorName)
	if code, err := get(with(ca, &foreignMonitor), base+"/metrics", ""); err == nil {
		t.Errorf("a monitor's name from another CA: /metrics answered %d, want a refused handshake", code)
	}
	foreignRouter, _ := other.CA.RouterClient(time.Hour)
	oc, ok, _ := ca.CA.Issue(certs.Request{Name: "someone", Client: true})
	someone, _ := tls.X509KeyPair(oc, ok)
	for what, c := range map[string]*http.Client{
		"no client certificate":                with(ca, nil),
		"the router's name from another CA":    with(ca, &foreignRouter),
		"a client certificate of another name": with(ca, &someone),
		"a client trusting another CA":         with(other, &router),
	} {
		if code, err := get(c, base+"/v1/containers", token); err == nil {
			t.Errorf("%s: answered %d, want a refused handshake", what, code)
		}
	}
	if code, err := get(&http.Client{Timeout: 5 * time.Second}, "http://"+addr+"/v1/containers", token); err != nil || code != 400 {
		t.Errorf("plain HTTP: %d %v, want 400", code, err)
	}
}
