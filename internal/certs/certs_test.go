package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test CA "+serial().String(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func pool(t *testing.T, ca *CA) *x509.CertPool {
	t.Helper()
	p, err := Pool(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// serve starts a real TLS server on loopback with tc, answering "ok".
func serve(t *testing.T, tc *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(tls.NewListener(ln, tc))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status + " " + string(b), nil
}

func instanceServer(t *testing.T, ca *CA, id string) string {
	t.Helper()
	c, k, err := ca.IssueInstance(id, 0)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := NewKeypair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, ServerConfig(kp, pool(t, ca)))
}

func TestInstanceClientAcceptsOnlyItsCAsInstances(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	addr := instanceServer(t, ca, "0123456789ab")
	client := &http.Client{Transport: InstanceTransport(pool(t, ca)), Timeout: 5 * time.Second}
	if got, err := get(client, "https://"+addr+"/"); err != nil || got != "200 OK ok" {
		t.Fatalf("own CA's instance: %q, %v", got, err)
	}

	// An instance certificate from another CA.
	foreign := instanceServer(t, other, "0123456789ab")
	if _, err := get(client, "https://"+foreign+"/"); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("foreign CA's instance: err = %v, want unknown authority", err)
	}

	// A certificate of the right CA that is not an instance's (a router's).
	c, k, err := ca.Issue(Request{Name: "router.example", Server: true})
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := NewKeypair(c, k)
	notInstance := serve(t, ServerConfig(kp, nil))
	if _, err := get(client, "https://"+notInstance+"/"); err == nil || !strings.Contains(err.Error(), "not an instance's certificate") {
		t.Errorf("non-instance certificate: err = %v", err)
	}

	// Plain HTTP to the TLS listener: net/http answers 400 and nothing runs.
	got, err := get(&http.Client{Timeout: 5 * time.Second}, "http://"+addr+"/")
	if err != nil || !strings.HasPrefix(got, "400") {
		t.Errorf("plain HTTP to TLS: %q, %v; want a 400", got, err)
	}
}

