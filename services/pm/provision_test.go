package pm_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/services/pm"
	"github.com/e-mission/upc/services/pm/pmclient"
	"github.com/e-mission/upc/services/pm/store"
)

// tlsPM serves a PM with opts over TLS as certs.ServerConfig does (client
// certificates of ca verified when given).
func tlsPM(t *testing.T, ca *certstest.CA, opts pm.Options) string {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{KDF: testKDF, InitialBudget: 1})
	if err != nil {
		t.Fatal(err)
	}
	opts.ClaimFile = filepath.Join(dir, pm.ClaimFile)
	t.Cleanup(func() { st.Close() }) // after the server's close, registered next
	return ca.InstanceServer(t, pm.New(st, slog.New(slog.DiscardHandler), opts).Handler()).URL
}

func provision(t *testing.T, c *http.Client, url, bearer, body string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+access.ProvisionPath, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestPooledProvision: a warm-pool PM answers nothing before its
// provision; only the router's client certificate provisions it, once;
// then its owner is the bearer of the provisioned secret, and no one else.
func TestPooledProvision(t *testing.T) {
	ctx := context.Background()
	ca := certstest.New(t)
	url := tlsPM(t, ca, pm.Options{Access: access.Instance{Pooled: true}})
	owner := access.NewToken(access.PrefixInstance)
	body := `{"user": "alice", "access_sha256": "` + access.Hash(owner) + `"}`
	anon := ca.Client(10 * time.Second)

	if err := pmclient.New(url, anon).Healthz(ctx); err != nil {
		t.Fatalf("healthz of a pooled PM: %v", err)
	}
	for _, tok := range []string{"", owner, "upcs_guess"} {
		if _, err := pmclient.New(url, anon, pmclient.WithToken(tok)).Status(ctx); code(err) != 503 {
			t.Errorf("status of an unprovisioned PM bearing %q: %v, want 503", tok, err)
		}
	}
	for name, c := range map[string]*http.Client{
		"no certificate": anon,
		"a monitor's":    ca.ClientAs(t, certs.MonitorName, 10*time.Second),
		"another name":   ca.ClientAs(t, "alice", 10*time.Second),
	} {
		for _, bearer := range []string{"", owner} {
			if got := provision(t, c, url, bearer, body); got != http.StatusForbidden {
				t.Errorf("provision with %s (bearer %q): %d, want 403", name, bearer, got)
			}
		}
	}
	router := ca.ClientAs(t, certs.RouterName, 10*time.Second)
	for _, bad := range []string{`{"user": "alice"}`, `{"user": "../x", "access_sha256": "` + access.Hash(owner) + `"}`,
		`{"user": "alice", "access_sha256": "` + access.Hash(owner) + `", "extra": 1}`, `not json`} {
		if got := provision(t, router, url, "", bad); got != http.StatusBadRequest {
			t.Errorf("provision %s: %d, want 400", bad, got)
		}
	}
	if _, err := pmclient.New(url, anon, pmclient.WithToken(owner)).Status(ctx); code(err) != 503 {
		t.Fatalf("after refused provisions: %v, want 503", err)
	}

	// Two provisions at once: exactly one wins.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	other := `{"user": "mallory", "access_sha256": "` + access.Hash("upcs_mallory") + `"}`
	for i, b := range []string{body, other} {
		wg.Go(func() { codes[i] = provision(t, router, url, "", b) })
	}
	wg.Wait()
	if !(codes[0] == 204 && codes[1] == 409 || codes[0] == 409 && codes[1] == 204) {
		t.Fatalf("two provisions at once: %v, want one 204 and one 409", codes)
	}
	won, lost := owner, "upcs_mallory"
	if codes[1] == 204 {
		won, lost = lost, won
	}
	if got := provision(t, router, url, "", body); got != http.StatusConflict {
		t.Errorf("a third provision: %d, want 409", got)
	}
	if _, err := pmclient.New(url, anon, pmclient.WithToken(won)).Status(ctx); err != nil {
		t.Errorf("the provisioned owner's status: %v", err)
	}
	if _, err := pmclient.New(url, anon, pmclient.WithToken(lost)).Status(ctx); code(err) != 403 {
		t.Errorf("the loser's secret: %v, want 403", err)
	}
}

// TestProvisionNotPooled: a PM started with its owner is never provisioned.
func TestProvisionNotPooled(t *testing.T) {
	ca := certstest.New(t)
	owner := access.NewToken(access.PrefixInstance)
	url := tlsPM(t, ca, pm.Options{Access: access.Instance{SHA256: access.Hash(owner)}})
	body := `{"user": "mallory", "access_sha256": "` + access.Hash("upcs_mallory") + `"}`
	if got := provision(t, ca.ClientAs(t, certs.RouterName, 10*time.Second), url, "", body); got != http.StatusConflict {
		t.Errorf("provision of a PM with an owner: %d, want 409", got)
	}
	if got := provision(t, ca.Client(10*time.Second), url, owner, body); got != http.StatusForbidden {
		t.Errorf("the owner provisions: %d, want 403", got)
	}
	if _, err := pmclient.New(url, ca.Client(10*time.Second), pmclient.WithToken(owner)).Status(context.Background()); err != nil {
		t.Errorf("the owner after the refused provisions: %v", err)
	}
}
