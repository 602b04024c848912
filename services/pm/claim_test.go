package pm_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/services/pm"
	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/store"
)

// claimed asks p's /healthz, with no credential, whether it was claimed.
func claimed(t *testing.T, p *testPM) bool {
	t.Helper()
	resp, err := http.Get(p.srv.URL + api.PathHealthz)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h access.Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != 200 || h.Claimed == nil {
		t.Fatalf("healthz: %d %+v %v", resp.StatusCode, h, err)
	}
	return *h.Claimed
}

// A PM reports it unclaimed until its owner uses the secret: not a wrong
// credential, no credential (grants exist only once the owner has come).
// The mark outlives a restart of the same
// instance (same secret) and not a relaunch on the volume (a new secret).
func TestClaimMark(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	mark := filepath.Join(dir, pm.ClaimFile)
	owner := access.NewToken(access.PrefixInstance)
	opts := pm.Options{Access: access.Instance{SHA256: access.Hash(owner)}, ClaimFile: mark}
	o := store.Options{KDF: testKDF, InitialBudget: 1}
	p := startPMAccess(t, dir, o, opts, owner)
	if claimed(t, p) {
		t.Fatal("a new PM reports it was claimed")
	}
	if _, err := p.client(access.NewToken(access.PrefixInstance)).Status(ctx); err == nil {
		t.Fatal("a wrong secret was answered")
	}
	if _, err := p.client("").Status(ctx); err == nil {
		t.Fatal("no credential was answered")
	}
	if claimed(t, p) {
		t.Fatal("refused requests claimed the PM")
	}
	if _, err := os.Stat(mark); !os.IsNotExist(err) {
		t.Fatalf("mark written before any claim: %v", err)
	}
	if err := p.c.Unseal(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if !claimed(t, p) {
		t.Fatal("the owner's unseal did not claim the PM")
	}
	p.stop()

	// The same instance restarted (its container killed and started again).
	p = startPMAccess(t, dir, o, opts, owner)
	if !claimed(t, p) {
		t.Fatal("the claim did not outlive a restart")
	}
	p.stop()

	// A relaunch on the same volume has a new secret: unclaimed.
	owner2 := access.NewToken(access.PrefixInstance)
	opts.Access.SHA256 = access.Hash(owner2)
	p = startPMAccess(t, dir, o, opts, owner2)
	if claimed(t, p) {
		t.Fatal("a relaunch with a new secret reports the old claim")
	}
	if _, err := p.c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	if !claimed(t, p) {
		t.Fatal("the new owner's request did not claim the PM")
	}

	// A legacy PM has no secret to lose: claimed.
	lp := startPMAccess(t, t.TempDir(), o, pm.Options{Access: access.Instance{Legacy: true}}, "")
	if !claimed(t, lp) {
		t.Fatal("a legacy PM reports it unclaimed")
	}
}
