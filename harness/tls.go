package harness

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/certs"
)

// Where a run's certificates are copied in the router's and agents'
// containers.
const (
	caCertPath     = "/etc/upc/ca.crt"
	caKeyPath      = "/etc/upc/ca.key"
	routerCertPath = "/etc/upc/router.crt"
	routerKeyPath  = "/etc/upc/router.key"
	agentCertPath  = "/etc/upc/agent.crt"
	agentKeyPath   = "/etc/upc/agent.key"
)

// tlsOn is what a report says of TLS in a run.
const tlsOn = "on every hop: the router's port, router→agent mutual TLS, every instance with a certificate of its own from the run's CA; clients refuse plain HTTP"

// runPKI is a run's own CA and the certificates of its router and agents,
// as an operator makes them with `upc certs`.
type runPKI struct {
	ca    *certs.CA
	roots *x509.CertPool
	files map[string][]byte
	// probe is what health waits present: the CA's roots and the router's
	// client certificate (agents answer no one else).
	probe *tls.Config
}

// newRunPKI makes the CA, a router certificate for routerHosts and one
// agent certificate for every name in agentHosts.
func newRunPKI(routerHosts, agentHosts []string) (*runPKI, error) {
	ca, err := certs.NewCA("UPC e2e run CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	p := &runPKI{ca: ca, files: map[string][]byte{caCertPath: ca.CertPEM, caKeyPath: key}}
	if p.roots, err = certs.Pool(ca.CertPEM); err != nil {
		return nil, err
	}
	rc, rk, err := ca.Issue(certs.Request{Name: "router", Hosts: routerHosts, Server: true})
	if err != nil {
		return nil, err
	}
	p.files[routerCertPath], p.files[routerKeyPath] = rc, rk
	if len(agentHosts) > 0 {
		ac, ak, err := ca.Issue(certs.Request{Name: agentHosts[0], Hosts: agentHosts[1:], Server: true})
		if err != nil {
			return nil, err
		}
		p.files[agentCertPath], p.files[agentKeyPath] = ac, ak
	}
	client, err := ca.RouterClient(time.Hour)
	if err != nil {
		return nil, err
	}
	p.probe = certs.ClientConfig(p.roots, &client)
	return p, nil
}

// configure turns TLS on in c for every hop, with the run's files.
func (p *runPKI) configure(c *conf.Config, agents bool) {
	c.ServiceRouterUseTLS = true
	c.CertificateBundlePath = caCertPath
	c.Router.TLSCertPath, c.Router.TLSKeyPath = routerCertPath, routerKeyPath
	c.Router.CACertPath, c.Router.CAKeyPath = caCertPath, caKeyPath
	if agents {
		c.MachinesUseTLS = true
		c.Agent.TLSCertPath, c.Agent.TLSKeyPath = agentCertPath, agentKeyPath
	}
}

// routerHTTP calls the router, verified by its address.
func (p *runPKI) routerHTTP(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: certs.Transport(p.roots, nil)}
}

// instanceHTTP calls instances: TLS only, each verified as an instance.
func (p *runPKI) instanceHTTP(timeout time.Duration) *http.Client {
	return certs.InstanceClient(p.roots, timeout)
}
