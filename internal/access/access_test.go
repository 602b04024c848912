package access_test

import (
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/obs/obstest"
)

// TestGuardMonitor: an instance's guard lets anyone read /healthz and
// /readyz; /metrics takes the instance secret or, over TLS, a client
// certificate of the instance's CA naming monitor.upc or router.upc; such
// a certificate opens nothing else, and a certificate of another name or
// another CA opens nothing.
func TestGuardMonitor(t *testing.T) {
	ca := certstest.New(t)
	secret := access.NewToken(access.PrefixInstance)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("served")) })
	srv := ca.InstanceServer(t, access.Guard(access.Instance{SHA256: access.Hash(secret)}, slog.New(slog.DiscardHandler), ok))

	anon := ca.Client(10 * time.Second)
	monitor := ca.ClientAs(t, certs.MonitorName, 10*time.Second)
	router := ca.ClientAs(t, certs.RouterName, 10*time.Second)
	other := ca.ClientAs(t, "mallory.upc", 10*time.Second)
	for _, c := range []struct {
		who    string
		c      *http.Client
		method string
		path   string
		token  string
		want   int
	}{
		{"anyone", anon, "GET", "/healthz", "", 200},
		{"anyone", anon, "GET", "/readyz", "", 200},
		{"anyone", anon, "HEAD", "/readyz", "", 200},
		{"anyone", anon, "POST", "/readyz", "", 401},
		{"anyone", anon, "GET", "/metrics", "", 401},
		{"a wrong secret", anon, "GET", "/metrics", "upcs_wrong", 403},
		{"the owner", anon, "GET", "/metrics", secret, 200},
		{"a monitor", monitor, "GET", "/metrics", "", 200},
		{"a monitor", monitor, "HEAD", "/metrics", "", 200},
		{"the router", router, "GET", "/metrics", "", 200},
		{"a monitor", monitor, "POST", "/metrics", "", 401},
		{"a monitor", monitor, "GET", "/v1/data", "", 401},
		{"a monitor", monitor, "GET", "/metrics/x", "", 401},
		{"another client name", other, "GET", "/metrics", "", 401},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := c.c.Do(req)
		if err != nil {
			t.Errorf("%s %s %s: %v", c.who, c.method, c.path, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s %s: %d, want %d", c.who, c.method, c.path, resp.StatusCode, c.want)
		}
	}

	// A monitor certificate of another CA does not even connect.
	foreign := certstest.New(t)
	tr := certs.InstanceTransport(ca.Pool())
	tr.TLSClientConfig.Certificates = []tls.Certificate{foreign.ClientCert(t, certs.MonitorName)}
	if resp, err := (&http.Client{Transport: tr}).Get(srv.URL + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("a monitor certificate of another CA read /metrics")
		}
	}

	// Plain HTTP carries no client certificate: /metrics takes the secret only.
	plain := httptest.NewServer(access.Guard(access.Instance{SHA256: access.Hash(secret)}, slog.New(slog.DiscardHandler), ok))
	defer plain.Close()
	if code, _ := obstest.Get(t, plain.Client(), plain.URL+"/metrics", ""); code != http.StatusUnauthorized {
		t.Fatalf("plain /metrics without the secret: %d", code)
	}
	if code, body := obstest.Get(t, plain.Client(), plain.URL+"/metrics", secret); code != http.StatusOK || !strings.Contains(body, "served") {
		t.Fatalf("plain /metrics with the secret: %d %s", code, body)
	}
}

func TestListenAddr(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, ":8080"},
		{map[string]string{"UPC_X_ADDR": ":9000"}, ":9000"},
		{map[string]string{"UPC_X_ADDR": ":9000", access.EnvListen: "10.0.0.1:20001"}, "10.0.0.1:20001"},
		{map[string]string{access.EnvListen: " "}, ":8080"},
	} {
		if got := access.ListenAddr(func(k string) string { return c.env[k] }, "UPC_X_ADDR", ":8080"); got != c.want {
			t.Errorf("ListenAddr(%v) = %q, want %q", c.env, got, c.want)
		}
	}
}

// TestHealthForCaller: an instance's /healthz tells whether a PM was
// claimed and how long it has been idle only to the router's certificate
// (and over plain HTTP, where no one can prove who they are); anyone else
// over TLS, a monitor included, gets the status alone.
func TestHealthForCaller(t *testing.T) {
	ca := certstest.New(t)
	claimed, idle := true, int64(42)
	full := access.Health{Status: "ok", Claimed: &claimed, IdleSeconds: &idle}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(full.ForCaller(r))
	})
	srv := ca.InstanceServer(t, h)
	plain := httptest.NewServer(h)
	defer plain.Close()
	get := func(c *http.Client, url string) access.Health {
		t.Helper()
		resp, err := c.Get(url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got access.Health
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, c := range []struct {
		who  string
		c    *http.Client
		url  string
		full bool
	}{
		{"the router", ca.ClientAs(t, certs.RouterName, 10*time.Second), srv.URL, true},
		{"anyone over TLS", ca.Client(10 * time.Second), srv.URL, false},
		{"a monitor", ca.ClientAs(t, certs.MonitorName, 10*time.Second), srv.URL, false},
		{"another name", ca.ClientAs(t, "mallory.upc", 10*time.Second), srv.URL, false},
		{"anyone over plain HTTP", http.DefaultClient, plain.URL, true},
	} {
		got := get(c.c, c.url)
		if got.Status != "ok" {
			t.Errorf("%s: status %q", c.who, got.Status)
		}
		if told := got.Claimed != nil && got.IdleSeconds != nil && *got.IdleSeconds == 42; told != c.full || (!c.full && (got.Claimed != nil || got.IdleSeconds != nil)) {
			t.Errorf("%s: %+v; want claimed and idle told: %v", c.who, got, c.full)
		}
	}
}
