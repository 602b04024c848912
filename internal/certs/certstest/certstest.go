// Package certstest gives tests a CA of their own and instances'
// certificates from it, as a router would make them.
package certstest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/certs"
)

var n atomic.Int64

// CA is a test's certificate authority.
type CA struct {
	*certs.CA
}

// New makes a CA for the test.
func New(t testing.TB) *CA {
	t.Helper()
	// Distinct names: two CAs of one test must not look alike to a verifier.
	ca, err := certs.NewCA(fmt.Sprintf("test CA %s #%d", t.Name(), n.Add(1)), 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{CA: ca}
}

// Pool trusts the CA.
func (c *CA) Pool() *x509.CertPool {
	p, err := certs.Pool(c.CertPEM)
	if err != nil {
		panic(err)
	}
	return p
}

// InstanceEnv is the environment the router gives instance id: its
// certificate, key and the CA.
func (c *CA) InstanceEnv(id string) map[string]string {
	cert, key, err := c.IssueInstance(id, time.Hour)
	if err != nil {
		panic(err)
	}
	return map[string]string{certs.EnvCert: string(cert), certs.EnvKey: string(key), certs.EnvCA: string(c.CertPEM)}
}

// Client calls instances over TLS only, verifying them against the CA.
func (c *CA) Client(timeout time.Duration) *http.Client {
	return certs.InstanceClient(c.Pool(), timeout)
}

// InstanceTLS is an instance client's TLS configuration.
func (c *CA) InstanceTLS() *tls.Config { return certs.InstanceClientConfig(c.Pool()) }

// Save writes the CA into a temporary folder of t and returns the paths
// of ca.crt and ca.key.
func (c *CA) Save(t testing.TB) (certPath, keyPath string) {
	t.Helper()
	dir := t.TempDir()
	if err := c.CA.Save(dir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, certs.CACertFile), filepath.Join(dir, certs.CAKeyFile)
}

// Issue writes a server certificate for name and hosts into a temporary
// folder and returns its files' paths.
func (c *CA) Issue(t testing.TB, name string, hosts ...string) (certPath, keyPath string) {
	t.Helper()
	cert, key, err := c.CA.Issue(certs.Request{Name: name, Hosts: hosts, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certPath, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// ClientCert is a client certificate of the CA naming name (such as
// certs.MonitorName or certs.RouterName).
func (c *CA) ClientCert(t testing.TB, name string) tls.Certificate {
	t.Helper()
	cert, key, err := c.CA.Issue(certs.Request{Name: name, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// ClientAs calls instances over TLS only, verifying them against the CA
// and presenting a client certificate naming name.
func (c *CA) ClientAs(t testing.TB, name string, timeout time.Duration) *http.Client {
	t.Helper()
	tr := certs.InstanceTransport(c.Pool())
	tr.TLSClientConfig.Certificates = []tls.Certificate{c.ClientCert(t, name)}
	return &http.Client{Timeout: timeout, Transport: certs.TLSOnly(tr)}
}

// InstanceServer serves h over TLS as an instance does (certs.ServerConfig:
// instance 0123456789ab's certificate, client certificates of this CA taken
// if given), closed when the test ends. The certificate is set directly:
// httptest's own would be served to a client that sends no server name.
func (c *CA) InstanceServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	certPEM, keyPEM, err := c.IssueInstance("0123456789ab", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: c.Pool(), ClientAuth: tls.VerifyClientCertIfGiven}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}
