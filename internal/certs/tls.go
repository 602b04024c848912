package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/e-mission/upc/internal/httpx"
)

// Pool parses a PEM bundle of CA certificates.
func Pool(bundle []byte) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(bundle) {
		return nil, errors.New("certs: no PEM certificate in the CA bundle")
	}
	return p, nil
}

// LoadPool reads a PEM bundle of CA certificates from path.
func LoadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: CA bundle: %w", err)
	}
	p, err := Pool(b)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return p, nil
}

// Keypair holds a server's certificate and lets it be replaced while the
// server runs (an instance's certificate renewed on resume).
type Keypair struct {
	p atomic.Pointer[tls.Certificate]
}

// NewKeypair parses a PEM certificate (chain) and key.
func NewKeypair(certPEM, keyPEM []byte) (*Keypair, error) {
	k := &Keypair{}
	return k, k.Set(certPEM, keyPEM)
}

// Set replaces the certificate; a pair that does not parse changes nothing.
func (k *Keypair) Set(certPEM, keyPEM []byte) error {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("certs: certificate and key: %w", err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return err
		}
	}
	k.p.Store(&c)
	return nil
}

// Leaf is the current certificate.
func (k *Keypair) Leaf() *x509.Certificate { return k.p.Load().Leaf }

func (k *Keypair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return k.p.Load(), nil }

// ServerConfig serves k's certificate. With clients non-nil, a client may
// present a certificate from those CAs (the handler decides what it may do;
// see ClientNamed).
func ServerConfig(k *Keypair, clients *x509.CertPool) *tls.Config {
	c := &tls.Config{GetCertificate: k.get, MinVersion: tls.VersionTLS12}
	if clients != nil {
		c.ClientCAs = clients
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c
}

// MutualServerConfig serves k's certificate to clients that present a
// certificate from clients' CAs naming one of names: a machine agent takes
// only its router.
func MutualServerConfig(k *Keypair, clients *x509.CertPool, names ...string) *tls.Config {
	c := &tls.Config{GetCertificate: k.get, MinVersion: tls.VersionTLS12,
		ClientCAs: clients, ClientAuth: tls.RequireAndVerifyClientCert}
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 || !slices.ContainsFunc(names, func(n string) bool {
			return slices.Contains(cs.PeerCertificates[0].DNSNames, n)
		}) {
			return fmt.Errorf("certs: client certificate does not name %s", strings.Join(names, " or "))
		}
		return nil
	}
	return c
}

// ClientNamed reports whether r came with a verified client certificate
// naming name.
func ClientNamed(r *http.Request, name string) bool {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return false
	}
	return slices.Contains(r.TLS.VerifiedChains[0][0].DNSNames, name)
}

// ClientConfig verifies servers against roots by their host name, as any
// HTTPS client does (the router, agents), presenting cert if non-nil.
func ClientConfig(roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// Transport is an HTTPS transport verifying servers by host name against
// roots (nil: the system's), presenting cert if non-nil.
func Transport(roots *x509.CertPool, cert *tls.Certificate) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = ClientConfig(roots, cert)
	return t
}

// InstanceClientConfig verifies instances: the peer's certificate must chain
// to roots and carry an instance name (InstanceName), whatever address it
// was reached at, since an instance's address (a published port, a node
// port) is known only after its certificate is made.
func InstanceClientConfig(roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is VerifyConnection's: chain and instance name, not
		// the dialled host.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		VerifyConnection: func(cs tls.ConnectionState) error {
			return VerifyInstance(roots, cs.PeerCertificates)
		},
	}
}

// VerifyInstance checks that chain (leaf first) is an instance's
// certificate issued by one of roots.
func VerifyInstance(roots *x509.CertPool, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("certs: the server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("certs: instance certificate: %w", err)
	}
	if !slices.ContainsFunc(leaf.DNSNames, func(n string) bool { return strings.HasSuffix(n, "."+InstanceDomain) }) {
		return fmt.Errorf("certs: %q is not an instance's certificate", leaf.Subject.CommonName)
	}
	return nil
}

