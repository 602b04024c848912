// Package testpm helps the services' tests: a real PM in process, claimed by
// its owner (an instance secret, as the router launches one), unsealed, with
// a grant for the service under test; and a service's own test secret.
package testpm

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/services/pm"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// ServiceSecret is the instance secret of the services under test; callers
// bear it (Authorization: Bearer). Tests only.
const ServiceSecret = "upcs_test-service-secret-not-for-production-use-0000"

// Shared is the access of a shared service whose callers bear ServiceSecret:
// each request names its PM and carries a grant.
func Shared() access.Instance { return access.Instance{SHA256: access.Hash(ServiceSecret)} }

// Bound is the access of a per-user service bound to the PM at addr with
// grant, whose callers bear ServiceSecret.
func Bound(addr, grant string) access.Instance {
	return access.Instance{SHA256: access.Hash(ServiceSecret), PMAddress: addr, PMGrant: grant}
}

// PM is a PM started by Start.
type PM struct {
	URL   string
	Owner string           // the owner's instance secret
	C     *pmclient.Client // bears Owner
	Grant string           // a grant for the service Start named: every stream, ε 1e12, 1h
}

var started sync.Map // *pmclient.Client → *PM

// Start runs a real PM (encrypted store in a temporary directory, its HTTP
// server on loopback) claimed and unsealed by its owner, with o's budget
// and policy, and issues a grant for service.
func Start(t testing.TB, o store.Options, service string) *PM {
	t.Helper()
	o.KDF, o.NoSync = store.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}, true
	st, err := store.Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	owner := access.NewToken(access.PrefixInstance)
	srv := httptest.NewServer(pm.New(st, slog.New(slog.NewTextHandler(io.Discard, nil)), pm.Options{Access: access.Instance{SHA256: access.Hash(owner)}}).Handler())
	t.Cleanup(srv.Close)
	p := &PM{URL: srv.URL, Owner: owner, C: pmclient.New(srv.URL, nil, pmclient.WithToken(owner))}
	ctx := context.Background()
	if err := p.C.Unseal(ctx, "a user's secret"); err != nil {
		t.Fatal(err)
	}
	p.Grant = p.Issue(t, api.GrantRequest{Service: service, Read: []string{api.Wildcard}, Write: []string{api.Wildcard}, Spend: 1e12})
	started.Store(p.C, p)
	return p
}

// Issue issues a grant and returns its token.
func (p *PM) Issue(t testing.TB, req api.GrantRequest) string {
	t.Helper()
	g, err := p.C.IssueGrant(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return g.Token
}

// Of is the PM Start returned with owner's client c.
func Of(t testing.TB, c *pmclient.Client) *PM {
	t.Helper()
	p, ok := started.Load(c)
	if !ok {
		t.Fatal("testpm: this client is not of a PM Start started")
	}
	return p.(*PM)
}

// GrantOf is the grant Start issued at the PM whose owner's client is c.
func GrantOf(t testing.TB, c *pmclient.Client) string { t.Helper(); return Of(t, c).Grant }

// OwnerOf is the owner's secret of the PM whose owner's client is c.
func OwnerOf(t testing.TB, c *pmclient.Client) string { t.Helper(); return Of(t, c).Owner }

// Post sends body to url bearing token ("" for none) and returns the
// answer.
func Post(t testing.TB, url, token, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// BearerClient is an HTTP client that bears token on every request (for
// code that takes an *http.Client, such as the user's client library).
func BearerClient(token string) *http.Client {
	return &http.Client{Transport: bearer{token: token, next: http.DefaultTransport}}
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