func TestMutualServerTakesOnlyTheRouter(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	c, k, err := ca.Issue(Request{Name: "agent.example", Hosts: []string{"127.0.0.1"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := NewKeypair(c, k)
	addr := serve(t, MutualServerConfig(kp, pool(t, ca), RouterName))
	url := "https://" + addr + "/"
	with := func(cert *tls.Certificate) *http.Client {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = ClientConfig(pool(t, ca), cert)
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	router, err := ca.RouterClient(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := get(with(&router), url); err != nil || got != "200 OK ok" {
		t.Fatalf("router's certificate: %q, %v", got, err)
	}
	foreignRouter, _ := other.RouterClient(time.Hour)
	ic, ik, _ := ca.IssueInstance("0123456789ab", 0)
	instance, _ := tls.X509KeyPair(ic, ik)
	oc, ok, _ := ca.Issue(Request{Name: "someone", Client: true})
	someone, _ := tls.X509KeyPair(oc, ok)
	for name, cert := range map[string]*tls.Certificate{
		"no certificate":                       nil,
		"the router name from another CA":      &foreignRouter,
		"an instance's (server) certificate":   &instance,
		"a client certificate of another name": &someone,
	} {
		if got, err := get(with(cert), url); err == nil {
			t.Errorf("%s: answered %q, want a refused handshake", name, got)
		}
	}
	// A client that does not trust the agent's CA refuses the agent.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = ClientConfig(pool(t, other), &router)
	if _, err := get(&http.Client{Transport: tr, Timeout: 5 * time.Second}, url); err == nil {
		t.Error("a router trusting another CA accepted the agent")
	}
}

func TestKeypairRenewal(t *testing.T) {
	ca := newCA(t)
	c1, k1, _ := ca.IssueInstance("aaaaaaaaaaaa", time.Minute)
	kp, err := NewKeypair(c1, k1)
	if err != nil {
		t.Fatal(err)
	}
	first := kp.Leaf().SerialNumber
	if err := kp.Set([]byte("junk"), k1); err == nil {
		t.Fatal("a junk certificate was taken")
	}
	if kp.Leaf().SerialNumber.Cmp(first) != 0 {
		t.Fatal("a refused renewal changed the certificate")
	}
	c2, k2, _ := ca.IssueInstance("aaaaaaaaaaaa", time.Hour)
	if err := kp.Set(c2, k2); err != nil {
		t.Fatal(err)
	}
	if kp.Leaf().SerialNumber.Cmp(first) == 0 {
		t.Fatal("renewal kept the old certificate")
	}
}

func TestIssueLimits(t *testing.T) {
	ca := newCA(t)
	c, _, err := ca.Issue(Request{Name: "long", Server: true, TTL: 1000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := x509.ParseCertificate(mustDER(t, c))
	if kp.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("certificate outlives its CA: %s > %s", kp.NotAfter, ca.Cert.NotAfter)
	}
	for name, req := range map[string]Request{
		"no name":      {Server: true},
		"no use":       {Name: "x"},
		"negative ttl": {Name: "x", Server: true, TTL: -time.Second},
	} {
		if _, _, err := ca.Issue(req); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
	ip, _, _ := ca.Issue(Request{Name: "n", Hosts: []string{"10.0.0.5", "host.example"}, Server: true})
	cert, _ := x509.ParseCertificate(mustDER(t, ip))
	if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("10.0.0.5")) || len(cert.DNSNames) != 2 {
		t.Errorf("hosts: IPs %v, DNS %v", cert.IPAddresses, cert.DNSNames)
	}
}

func mustDER(t *testing.T, certPEM []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM block")
	}
	return b.Bytes
}

func TestSaveLoadAndNoOverwrite(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v, mode %v", err, st.Mode())
	}
	back, err := LoadCA(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile))
	if err != nil || !back.Cert.Equal(ca.Cert) {
		t.Fatalf("load: %v", err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if err := newCA(t).Save(dir); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second save: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if string(before) != string(after) {
		t.Fatal("a refused save changed the CA")
	}
	// A leaf is not a CA.
	c, k, _ := ca.Issue(Request{Name: "leaf", Server: true})
	if _, err := ParseCA(c, k); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("leaf as CA: %v", err)
	}
}

func TestServingFromEnv(t *testing.T) {
	ca := newCA(t)
	c, k, _ := ca.IssueInstance("0123456789ab", 0)
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if s, err := ServingFromEnv(env(map[string]string{EnvCert: string(c), EnvKey: string(k), EnvCA: string(ca.CertPEM)}), false); err != nil || s == nil {
		t.Fatalf("full env: %v", err)
	}
	if _, err := ServingFromEnv(env(nil), false); err == nil || !strings.Contains(err.Error(), "no TLS certificate") {
		t.Errorf("nothing, not legacy: %v", err)
	}
	if s, err := ServingFromEnv(env(nil), true); err != nil || s != nil {
		t.Errorf("legacy: %v, %v", s, err)
	}
	if s, err := ServingFromEnv(env(map[string]string{EnvPlain: "1"}), false); err != nil || s != nil {
		t.Errorf("explicit plain: %v, %v", s, err)
	}
	if _, err := ServingFromEnv(env(map[string]string{EnvCert: string(c), EnvCA: string(ca.CertPEM)}), false); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Errorf("no key: %v", err)
	}
	other := newCA(t)
	if _, err := ServingFromEnv(env(map[string]string{EnvCert: string(c), EnvKey: string(k), EnvCA: string(other.CertPEM)}), false); err == nil {
		t.Error("a certificate its own CA bundle does not verify was taken")
	}
}

// TestRenewal: over real TLS, only the router's client certificate of the
// instance's CA replaces an instance's certificate, and only with one for
// the same instance; the next handshake serves the new one.
func TestRenewal(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	c, k, _ := ca.IssueInstance("0123456789ab", time.Hour)
	kp, _ := NewKeypair(c, k)
	s := &Serving{Keypair: kp, Roots: pool(t, ca)}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.WithRenewal(next), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(tls.NewListener(ln, s.Config()))
	t.Cleanup(func() { srv.Close() })
	url := "https://" + ln.Addr().String() + RenewPath
	client := func(cert *tls.Certificate) *http.Client {
		tr := InstanceTransport(pool(t, ca))
		tr.DisableKeepAlives = true
		if cert != nil {
			tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	put := func(hc *http.Client, certPEM, keyPEM []byte) (int, error) {
		body, _ := json.Marshal(Renewal{Cert: string(certPEM), Key: string(keyPEM)})
		req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	router, _ := ca.RouterClient(time.Hour)
	foreignRouter, _ := other.RouterClient(time.Hour)
	oc, ok, _ := ca.Issue(Request{Name: "someone", Client: true})
	someone, _ := tls.X509KeyPair(oc, ok)
	newC, newK, _ := ca.IssueInstance("0123456789ab", 2*time.Hour)
	first := kp.Leaf().SerialNumber

	if code, err := put(client(nil), newC, newK); code != 403 || err != nil {
		t.Errorf("no client certificate: %d %v, want 403", code, err)
	}
	if code, err := put(client(&someone), newC, newK); code != 403 || err != nil {
		t.Errorf("a client certificate not the router's: %d %v, want 403", code, err)
	}
	// (Go's client withholds a certificate the server's CAs did not issue.)
	if code, err := put(client(&foreignRouter), newC, newK); err == nil && code != 403 {
		t.Errorf("the router name from another CA: %d, want 403 or a refused handshake", code)
	}
	otherC, otherK, _ := ca.IssueInstance("ba9876543210", time.Hour)
	if code, err := put(client(&router), otherC, otherK); code != 400 || err != nil {
		t.Errorf("another instance's certificate: %d %v, want 400", code, err)
	}
	if kp.Leaf().SerialNumber.Cmp(first) != 0 {
		t.Fatal("a refused renewal replaced the certificate")
	}
	if code, err := put(client(&router), newC, newK); code != 204 || err != nil {
		t.Fatalf("the router's renewal: %d %v, want 204", code, err)
	}
	conn, err := tls.Dial("tcp", ln.Addr().String(), InstanceClientConfig(pool(t, ca)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(first) == 0 {
		t.Error("after renewal the old certificate is still served")
	}
}

func TestTLSOnlyRefusesPlain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hit := make(chan struct{}, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hit <- struct{}{} }), ReadHeaderTimeout: time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	c := InstanceClient(pool(t, newCA(t)), time.Second)
	_, err = c.Post("http://"+ln.Addr().String()+"/unseal", "application/json", strings.NewReader(`{"key":"secret"}`))
	if !errors.Is(err, ErrPlainHTTP) {
		t.Fatalf("plain request: %v, want ErrPlainHTTP", err)
	}
	select {
	case <-hit:
		t.Fatal("the plain request reached the server")
	default:
	}
}