// InstanceTransport is an HTTP transport for calling instances: plain
// http:// addresses as before (legacy instances), https:// ones verified by
// InstanceClientConfig(roots).
func InstanceTransport(roots *x509.CertPool) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = InstanceClientConfig(roots)
	return t
}

// Serving is an instance's TLS as its router set it: its certificate, and
// the CAs it trusts when it calls other instances (a service its PM).
type Serving struct {
	Keypair *Keypair
	Roots   *x509.CertPool
}

// Config is the server side: the instance's certificate; clients may
// present a certificate of Roots (the router does, to renew it).
func (s *Serving) Config() *tls.Config { return ServerConfig(s.Keypair, s.Roots) }

// Transport calls other instances, verifying them against Roots.
func (s *Serving) Transport() *http.Transport { return InstanceTransport(s.Roots) }

// ServingFromEnv reads EnvCert, EnvKey and EnvCA. Without a certificate it
// returns nil, and the instance serves plain HTTP only if plainOK (legacy,
// or EnvPlain for a single binary under test): deny by default.
func ServingFromEnv(getenv func(string) string, plainOK bool) (*Serving, error) {
	cert, key, ca := getenv(EnvCert), getenv(EnvKey), getenv(EnvCA)
	if cert == "" && key == "" {
		if plainOK || getenv(EnvPlain) == "1" {
			return nil, nil
		}
		return nil, fmt.Errorf("no TLS certificate (%s, %s): the router gives every instance one; "+
			"plain HTTP only for legacy instances or with %s=1", EnvCert, EnvKey, EnvPlain)
	}
	if cert == "" || key == "" || ca == "" {
		return nil, fmt.Errorf("%s, %s and %s go together: one is missing", EnvCert, EnvKey, EnvCA)
	}
	k, err := NewKeypair([]byte(cert), []byte(key))
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", EnvCert, EnvKey, err)
	}
	roots, err := Pool([]byte(ca))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvCA, err)
	}
	if err := VerifyInstance(roots, []*x509.Certificate{k.Leaf()}); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvCert, err)
	}
	return &Serving{Keypair: k, Roots: roots}, nil
}

// ListenAndServe serves h on addr: over TLS with the instance's
// certificate (renewable at RenewPath), or, for a nil s (an instance
// ServingFromEnv let run without one), plain HTTP, logged as a warning.
func (s *Serving) ListenAndServe(ctx context.Context, logger *slog.Logger, addr string, h http.Handler) error {
	if s == nil {
		logger.Warn("serving plain HTTP: requests, keys and tokens cross the network in clear (legacy instance or " + EnvPlain + "=1)")
		return httpx.ListenAndServe(ctx, logger, addr, h)
	}
	return httpx.ListenAndServeTLS(ctx, logger, addr, s.WithRenewal(h), s.Config())
}

// Client is an HTTP client for calling other instances (a service its PM)
// with a timeout: verifying them by Roots, or, for a nil s, plain.
func (s *Serving) Client(timeout time.Duration) *http.Client {
	if s == nil {
		return &http.Client{Timeout: timeout}
	}
	return InstanceClient(s.Roots, timeout)
}

// TLSOnly refuses every request that is not https, before it leaves: a
// client holding keys, secrets or grants never sends them in clear by
// mistake (an http:// address from a legacy router, say).
func TLSOnly(rt http.RoundTripper) http.RoundTripper { return tlsOnly{rt} }

type tlsOnly struct{ next http.RoundTripper }

// ErrPlainHTTP is what TLSOnly answers a plain request with.
var ErrPlainHTTP = errors.New("refusing plain HTTP: this client speaks only TLS to instances (the address is http://)")

func (t tlsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("%w: %s", ErrPlainHTTP, r.URL.Redacted())
	}
	return t.next.RoundTrip(r)
}

// InstanceClient calls instances over TLS only, verified against roots.
func InstanceClient(roots *x509.CertPool, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: TLSOnly(InstanceTransport(roots))}
}
