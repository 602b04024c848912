// Package certs is UPC's certificate authority: the operator's own CA
// (`upc certs init`), the server and client certificates it issues (`upc
// certs issue`, and the router for each instance it launches), and the TLS
// configurations every hop uses. Who holds which certificate is written
// down in docs/security.md.
//
// Names: an instance's certificate carries the DNS name <id>.instances.upc
// (InstanceName), a certificate a router presents to its agents carries
// router.upc (RouterName), an operator's scraper's client certificate
// monitor.upc (MonitorName). Clients of instances check that the peer's
// certificate chains to the CA and names an instance; agents accept only a
// client certificate naming the router (or, for /metrics alone, a monitor).
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	// InstanceDomain holds instances' certificate names.
	InstanceDomain = "instances.upc"
	// RouterName is the name on the client certificate a router presents to
	// its machine agents.
	RouterName = "router.upc"
	// MonitorName is the name on the client certificate an operator's
	// scraper (Prometheus) presents to instances and agents: it reads their
	// /metrics and nothing else (`upc certs issue monitor.upc --client
	// --server=false`).
	MonitorName = "monitor.upc"

	// DefaultCATTL is how long `upc certs init` makes a CA for.
	DefaultCATTL = 10 * 365 * 24 * time.Hour
	// DefaultTTL is how long `upc certs issue` makes a certificate for.
	DefaultTTL = 365 * 24 * time.Hour
	// DefaultInstanceTTL is how long an instance's certificate lasts: a
	// week, renewed whenever the router resumes the instance.
	DefaultInstanceTTL = 7 * 24 * time.Hour

	// Files written by Init and Issue, in the CA's folder.
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Environment an instance reads its certificate from, set by the router.
const (
	EnvCert = "UPC_TLS_CERT" // PEM certificate for the instance's name
	EnvKey  = "UPC_TLS_KEY"  // PEM private key
	EnvCA   = "UPC_TLS_CA"   // PEM bundle the instance trusts (other instances, the router)
	// EnvPlain = "1" lets an instance serve plain HTTP without being
	// legacy: for tests of a single service binary only, logged loudly.
	EnvPlain = "UPC_PLAIN_HTTP"
)

// backdate covers clocks a little behind the issuer's.
const backdate = 5 * time.Minute

// CA is a certificate authority: its certificate and signing key.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
}

// NewCA makes a self-signed CA named name, valid for ttl.
func NewCA(name string, ttl time.Duration) (*CA, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("certs: CA lifetime %s must be positive", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"UPC"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("certs: make CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), key: key}, nil
}

// ParseCA reads a CA from its PEM certificate and key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: CA certificate and key: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("certs: %q is not a CA certificate", cert.Subject.CommonName)
	}
	if time.Now().After(cert.NotAfter) {
		return nil, fmt.Errorf("certs: CA %q expired on %s", cert.Subject.CommonName, cert.NotAfter.Format(time.DateOnly))
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("certs: CA key cannot sign")
	}
	return &CA{Cert: cert, CertPEM: pemBlock("CERTIFICATE", pair.Certificate[0]), key: signer}, nil
}

// LoadCA reads a CA from its certificate and key files.
func LoadCA(certPath, keyPath string) (*CA, error) {
	c, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("certs: CA certificate: %w", err)
	}
	k, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	ca, err := ParseCA(c, k)
	if err != nil {
		return nil, fmt.Errorf("%w (%s, %s)", err, certPath, keyPath)
	}
	return ca, nil
}

// KeyPEM is the CA's private key, PEM.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, err
	}
	return pemBlock("PRIVATE KEY", der), nil
}

// Save writes ca.crt (0644) and ca.key (0600) into dir, refusing to
// overwrite either: replacing a CA orphans every certificate it issued.
func (ca *CA) Save(dir string) error {
	key, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	return WriteNew(dir, map[string]File{CACertFile: {ca.CertPEM, 0o644}, CAKeyFile: {key, 0o600}})
}

// Request is a certificate to issue.
type Request struct {
	// Name is the certificate's common name, and a DNS name on it.
	Name string
	// Hosts are further DNS names or IP addresses it is valid for.
	Hosts []string
	// Server and Client are the uses it is for (at least one).
	Server, Client bool
	// TTL is how long it lasts; 0 is DefaultTTL.
	TTL time.Duration
}

// Issue signs a new key pair for req and returns its certificate (followed
// by the CA's, so a server presents the chain) and key, PEM.
func (ca *CA) Issue(req Request) (certPEM, keyPEM []byte, err error) {
	if req.Name == "" {
		return nil, nil, errors.New("certs: a certificate needs a name")
	}
	if !req.Server && !req.Client {
		return nil, nil, errors.New("certs: a certificate must be for a server, a client or both")
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < 0 {
		return nil, nil, fmt.Errorf("certs: lifetime %s is negative", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: req.Name, Organization: []string{"UPC"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	if req.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if req.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, h := range append([]string{req.Name}, req.Hosts...) {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(h); {
		case h == "":
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case !slices.Contains(tmpl.DNSNames, h):
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: issue %s: %w", req.Name, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return append(pemBlock("CERTIFICATE", der), ca.CertPEM...), pemBlock("PRIVATE KEY", kder), nil
}

// InstanceName is the DNS name on instance id's certificate.
func InstanceName(id string) string { return id + "." + InstanceDomain }

// IssueInstance issues instance id's server certificate, valid for ttl (0:
// DefaultInstanceTTL).
func (ca *CA) IssueInstance(id string, ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	return ca.Issue(Request{Name: InstanceName(id), Server: true, TTL: cmpOr(ttl, DefaultInstanceTTL)})
}

// RouterClient issues the client certificate a router presents to its
// agents, valid for ttl.
func (ca *CA) RouterClient(ttl time.Duration) (tls.Certificate, error) {
	c, k, err := ca.Issue(Request{Name: RouterName, Client: true, TTL: ttl})
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(c, k)
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// File is one file WriteNew writes.
type File struct {
	Data []byte
	Mode os.FileMode
}

// WriteNew writes files into dir (made 0700 if missing), all or none: it
// refuses if any exists, and removes what it wrote if a write fails.
func WriteNew(dir string, files map[string]File) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	for name := range files {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("certs: %s already exists: refusing to replace it (remove it first if you mean to)", filepath.Join(dir, name))
		}
	}
	var written []string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		p := filepath.Join(dir, name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, files[name].Mode)
		if err == nil {
			_, err = f.Write(files[name].Data)
			err = errors.Join(err, f.Close())
		}
		if err != nil {
			for _, w := range append(written, p) {
				os.Remove(w)
			}
			return fmt.Errorf("certs: write %s: %w", p, err)
		}
		written = append(written, p)
	}
	return nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("certs: no randomness: " + err.Error())
	}
	return n
}
