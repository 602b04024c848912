// Package clienttest stands up, for a test, a real service router in process
// over the local Docker engine with the real service images (built through
// imagestest), on a network of its own that is removed with everything the
// test's instances made.
package clienttest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/images"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routerclient"
)

// Router is a running test router.
type Router struct {
	// URL is the router's base URL.
	URL string
	// Images are the images the catalog is pinned to.
	Images *images.Manifest
	// AdminToken is the router admin's token.
	AdminToken string
	// CA issued the router's certificate and every instance's.
	CA *certstest.CA
	// CAFile is CA's certificate on disk (for `upc client --ca`).
	CAFile string
}

// HTTP reaches the router's instances: TLS only, verified against CA.
func (r Router) HTTP() *http.Client { return r.CA.Client(10 * time.Minute) }

// RouterHTTP reaches the router, verified against CA by its address.
func (r Router) RouterHTTP() *http.Client {
	return &http.Client{Timeout: 10 * time.Minute, Transport: certs.Transport(r.CA.Pool(), nil)}
}

// Options tune StartRouterWith.
type Options struct {
	// InsecureLegacy lets token-less callers use the original endpoints
	// (the original scripts' mode).
	InsecureLegacy bool
}

// StartRouter builds the images of services (failing the test when one has
// no cmd/upc-<name>), pins the built-in catalog to them and serves a router
// driving the local engine, with access control on and a fresh admin
// token. Everything is removed when the test ends.
func StartRouter(t testing.TB, services ...string) Router {
	t.Helper()
	return StartRouterWith(t, Options{}, services...)
}

// Admin is a client of the router signed in as its admin.
func (r Router) Admin(t testing.TB) *routerclient.Client {
	t.Helper()
	return r.Client(t, r.AdminToken)
}

// Client is a client of the router bearing token.
func (r Router) Client(t testing.TB, token string) *routerclient.Client {
	t.Helper()
	rc, err := routerclient.New(r.URL, routerclient.WithToken(token), routerclient.WithHTTPClient(r.RouterHTTP()))
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// AddUser creates a router identity (api.RoleUser, RoleResearcher or
// RoleAdmin) and returns its token.
func (r Router) AddUser(t testing.TB, name, role string) string {
	t.Helper()
	u, err := r.Admin(t).AddUser(context.Background(), name, role)
	if err != nil {
		t.Fatalf("add router user %s: %v", name, err)
	}
	return u.Token
}

// StartRouterWith is StartRouter with options.
func StartRouterWith(t testing.TB, o Options, services ...string) Router {
	t.Helper()
	m := imagestest.Require(t, services...)
	cat, err := conf.DefaultCatalog()
	if err != nil {
		t.Fatal(err)
	}
	m.Pin(cat)
	cli, err := agent.NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	name, network := "uc"+randHex(4), "upc-test-"+randHex(4)
	t.Cleanup(func() {
		cleanup(t, cli, name, network)
		cli.Close()
	})
	logger := slog.New(slog.DiscardHandler)
	eng, err := agent.NewEngine(cli, agent.Options{
		Network: network, Name: name,
		NetworkLabels: map[string]string{"upc.test": "1"},
		Labels:        map[string]string{"upc.test": "1"},
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	be, err := docker.New([]docker.Machine{{Name: conf.LocalMachine, Weight: 1, Driver: eng}},
		docker.Options{Labels: map[string]string{"upc.test": "1"}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	admin := access.NewToken(access.PrefixUser)
	users, err := router.OpenUsers("", admin)
	if err != nil {
		t.Fatal(err)
	}
	// TLS on every hop: the router's own port and every instance.
	ca := certstest.New(t)
	core, err := router.New(router.Options{Backend: be, Catalog: cat, Logger: logger, HealthTimeout: time.Minute,
		Users: users, InsecureLegacy: o.InsecureLegacy, CA: ca.CA})
	if err != nil {
		t.Fatal(err)
	}
	return ServeRouter(t, core, ca, admin, m)
}

// ServeRouter serves core over TLS on loopback with a certificate of ca, as
// StartRouter does; admin is the token of core's admin, m the images its
// catalog pins. Any backend's router can be driven as StartRouter's is.
func ServeRouter(t testing.TB, core *router.Router, ca *certstest.CA, admin string, m *images.Manifest) Router {
	t.Helper()
	srv := httptest.NewUnstartedServer(router.Handler(core, slog.New(slog.DiscardHandler)))
	certPEM, keyPEM, err := ca.CA.Issue(certs.Request{Name: "router", Hosts: []string{"127.0.0.1", "localhost"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// Certificates, not GetCertificate: httptest fills an empty list with
	// its own certificate, which would win for a client without SNI.
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile, _ := ca.Save(t)
	return Router{URL: srv.URL, Images: m, AdminToken: admin, CA: ca, CAFile: caFile}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// cleanup removes what the test's agent made (containers, volumes) and its network.
func cleanup(t testing.TB, cli *client.Client, name, network string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := make(client.Filters).Add("label", agent.LabelAgent+"="+name)
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, c := range cs.Items {
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			t.Errorf("cleanup container %s: %v", c.ID, err)
		}
	}
	vs, _ := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
	for _, v := range vs.Items {
		if _, err := cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true}); err != nil {
			t.Errorf("cleanup volume %s: %v", v.Name, err)
		}
	}
	ns, _ := cli.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("name", network)})
	for _, n := range ns.Items {
		if n.Name == network {
			if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil {
				t.Errorf("cleanup network %s: %v", n.Name, err)
			}
		}
	}
}
